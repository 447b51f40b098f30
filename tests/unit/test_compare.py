"""The run comparison's statistics against closed forms: exact rank-test and Fisher p-values, verdicts by
direction and margin, too few calls never judged, a reproducible bootstrap."""

from __future__ import annotations

from math import comb
from typing import Any

import pytest

from orchestrator.report import build_report
from orchestrator.report.compare import (
    BETTER,
    CHANGED,
    NO_CHANGE,
    NOT_ENOUGH,
    REGRESSION,
    WORSE,
    RunSample,
    compare,
    compare_criterion,
    compare_metric,
    parse_margin,
    sample_of,
)
from orchestrator.report.directions import DEFAULT_MARGINS, Margin, direction_of, unit_of

LAT = "response_latency_ms_p50"
BASE5 = [500.0, 510.0, 520.0, 530.0, 540.0]
# five values a side, no ties, fully separated: scipy's exact distribution, p = 2 / C(10, 5)
P_SEPARATED_5 = 2 / comb(10, 5)


def test_identical_samples_are_no_change() -> None:
    m = compare_metric(LAT, BASE5, list(reversed(BASE5)))
    assert m.verdict == NO_CHANGE
    assert m.p_value == pytest.approx(1.0)
    assert m.diff == 0.0
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= 0.0 <= m.ci_high
    assert (m.baseline.n, m.baseline.p50, m.run.p50) == (5, 520.0, 520.0)


def test_one_value_everywhere_is_no_change_not_an_error() -> None:
    m = compare_metric("turns", [2.0] * 6, [2.0] * 6)
    assert (m.verdict, m.p_value, m.diff, m.ci_low, m.ci_high) == (NO_CHANGE, 1.0, 0.0, 0.0, 0.0)


def test_a_shift_far_past_the_margin_is_a_regression_with_the_exact_p() -> None:
    m = compare_metric(LAT, BASE5, [v + 150 for v in BASE5])
    assert m.verdict == REGRESSION
    assert m.p_value == pytest.approx(P_SEPARATED_5)
    assert m.diff == pytest.approx(150.0)
    assert m.margin == pytest.approx(52.0)  # max(50 ms, 10 % of the 520 ms baseline median)
    assert m.ci_low is not None and m.ci_high is not None and m.ci_low <= 150.0 <= m.ci_high


def test_a_latency_drop_is_better() -> None:
    m = compare_metric(LAT, BASE5, [v - 150 for v in BASE5])
    assert (m.verdict, m.diff) == (BETTER, pytest.approx(-150.0))
    assert m.p_value == pytest.approx(P_SEPARATED_5)


def test_higher_is_better_metrics_regress_downwards() -> None:
    down = compare_metric("turns", [3, 3, 4, 4, 4], [1, 1, 2, 2, 2])
    assert (down.direction, down.verdict, down.diff) == ("higher", REGRESSION, -2.0)
    up = compare_metric("aec_erle_db", [20.0, 21, 22, 23, 24], [30.0, 31, 32, 33, 34])
    assert up.verdict == BETTER


def test_a_significant_worsening_inside_the_margin_is_worse_not_a_regression() -> None:
    tight = [500.0, 502.0, 504.0, 506.0, 508.0]
    slower = [v + 20 for v in tight]  # still fully separated: the exact p, but 20 ms < the 50 ms margin
    m = compare_metric(LAT, tight, slower)
    assert m.p_value == pytest.approx(P_SEPARATED_5)
    assert (m.verdict, m.diff) == (WORSE, pytest.approx(20.0))
    # the same shift past a margin set smaller is a regression
    assert compare_metric(LAT, tight, slower, margins={"ms": Margin(10.0)}).verdict == REGRESSION
    # and a margin named for the metric wins over its unit's
    named = compare_metric(LAT, tight, slower, margins={"ms": Margin(10.0), LAT: Margin(30.0)})
    assert named.verdict == WORSE


