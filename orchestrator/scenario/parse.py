"""Reading a scenario file (YAML) into a `Scenario`, with errors that name the file, the line and the field.

The file is composed into YAML nodes (which carry their line) and walked by hand, so every refusal
says where: `scenarios/x.yaml line 12: steps[3].barge_in.after_s must be a number of seconds >= 0, got
'soon'`. Unknown keys are refused with the closest known ones; anchors and aliases are refused (a
scenario has no use for them, and they are how a small file expands into a huge one). The steps are
read by `parse_steps.py`, the expectations by `parse_expect.py`, the scalars by `nodes.py`. This reads
the file it is given and whether WAV paths exist, nothing else; it never runs a call.

    name: greeting-and-two-turns
    description: The model greets; the caller says two things and waits for each reply.
    backend: {name: echo, echo_mode: turns}
    line: {loss_rate: 0.02, jitter_ms: 10, echo: {delay_ms: 120, loss_db: 20}, seed: 7}
    call: {greeting: "Connecting you.", caller_start_s: 4}
    steps: [...]                  # see parse_steps.py
    expect: {...}                 # see parse_expect.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.scenario.nodes import shown
from orchestrator.scenario.parse_expect import ExpectReader
from orchestrator.scenario.schema import Backend, CallSpec, Echo, Line, Scenario, ScenarioError
from orchestrator.settings import BACKENDS

MAX_BYTES = 1_000_000
MAX_DEPTH = 20  # a scenario needs 4 (steps, a step, its fields, a list in them)
BACKEND_KEYS = (
    "name",
    "aec",
    "echo_mode",
    "echo_delay_ms",
    "echo_greeting",
    "echo_yield_ms",
    "playback_wav",
    "moshi_hf_repo",
    "moshi_quantize",
    "moshi_server_urls",
    "max_lead_ms",
    "jitter_buffer_ms",
)


def load_scenario(path: Path | str) -> Scenario:
    """The scenario in the file at `path` (errors name it as given)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(f"{path}: {len(raw)} bytes is too large for a scenario (at most {MAX_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file (a scenario is YAML in UTF-8)") from None
    return parse_scenario(text, p, display=str(path))


def parse_scenario(text: str, path: Path, display: str | None = None) -> Scenario:
    """The scenario `text` holds; `path` places relative WAV paths, `display` names it in errors."""
    return _Reader(text, path, display or str(path)).scenario()


