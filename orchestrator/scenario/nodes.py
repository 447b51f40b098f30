"""Reading YAML nodes with their line numbers: the scalars, mappings and errors a scenario is made of.

`NodeReader` turns composed YAML nodes into checked values and every refusal into a `ScenarioError`
that names the file, the line and the field. It reads only the text it is given (and whether a WAV
path names a file); `parse.py` says what a scenario holds.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from orchestrator.scenario.schema import ScenarioError


class NodeReader:
    """Checked values out of one file's YAML nodes; `display` is the file's name as errors print it."""

    def __init__(self, text: str, path: Path, display: str) -> None:
        self.text, self.path, self.file = text, path, display
        self.loader = yaml.SafeLoader(text)

    def fail(self, node: yaml.Node | int, message: str) -> ScenarioError:
        line = node if isinstance(node, int) else node.start_mark.line + 1
        return ScenarioError(f"{self.file} line {line}: {message}")

    def value(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return _Kind("a mapping")
        if isinstance(node, yaml.SequenceNode):
            return _Kind("a list")
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:  # a tag SafeLoader refuses (!!python/...), a bad !!int
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.fail(node, f"cannot read this value: {problem}") from None

    def number(
        self,
        node: yaml.Node,
        field: str,
        what: str,
        lo: float | None = None,
        *,
        low_open: bool = False,
        hi: float | None = None,
        hi_open: bool = False,
    ) -> float:
        v = self.value(node)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and v == v  # NaN is no number
        if ok and lo is not None:
            ok = v > lo if low_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            raise self.fail(node, f"{field} must be {what}, got {shown(v)}")
        return float(v)

    def string(self, node: yaml.Node, field: str, *, empty: bool = False) -> str:
        v = self.value(node)
        if not isinstance(v, str) or (not empty and not v.strip()) or not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{field} must be {'a' if empty else 'a non-empty'} string, got {shown(v)}")
        return v

    def boolean(self, node: yaml.Node, field: str) -> bool:
        v = self.value(node)
        if not isinstance(v, bool):
            raise self.fail(node, f"{field} must be true or false, got {shown(v)}")
        return v

    def mapping(self, node: yaml.Node, field: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(
                node, f"{field} must be a mapping (key: value lines), got {shown(self.value(node))}"
            )
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{field or 'the file'} has a key {shown(key)} that is not a name")
            if key in out:
                raise self.fail(key_node, f"{where} is given twice")
            if allowed and key not in allowed:
                raise self.fail(key_node, f"{where} is not a known key{did_you_mean(key, allowed)}")
            out[key] = value_node
        return out

    def seconds(self, node: yaml.Node, field: str, *, positive: bool = False) -> float:
        what = "a number of seconds > 0" if positive else "a number of seconds >= 0"
        return self.number(node, field, what, 0.0, low_open=positive)

    def wav(self, node: yaml.Node, field: str) -> Path:
        p = Path(self.string(node, field)).expanduser()
        p = p if p.is_absolute() else self.path.parent / p
        if not p.is_file():
            raise self.fail(
                node, f"{field}: no file {p} (a relative path is read from the scenario's folder)"
            )
        return p


class _Kind(str):
    """What a mapping or a list reads as in an error ('got a list')."""

    def __repr__(self) -> str:
        return str(self)


def shown(v: object) -> str:
    return "nothing" if v is None else repr(v)


def did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    near = difflib.get_close_matches(name, choices, n=2, cutoff=0.5)
    return f" (did you mean {' or '.join(near)}?)" if near else f" (known: {', '.join(choices)})"
