"""Two recorded runs compared: per metric both distributions, the difference of medians with a bootstrap
confidence interval and a Mann-Whitney U test; per criterion the pass-rate change with Fisher's exact test.

    cmp = compare(sample_of(baseline_run), sample_of(run))   # RunReports from build_report
    cmp.regressions                                          # what `--fail-on-regression` exits 1 on

A metric's verdict (one of VERDICTS):
- "not enough calls": fewer than MIN_CALLS values on a side; never judged;
- "no change": the rank test does not reject at `alpha` (two-sided);
- "changed": significant, for a metric with no better direction (orchestrator.report.directions);
- "better" / "worse": significant, the run's values lie on the good / bad side of the baseline's;
- "regression": "worse" and the difference of medians is past the margin in the bad direction.
A criterion's verdict: "regression" when its pass rate (passes among the calls it could be judged on)
drops significantly (Fisher, two-sided) and by more than `pass_rate_margin`, "better" when it rises
significantly, else "no change"; "not enough calls" under MIN_CALLS judged calls a side.

The bootstrap resamples each side with replacement from a generator seeded by `seed` and the metric's
name, so the same inputs always give the same interval. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from orchestrator.criteria import CRITERIA
from orchestrator.report.directions import (
    DEFAULT_MARGINS,
    DIRECTIONS,
    Direction,
    Margin,
    direction_of,
    parse_margin,
    unit_of,
)
from orchestrator.report.model import RunReport, percentile

MIN_CALLS = 3
BETTER, WORSE, REGRESSION = "better", "worse", "regression"
NO_CHANGE, CHANGED, NOT_ENOUGH = "no change", "changed", "not enough calls"
VERDICTS = (REGRESSION, WORSE, BETTER, CHANGED, NO_CHANGE, NOT_ENOUGH)

__all__ = [
    "VERDICTS",
    "Comparison",
    "CriterionComparison",
    "Distribution",
    "MetricComparison",
    "RunSample",
    "compare",
    "parse_margin",
    "sample_of",
]


@dataclass(frozen=True, slots=True)
class RunSample:
    """One run as the comparison needs it: per metric its per-call values, per criterion its statuses."""

    label: str
    n_calls: int
    metrics: Mapping[str, tuple[float, ...]]
    verdicts: Mapping[str, tuple[str, ...]]  # criterion -> pass | fail | unknown, one per call


@dataclass(frozen=True, slots=True)
class Distribution:
    n: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            return cls(0, None, None)
        return cls(len(values), percentile(values, 50), percentile(values, 95))


@dataclass(frozen=True, slots=True)
class MetricComparison:
    name: str
    unit: str
    direction: Direction
    baseline: Distribution
    run: Distribution
    diff: float | None  # median(run) - median(baseline)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    margin: float | None
    verdict: str


@dataclass(frozen=True, slots=True)
class CriterionComparison:
    criterion: str
    baseline_pass: int
    baseline_judged: int  # calls with pass or fail (an unknown could not be judged)
    run_pass: int
    run_judged: int
    p_value: float | None
    verdict: str

    @property
    def baseline_rate(self) -> float | None:
        return self.baseline_pass / self.baseline_judged if self.baseline_judged else None

    @property
    def run_rate(self) -> float | None:
        return self.run_pass / self.run_judged if self.run_judged else None


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: str
    run: str
    baseline_calls: int
    run_calls: int
    alpha: float
    confidence: float
    seed: int
    n_boot: int
    pass_rate_margin: float
    metrics: tuple[MetricComparison, ...]
    criteria: tuple[CriterionComparison, ...]
    margins: Mapping[str, str] = field(default_factory=dict)  # unit or metric -> the margin in words

    @property
    def regressions(self) -> tuple[str, ...]:
        """Names of the metrics and criteria judged a regression, metrics first."""
        return tuple(m.name for m in self.metrics if m.verdict == REGRESSION) + tuple(
            c.criterion for c in self.criteria if c.verdict == REGRESSION
        )


def _finite(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def sample_of(run: RunReport) -> RunSample:
    """The values of a run from the report model: each call's metrics and shown verdicts (manual wins)."""
    metrics: dict[str, list[float]] = {}
    for call in run.calls:
        for name, raw in call.metrics.items():
            if (value := _finite(raw)) is not None:
                metrics.setdefault(str(name), []).append(value)
    verdicts = {
        name: tuple(cell.status for c in run.calls if (cell := c.cell(name)) is not None) for name in CRITERIA
    }
    return RunSample(run.label, len(run.calls), {k: tuple(v) for k, v in metrics.items()}, verdicts)


def _margin_for(name: str, unit: str, overrides: Mapping[str, Margin]) -> Margin:
    return overrides.get(name) or overrides.get(unit) or DEFAULT_MARGINS.get(unit) or DEFAULT_MARGINS["count"]