class _Reader(ExpectReader):
    def scenario(self) -> Scenario:
        try:
            depth = 0
            for event in yaml.parse(self.text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    raise self.fail(
                        event.start_mark.line + 1, "anchors and aliases (*name) are not supported"
                    )
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:  # the composer recurses per level: refuse before it does
                        raise self.fail(event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
            root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise self.fail(line, f"not valid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{self.file}: not valid YAML: {exc}") from None
        if root is None:
            raise ScenarioError(f"{self.file}: the file is empty (a scenario needs at least name and steps)")
        top = self.mapping(root, "", ("name", "description", "steps", "line", "backend", "call", "expect"))
        for required in ("name", "steps"):
            if required not in top:
                raise self.fail(root, f"{required} is missing (a scenario needs at least name and steps)")
        backend = self.backend(top["backend"]) if "backend" in top else Backend()
        return Scenario(
            name=self.string(top["name"], "name"),
            path=self.path,
            description=self.string(top["description"], "description", empty=True)
            if "description" in top
            else "",
            steps=self.steps(top["steps"]),
            line=self.line(top["line"]) if "line" in top else Line(),
            backend=backend,
            call=self.call(top["call"]) if "call" in top else CallSpec(),
            expect=self.expect(top["expect"]) if "expect" in top else (),
        )

    def line(self, node: yaml.Node) -> Line:
        f = self.mapping(
            node, "line", ("loss_rate", "lost_frames", "jitter_ms", "echo", "noise_dbfs", "seed")
        )
        kw: dict[str, Any] = {}
        if "loss_rate" in f:
            kw["loss_rate"] = self.number(
                f["loss_rate"], "line.loss_rate", "a fraction from 0 to under 1", 0.0, hi=1.0, hi_open=True
            )
        if "jitter_ms" in f:
            kw["jitter_ms"] = self.number(f["jitter_ms"], "line.jitter_ms", "a number of ms >= 0", 0.0)
        if "noise_dbfs" in f:
            kw["noise_dbfs"] = self.number(f["noise_dbfs"], "line.noise_dbfs", "a level in dBFS <= 0", hi=0.0)
        if "seed" in f:
            seed = self.value(f["seed"])
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise self.fail(f["seed"], f"line.seed must be a whole number, got {shown(seed)}")
            kw["seed"] = seed
        if "lost_frames" in f:
            kw["lost_frames"] = self.frames(f["lost_frames"])
        if "echo" in f and not (
            isinstance(f["echo"], yaml.ScalarNode) and self.value(f["echo"]) in (None, False)
        ):
            kw["echo"] = self.echo(f["echo"])
        return Line(**kw)

    def frames(self, node: yaml.Node) -> tuple[int, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(
                node,
                f"line.lost_frames must be a list of frame numbers (from 1), got {shown(self.value(node))}",
            )
        out = []
        for i, item in enumerate(node.value):
            v = self.value(item)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise self.fail(item, f"line.lost_frames[{i}] must be a frame number >= 1, got {shown(v)}")
            out.append(v)
        return tuple(out)

    def echo(self, node: yaml.Node) -> Echo:
        f = self.mapping(node, "line.echo", ("delay_ms", "loss_db", "room", "rt60_s", "distance_m"))
        kw: dict[str, Any] = {}
        for key, what, positive in (
            ("delay_ms", "a number of ms >= 0", False),
            ("loss_db", "a loss in dB >= 0", False),
            ("rt60_s", "a number of seconds > 0", True),
            ("distance_m", "a distance in m > 0", True),
        ):
            if key in f:
                kw[key] = self.number(f[key], f"line.echo.{key}", what, 0.0, low_open=positive)
        if "room" in f:
            kw["room"] = self.boolean(f["room"], "line.echo.room")
        return Echo(**kw)

    def backend(self, node: yaml.Node) -> Backend:
        if isinstance(node, yaml.ScalarNode):
            node_fields = {"name": node}
        else:
            node_fields = self.mapping(node, "backend", BACKEND_KEYS)
        name = self.string(node_fields["name"], "backend.name") if "name" in node_fields else "echo"
        if name not in BACKENDS:
            raise self.fail(
                node_fields["name"], f"backend.name must be one of {', '.join(BACKENDS)}, got {shown(name)}"
            )
        settings: list[tuple[str, object]] = []
        wav = None
        for key, value in node_fields.items():
            at = f"backend.{key}"
            if key == "name":
                continue
            if key == "playback_wav":
                wav = str(self.wav(value, at))
            elif key == "aec":
                v = self.value(value)  # YAML 1.1 reads off/on as false/true
                v = {False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v
                if v not in ("off", "on"):
                    raise self.fail(value, f"{at} must be off or on, got {shown(v)}")
                settings.append((key, v))
            elif key == "echo_mode":
                v = self.value(value)
                if v not in ("turns", "delay"):
                    raise self.fail(value, f"{at} must be turns or delay, got {shown(v)}")
                settings.append((key, v))
            elif key == "moshi_quantize":
                v = str(self.value(value)).lower()
                if v not in ("4", "8", "none"):
                    raise self.fail(value, f"{at} must be 4, 8 or none, got {shown(self.value(value))}")
                settings.append((key, v))
            elif key in ("echo_delay_ms", "echo_yield_ms", "max_lead_ms", "jitter_buffer_ms"):
                settings.append((key, self.number(value, at, "a number of ms >= 0", 0.0)))
            else:
                settings.append((key, self.string(value, at, empty=key == "echo_greeting")))
        return Backend(name=name, settings=tuple(settings), playback_wav=wav)

    def call(self, node: yaml.Node) -> CallSpec:
        f = self.mapping(node, "call", ("greeting", "caller_start_s", "max_seconds", "hangup_when_done"))
        kw: dict[str, Any] = {}
        if "greeting" in f:
            kw["greeting"] = self.string(f["greeting"], "call.greeting", empty=True)
        if "caller_start_s" in f:
            kw["caller_start_s"] = self.seconds(f["caller_start_s"], "call.caller_start_s")
        if "max_seconds" in f:
            kw["max_seconds"] = self.number(
                f["max_seconds"], "call.max_seconds", "a number of seconds from 1 to 600", 1.0, hi=600.0
            )
        if "hangup_when_done" in f:
            kw["hangup_when_done"] = self.boolean(f["hangup_when_done"], "call.hangup_when_done")
        return CallSpec(**kw)