def test_overlapping_samples_are_no_change() -> None:
    m = compare_metric(LAT, BASE5, [505.0, 515.0, 525.0, 535.0, 545.0])
    assert m.verdict == NO_CHANGE and m.p_value is not None and m.p_value > 0.5


def test_a_metric_with_no_direction_changes_but_never_regresses() -> None:
    m = compare_metric("echo_delay_ms", BASE5, [v + 500 for v in BASE5])
    assert (m.direction, m.verdict) == ("either", CHANGED)
    assert direction_of("a_metric_nobody_named_ms") == "either"


@pytest.mark.parametrize(("base", "run"), [([500.0, 510.0], BASE5), (BASE5, [900.0, 950.0]), ([], BASE5)])
def test_fewer_than_three_calls_a_side_are_never_judged(base: list[float], run: list[float]) -> None:
    m = compare_metric(LAT, base, [v + 500 for v in run])
    assert (m.verdict, m.p_value, m.diff, m.margin) == (NOT_ENOUGH, None, None, None)
    assert m.baseline.n == len(base)


def test_the_bootstrap_is_reproducible_and_seeded() -> None:
    base = [500.0, 530.0, 515.0, 560.0, 505.0, 540.0, 520.0, 590.0, 510.0, 525.0]
    run = [v + 90 + (i % 3) * 20 for i, v in enumerate(base)]
    a, b = compare_metric(LAT, base, run), compare_metric(LAT, base, run)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    other = compare_metric(LAT, base, run, seed=7)
    assert (other.ci_low, other.ci_high) != (a.ci_low, a.ci_high)
    assert a.ci_low is not None and a.ci_high is not None and a.diff is not None
    assert a.ci_low < a.diff < a.ci_high
    wider = compare_metric(LAT, base, run, confidence=0.99)
    assert wider.ci_low is not None and wider.ci_high is not None
    assert wider.ci_low <= a.ci_low and wider.ci_high >= a.ci_high


def test_a_pass_rate_drop_is_judged_by_fishers_exact_test() -> None:
    c = compare_criterion("conversation_interactive", ["pass"] * 10, ["pass"] * 3 + ["fail"] * 7)
    # hypergeometric: 13 passes among 20 calls; both tables as extreme as 10/10 vs 3/10 have C(13,10)/C(20,10)
    assert c.p_value == pytest.approx(2 * comb(13, 10) / comb(20, 10))
    assert (c.verdict, c.baseline_rate, c.run_rate) == (REGRESSION, 1.0, 0.3)
    up = compare_criterion("conversation_interactive", ["pass"] * 3 + ["fail"] * 7, ["pass"] * 10)
    assert up.verdict == BETTER
    small = compare_criterion("conversation_interactive", ["pass"] * 10, ["pass"] * 8 + ["fail"] * 2)
    assert small.verdict == NO_CHANGE and small.p_value == pytest.approx(comb(18, 10) / comb(20, 10) * 2)


def test_unknown_verdicts_are_not_judged_calls() -> None:
    c = compare_criterion("tunnel_exposed", ["unknown"] * 10, ["unknown"] * 10)
    assert (c.verdict, c.baseline_judged, c.run_rate) == (NOT_ENOUGH, 0, None)
    mixed = compare_criterion("x", ["pass", "pass", "pass", "unknown"], ["pass", "fail", "unknown", "pass"])
    assert (mixed.baseline_judged, mixed.run_judged, mixed.verdict) == (3, 3, NO_CHANGE)


def _sample(label: str, latency: list[float], interactive: list[str]) -> RunSample:
    return RunSample(
        label,
        len(latency),
        {LAT: tuple(latency), "echo_delay_ms": tuple(latency)},
        {"conversation_interactive": tuple(interactive)},
    )


