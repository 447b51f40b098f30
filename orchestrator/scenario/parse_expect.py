"""The `expect:` of a scenario file: criterion statuses and metric bounds.

    expect:
      caller_hears_model: pass              # a criterion id (orchestrator/criteria.py) and its status
      audio_quality_ok: [pass, unknown]     # or any of several
      dtmf_received: "123#"                 # the key presses the server stored, in order
      metrics:
        - first_audio_heard_ms < 1500       # METRIC OP NUMBER, OP one of < <= > >= == !=
        - echo_detected == 0

A metric the product never records is refused with the closest names it does record.
"""

from __future__ import annotations

import re

import yaml

from orchestrator.criteria import CRITERIA
from orchestrator.scenario.metrics import closest, known_metrics
from orchestrator.scenario.nodes import shown
from orchestrator.scenario.parse_steps import StepReader
from orchestrator.scenario.schema import (
    OPERATORS,
    STATUSES,
    CriterionStatus,
    DtmfReceived,
    Expectation,
    MetricBound,
)

_BOUND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")


class ExpectReader(StepReader):
    def expect(self, node: yaml.Node) -> tuple[Expectation, ...]:
        fields = self.mapping(node, "expect", ("metrics", "dtmf_received", *CRITERIA))
        out: list[Expectation] = []
        for key, value in fields.items():
            if key == "metrics":
                out += self.bounds(value)
            elif key == "dtmf_received":
                out.append(
                    DtmfReceived(self.digits(value, "expect.dtmf_received"), value.start_mark.line + 1)
                )
            else:
                out.append(self.criterion(key, value))
        return tuple(out)

    def criterion(self, name: str, node: yaml.Node) -> CriterionStatus:
        at = f"expect.{name}"
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        statuses = []
        for item in items:
            v = self.value(item)
            if v not in STATUSES:
                raise self.fail(
                    item, f"{at} must be pass, fail or unknown (or a list of them), got {shown(v)}"
                )
            statuses.append(v)
        if not statuses:
            raise self.fail(
                node, f"{at} must be pass, fail or unknown (or a list of them), got an empty list"
            )
        return CriterionStatus(name, tuple(statuses), node.start_mark.line + 1)

    def bounds(self, node: yaml.Node) -> list[MetricBound]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(
                node,
                "expect.metrics must be a list of bounds like `first_audio_heard_ms < 1500`, "
                f"got {shown(self.value(node))}",
            )
        known = known_metrics()
        out = []
        for i, item in enumerate(node.value):
            at = f"expect.metrics[{i}]"
            text = self.value(item)
            m = _BOUND.match(text) if isinstance(text, str) else None
            if m is None:
                raise self.fail(
                    item,
                    f"{at} must read `METRIC OP NUMBER` with OP one of {' '.join(OPERATORS)} "
                    f"(e.g. `first_audio_heard_ms < 1500`), got {shown(text)}",
                )
            name, op, number = m.groups()
            if name not in known:
                near = closest(name)
                hint = (
                    f"did you mean {', '.join(near)}?" if near else "`orchestrator show CALL` lists a call's"
                )
                raise self.fail(item, f"{at}: no metric {name!r} is recorded ({hint})")
            value = _number(number)
            if value is None:
                raise self.fail(item, f"{at}: the bound must be a number, got {number!r}")
            out.append(MetricBound(name, op, value, text.strip(), item.start_mark.line + 1))
        return out


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if v == v and abs(v) != float("inf") else None