def _bootstrap_ci(
    base: NDArray[np.float64],
    run: NDArray[np.float64],
    *,
    seed: int,
    name: str,
    n_boot: int,
    confidence: float,
) -> tuple[float, float]:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    b = np.median(base[rng.integers(0, base.size, size=(n_boot, base.size))], axis=1)
    r = np.median(run[rng.integers(0, run.size, size=(n_boot, run.size))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(r - b, [tail, 100 - tail])
    return float(low), float(high)


def _rank_test(base: NDArray[np.float64], run: NDArray[np.float64]) -> tuple[float, int]:
    """(two-sided p, sign of the shift: +1 when the run's values tend to be larger, -1 smaller, 0 neither)."""
    if np.all(base == base[0]) and np.all(run == base[0]):
        return 1.0, 0  # one value everywhere: scipy's normal approximation divides by zero
    result = stats.mannwhitneyu(run, base, alternative="two-sided")
    u, p = float(result.statistic), float(result.pvalue)
    centre = run.size * base.size / 2
    return (1.0 if math.isnan(p) else p), (0 if u == centre else 1 if u > centre else -1)


def compare_metric(
    name: str,
    base_values: Sequence[float],
    run_values: Sequence[float],
    *,
    alpha: float = 0.05,
    margins: Mapping[str, Margin] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> MetricComparison:
    """One metric of two runs judged (see the module's docstring for the verdicts)."""
    unit, direction = unit_of(name), direction_of(name)
    dist_b, dist_r = Distribution.of(base_values), Distribution.of(run_values)
    if dist_b.n < MIN_CALLS or dist_r.n < MIN_CALLS:
        return MetricComparison(
            name, unit, direction, dist_b, dist_r, None, None, None, None, None, NOT_ENOUGH
        )
    base, run = np.asarray(base_values, dtype=np.float64), np.asarray(run_values, dtype=np.float64)
    diff = float(np.median(run) - np.median(base))
    low, high = _bootstrap_ci(base, run, seed=seed, name=name, n_boot=n_boot, confidence=confidence)
    p, shift = _rank_test(base, run)
    margin = _margin_for(name, unit, margins or {}).of(float(np.median(base)))
    if p >= alpha or shift == 0:
        verdict = NO_CHANGE
    elif direction == "either":
        verdict = CHANGED
    elif (shift > 0) == (direction == "lower"):
        worsening = diff if direction == "lower" else -diff
        verdict = REGRESSION if worsening > margin else WORSE
    else:
        verdict = BETTER
    return MetricComparison(name, unit, direction, dist_b, dist_r, diff, low, high, p, margin, verdict)


def compare_criterion(
    criterion: str,
    base_statuses: Iterable[str],
    run_statuses: Iterable[str],
    *,
    alpha: float = 0.05,
    pass_rate_margin: float = 0.10,
) -> CriterionComparison:
    """One criterion's pass rate in two runs, among the calls it could be judged on (pass or fail)."""
    base, run = list(base_statuses), list(run_statuses)
    bp, bj = base.count("pass"), base.count("pass") + base.count("fail")
    rp, rj = run.count("pass"), run.count("pass") + run.count("fail")
    if bj < MIN_CALLS or rj < MIN_CALLS:
        return CriterionComparison(criterion, bp, bj, rp, rj, None, NOT_ENOUGH)
    _, p_raw = stats.fisher_exact([[bp, bj - bp], [rp, rj - rp]], alternative="two-sided")
    p = float(p_raw)
    change = rp / rj - bp / bj
    if p >= alpha or change == 0:
        verdict = NO_CHANGE
    elif change < 0:
        verdict = REGRESSION if -change > pass_rate_margin else WORSE
    else:
        verdict = BETTER
    return CriterionComparison(criterion, bp, bj, rp, rj, p, verdict)


def _metric_order(names: Iterable[str]) -> list[str]:
    present = set(names)
    ranked = [n for n in DIRECTIONS if n in present]
    return ranked + sorted(present - set(ranked))


def compare(
    baseline: RunSample,
    run: RunSample,
    *,
    alpha: float = 0.05,
    margins: Mapping[str, Margin] | None = None,
    pass_rate_margin: float = 0.10,
    seed: int = 0,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> Comparison:
    """Every metric either run recorded (those with a direction first) and every criterion, judged."""
    if not 0 < alpha < 1 or not 0 < confidence < 1:
        raise ValueError("alpha and confidence must lie between 0 and 1")
    overrides = dict(margins or {})
    names = _metric_order([*baseline.metrics, *run.metrics])
    unknown = sorted(set(overrides) - set(DEFAULT_MARGINS) - set(names))
    if unknown:
        raise ValueError(
            f"--margin {unknown[0]}: not a unit ({', '.join(DEFAULT_MARGINS)}) nor a metric either run recorded"
        )
    metrics = tuple(
        compare_metric(
            name,
            baseline.metrics.get(name, ()),
            run.metrics.get(name, ()),
            alpha=alpha,
            margins=overrides,
            seed=seed,
            n_boot=n_boot,
            confidence=confidence,
        )
        for name in names
    )
    criteria = tuple(
        compare_criterion(
            name,
            baseline.verdicts.get(name, ()),
            run.verdicts.get(name, ()),
            alpha=alpha,
            pass_rate_margin=pass_rate_margin,
        )
        for name in CRITERIA
    )
    judged = {m.unit for m in metrics if m.direction != "either"} | set(overrides)
    described = {
        key: m.describe(key if key in DEFAULT_MARGINS else unit_of(key))
        for key, m in {**DEFAULT_MARGINS, **overrides}.items()
        if key in judged
    }
    return Comparison(
        baseline=baseline.label,
        run=run.label,
        baseline_calls=baseline.n_calls,
        run_calls=run.n_calls,
        alpha=alpha,
        confidence=confidence,
        seed=seed,
        n_boot=n_boot,
        pass_rate_margin=pass_rate_margin,
        metrics=metrics,
        criteria=criteria,
        margins=described,
    )
