"""What a campaign found: per-call results, and per scenario the pass rate of each expectation and
criterion and the spread of each metric (p50, p95, and an exact confidence interval for the median).

The interval is distribution-free: for n sorted values, the order statistics x(l) and x(n-l+1) hold
the median with probability P(l <= B <= n-l), B ~ Binomial(n, 1/2); l is the largest rank that keeps
that at 95 % or more. Under 6 calls no pair reaches 95 % and the interval is the whole range, with the
level it does reach. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.criteria import CRITERIA
from orchestrator.scenario.expect import Outcome
from orchestrator.scenario.schema import MetricBound, Scenario

# what every summary shows beside the metrics the expectations bound
KEY_METRICS = (
    "first_audio_heard_ms",
    "response_latency_ms_p50",
    "response_latency_ms_max",
    "turns",
    "barge_in_stop_ms",
    "echo_detected",
    "stream_connect_ms",
    "inbound_jitter_ms",
    "lost_frames",
    "call_duration_s",
)
CI_LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class CallResult:
    """One call of a campaign. `error` says why there is no settled call to judge (None when there is)."""

    scenario: str
    repeat: int  # from 1
    call_id: str | None
    call_sid: str | None
    state: str
    outcomes: tuple[Outcome, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)  # criterion -> automatic status
    truth_path: str | None = None
    error: str | None = None

    @property
    def met(self) -> int:
        return sum(o.met for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.met for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "repeat": self.repeat,
            "call_id": self.call_id,
            "call_sid": self.call_sid,
            "state": self.state,
            "ok": self.ok,
            "error": self.error,
            "expectations": [
                {"expectation": o.label, "met": o.met, "measured": o.measured, "evidence": o.evidence}
                for o in self.outcomes
            ],
            "checks": self.checks,
            "metrics": self.metrics,
            "ground_truth": self.truth_path,
        }


def median_ci(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(low, high, achieved level) of the exact order-statistic interval for the median."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    best = (float(x[0]), float(x[-1]), float(1 - 2 * 0.5**n) if n > 1 else 0.0)
    for rank in range(1, n // 2 + 1):  # ranks from 1; the interval [x(rank), x(n - rank + 1)]
        coverage = float(binom.cdf(n - rank, n, 0.5) - binom.cdf(rank - 1, n, 0.5))
        if coverage < level:
            break
        best = (float(x[rank - 1]), float(x[n - rank]), coverage)
    return best


def metric_stats(values: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(values, dtype=np.float64)
    low, high, achieved = median_ci(values)
    return {
        "n": len(x),
        "p50": float(np.percentile(x, 50)),
        "p95": float(np.percentile(x, 95)),
        "median_ci": [low, high],
        "ci_level": round(achieved, 4),
    }


def summarise(scenario: Scenario, results: Sequence[CallResult]) -> dict[str, Any]:
    """One scenario's summary as a JSON-able document (the `--json` file holds one per scenario)."""
    expectations = []
    for i, e in enumerate(scenario.expect):
        met = sum(1 for r in results if len(r.outcomes) > i and r.outcomes[i].met)
        expectations.append({"expectation": e.label, "line": e.line, "met": met, "calls": len(results)})
    criteria: dict[str, dict[str, int]] = {}
    for name in CRITERIA:
        counts = {s: sum(1 for r in results if r.checks.get(name) == s) for s in ("pass", "fail", "unknown")}
        if any(counts.values()):
            criteria[name] = counts
    wanted = [
        *dict.fromkeys([*(e.metric for e in scenario.expect if isinstance(e, MetricBound)), *KEY_METRICS])
    ]
    metrics = {}
    for name in wanted:
        values = [r.metrics[name] for r in results if r.metrics.get(name) is not None]
        if values:
            metrics[name] = metric_stats(values)
    return {
        "scenario": scenario.name,
        "path": str(scenario.path),
        "description": scenario.description.strip(),
        "calls": len(results),
        "calls_ok": sum(r.ok for r in results),
        "expectations": expectations,
        "criteria": criteria,
        "metrics": metrics,
        "results": [r.to_json() for r in results],
    }
