"""Judging one call's document against a scenario's expectations, with the evidence for each.

A metric bound is met when the call recorded the metric and its value satisfies the bound; a metric
the call did not record (no first audio heard, no turn) is not met, and says so. A criterion status is
met when the call's automatic verdict is one of the statuses asked for. Key presses are met when the
server stored exactly those digits, in order. Pure: no I/O.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.scenario.schema import CriterionStatus, DtmfReceived, Expectation, MetricBound

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One expectation on one call: met or not, what was measured (a number, a status, or None when
    there was nothing to measure), and the evidence as a sentence."""

    expectation: Expectation
    met: bool
    measured: float | str | None
    evidence: str

    @property
    def label(self) -> str:
        return self.expectation.label


def judge(expectations: Sequence[Expectation], doc: Mapping[str, Any]) -> list[Outcome]:
    """Every expectation against the settled call document (`CallService.document`)."""
    return [_judge(e, doc) for e in expectations]


def _judge(e: Expectation, doc: Mapping[str, Any]) -> Outcome:
    if isinstance(e, MetricBound):
        value = (doc.get("metrics") or {}).get(e.metric)
        if value is None or not isinstance(value, int | float) or math.isnan(value):
            return Outcome(
                e, False, None, f"{e.metric} was not measured on this call (bound {e.op} {e.value:g})"
            )
        met = _OPS[e.op](float(value), e.value)
        verb = "meets" if met else "misses"
        return Outcome(
            e, met, float(value), f"{e.metric} = {_fmt(value)}, {verb} the bound {e.op} {e.value:g}"
        )
    if isinstance(e, DtmfReceived):
        got = received_digits(doc)
        return Outcome(e, got == e.digits, got, f"the server stored the keys {got!r}, wanted {e.digits!r}")
    return _judge_criterion(e, doc)


def received_digits(doc: Mapping[str, Any]) -> str:
    """The key presses the server stored for this call (its media/dtmf events, in order)."""
    events = [e for e in doc.get("events") or [] if e.get("source") == "media" and e.get("type") == "dtmf"]
    return "".join(str((e.get("payload") or {}).get("digits") or "") for e in events)


def _judge_criterion(e: CriterionStatus, doc: Mapping[str, Any]) -> Outcome:
    auto = [
        c
        for c in doc.get("checks") or []
        if c.get("criterion") == e.criterion and c.get("decided_by") == "auto"
    ]
    if not auto:
        return Outcome(
            e, False, None, f"{e.criterion} was not decided on this call (wanted {'/'.join(e.statuses)})"
        )
    check = auto[-1]
    status = str(check.get("status"))
    met = status in e.statuses
    why = f": {check['evidence']}" if check.get("evidence") else ""
    return Outcome(e, met, status, f"{e.criterion} is {status}, wanted {'/'.join(e.statuses)}{why}")


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"