def test_compare_lists_directed_metrics_first_and_collects_regressions() -> None:
    base = _sample("base", BASE5 * 2, ["pass"] * 10)
    run = _sample("new", [v + 150 for v in BASE5 * 2], ["pass"] * 2 + ["fail"] * 8)
    cmp = compare(base, run)
    assert [m.name for m in cmp.metrics] == [LAT, "echo_delay_ms"]
    assert cmp.regressions == (LAT, "conversation_interactive")
    assert set(cmp.margins) == {"ms"}
    same = compare(base, _sample("again", list(reversed(BASE5 * 2)), ["pass"] * 10))
    assert same.regressions == ()
    assert {m.verdict for m in same.metrics} == {NO_CHANGE}


def test_compare_refuses_a_margin_for_nothing_it_judges() -> None:
    base = _sample("base", BASE5, ["pass"] * 5)
    with pytest.raises(ValueError, match="--margin latency_ms: not a unit"):
        compare(base, base, margins={"latency_ms": Margin(1.0)})


@pytest.mark.parametrize(
    ("text", "key", "margin"),
    [
        ("ms=80", "ms", Margin(80.0, 0.0)),
        ("response_latency_ms_p50=100", LAT, Margin(100.0, 0.0)),
        ("ms=50,10%", "ms", Margin(50.0, 0.10)),
        (" dB = 1.5 ", "dB", Margin(1.5, 0.0)),
        ("count=20%", "count", Margin(0.0, 0.20)),
    ],
)
def test_margins_parse(text: str, key: str, margin: Margin) -> None:
    assert parse_margin(text) == (key, margin)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ms", "expected KEY=VALUE"),
        ("=5", "expected KEY=VALUE"),
        ("ms=fast", "'fast' is not a number"),
        ("ms=-5", "must be a finite number >= 0"),
        ("ms=nan", "must be a finite number >= 0"),
    ],
)
def test_bad_margins_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_margin(text)
    assert "\n" not in str(err.value)


def test_margin_scales_with_the_baseline() -> None:
    ms = DEFAULT_MARGINS["ms"]
    assert (ms.of(300.0), ms.of(2000.0), ms.of(-2000.0)) == (50.0, 200.0, 200.0)
    assert DEFAULT_MARGINS["bool"].describe("bool") == "any move of the median"
    assert DEFAULT_MARGINS["ratio"].describe("ratio") == "1 percentage point"
    assert ms.describe("ms") == "50 ms or 10 % of the baseline median, whichever is larger"


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        (LAT, "ms"),
        ("first_audio_heard_ms", "ms"),
        ("model_load_s", "s"),
        ("inbound_rms_dbfs", "dBFS"),
        ("echo_return_loss_db", "dB"),
        ("inbound_clip_ratio", "ratio"),
        ("echo_detected", "bool"),
        ("turns", "count"),
        ("echo_segments_flagged", "count"),
        ("outbound_rms_dbfs", "dBFS"),
    ],
)
def test_units_come_from_the_name(name: str, unit: str) -> None:
    assert unit_of(name) == unit


def _doc(i: int, run: str, latency: float, status: str, manual: str | None = None) -> dict[str, Any]:
    checks = [
        {"criterion": "conversation_interactive", "status": status, "evidence": "", "decided_by": "auto"}
    ]
    if manual:
        checks.append(
            {
                "criterion": "conversation_interactive",
                "status": manual,
                "evidence": "",
                "decided_by": "manual",
            }
        )
    return {
        "call": {
            "id": f"c_{i:04d}",
            "run": run,
            "created_at": f"2026-12-03T12:00:{i:02d}.000Z",
            "state": "completed",
        },
        "metrics": {LAT: latency, "turns": 2, "bad": float("nan")},
        "checks": checks,
    }


def test_a_sample_reads_the_report_model_with_manual_verdicts_winning() -> None:
    docs = [_doc(i, "r", 500.0 + i, "pass", manual="fail" if i == 0 else None) for i in range(4)]
    run = build_report(docs, "r").runs[0]
    s = sample_of(run)
    assert s.n_calls == 4 and s.metrics[LAT] == (500.0, 501.0, 502.0, 503.0)
    assert "bad" not in s.metrics  # NaN is not a value
    assert s.verdicts["conversation_interactive"] == ("fail", "pass", "pass", "pass")
