"""Judging a call against expectations, the campaign's statistics, JUnit XML and the progress line."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.scenario.expect import judge
from orchestrator.scenario.junit import junit_xml
from orchestrator.scenario.metrics import known_metrics
from orchestrator.scenario.parse import parse_scenario
from orchestrator.scenario.summary import CallResult, median_ci, summarise
from orchestrator.scenario.text import campaign_text, progress_line

SCENARIO = """\
name: judged
steps: [hangup]
expect:
  caller_hears_model: pass
  audio_quality_ok: [pass, unknown]
  dtmf_received: "12#"
  metrics:
    - first_audio_heard_ms < 1500
    - echo_detected == 0
    - turns >= 2
"""


def _scenario() -> Any:
    return parse_scenario(SCENARIO, Path("judged.yaml"))


def _doc(metrics: dict[str, float], checks: dict[str, str], digits: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "call": {"id": "c_1", "call_sid": "CA1", "state": "completed"},
        "metrics": metrics,
        "checks": [
            {"criterion": k, "status": v, "evidence": f"{k} evidence", "decided_by": "auto"}
            for k, v in checks.items()
        ]
        + [{"criterion": "caller_hears_model", "status": "pass", "evidence": "", "decided_by": "manual"}],
        "events": [{"source": "media", "type": "dtmf", "payload": {"digits": d}} for d in digits],
    }


def test_each_expectation_is_judged_with_its_evidence() -> None:
    s = _scenario()
    doc = _doc(
        {"first_audio_heard_ms": 1612.4, "echo_detected": 0.0, "turns": 2.0},
        {"caller_hears_model": "fail", "audio_quality_ok": "unknown"},
        digits=("1", "2#"),  # the server stores digits in batches: their order is the events'
    )
    got = {o.label: (o.met, o.measured, o.evidence) for o in judge(s.expect, doc)}
    assert got == {
        # the manual verdict is a person's; the expectation judges the automatic one
        "caller_hears_model is pass": (
            False,
            "fail",
            "caller_hears_model is fail, wanted pass: caller_hears_model evidence",
        ),
        "audio_quality_ok is pass or unknown": (
            True,
            "unknown",
            "audio_quality_ok is unknown, wanted pass/unknown: audio_quality_ok evidence",
        ),
        "dtmf received '12#'": (True, "12#", "the server stored the keys '12#', wanted '12#'"),
        "first_audio_heard_ms < 1500": (
            False,
            1612.4,
            "first_audio_heard_ms = 1612, misses the bound < 1500",
        ),
        "echo_detected == 0": (True, 0.0, "echo_detected = 0, meets the bound == 0"),
        "turns >= 2": (True, 2.0, "turns = 2, meets the bound >= 2"),
    }


def test_what_was_not_measured_or_decided_is_not_met() -> None:
    outcomes = judge(_scenario().expect, _doc({}, {}))
    assert not any(o.met for o in outcomes if "unknown" not in o.label)
    by = {o.label: o for o in outcomes}
    assert by["first_audio_heard_ms < 1500"].measured is None
    assert by["first_audio_heard_ms < 1500"].evidence == (
        "first_audio_heard_ms was not measured on this call (bound < 1500)"
    )
    assert (
        by["caller_hears_model is pass"].evidence
        == "caller_hears_model was not decided on this call (wanted pass)"
    )
    assert by["dtmf received '12#'"].evidence == "the server stored the keys '', wanted '12#'"


def _coverage_by_enumeration(n: int, lo: int, hi: int) -> float:
    """P(x(lo) <= median <= x(hi)) (ranks from 1) counted over all 2^n sign patterns: the median of a
    continuous distribution has each sample below it with probability 1/2, independently."""
    total = 0
    for below in range(n + 1):
        if lo <= below < hi:  # x(lo) <= m needs at least lo below; m <= x(hi) needs fewer than hi below
            total += math.comb(n, below)
    return total / 2**n


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 10, 20, 31])
def test_the_median_interval_is_the_exact_order_statistic_one(n: int) -> None:
    values = np.random.default_rng(n).normal(500, 80, n)
    low, high, level = median_ci(values.tolist())
    x = np.sort(values)
    # the narrowest symmetric pair that reaches 95 %, found by brute force over ranks
    best = (1, n)
    for lo in range(1, n // 2 + 1):
        if _coverage_by_enumeration(n, lo, n - lo + 1) >= 0.95:
            best = (lo, n - lo + 1)
    assert (low, high) == (x[best[0] - 1], x[best[1] - 1])
    assert level == pytest.approx(_coverage_by_enumeration(n, *best)) if n > 1 else level == 0.0
    if n >= 6:
        assert level >= 0.95


def test_the_median_interval_covers_the_true_median_as_often_as_it_says() -> None:
    """Over many simulated campaigns of 10 calls the interval holds the true median ~97.9 % of the time."""
    rng = np.random.default_rng(7)
    hits = 0
    trials = 4000
    for _ in range(trials):
        sample = rng.exponential(300.0, 10)  # skewed, like latencies; true median 300 ln 2
        low, high, level = median_ci(sample.tolist())
        hits += low <= 300 * math.log(2) <= high
    assert level == pytest.approx(1 - 2 * 11 / 1024)
    assert abs(hits / trials - level) < 0.01


def _results() -> list[CallResult]:
    s = _scenario()
    good = _doc(
        {"first_audio_heard_ms": 400.0, "echo_detected": 0.0, "turns": 2.0},
        {"caller_hears_model": "pass", "audio_quality_ok": "pass"},
        digits=("12#",),
    )
    bad = _doc(
        {"first_audio_heard_ms": 2000.0, "echo_detected": 1.0, "turns": 1.0},
        {"caller_hears_model": "pass", "audio_quality_ok": "fail"},
        digits=("12#",),
    )
    out = []
    for repeat, doc in enumerate([good, bad, good], start=1):
        out.append(
            CallResult(
                "judged",
                repeat,
                f"c_{repeat}",
                f"CA{repeat}",
                "completed",
                tuple(judge(s.expect, doc)),
                doc["metrics"],
                {c["criterion"]: c["status"] for c in doc["checks"] if c["decided_by"] == "auto"},
            )
        )
    out.append(CallResult("judged", 4, None, None, "not placed", (), error="the carrier refused the call"))
    return out


def test_the_summary_counts_each_expectation_and_criterion() -> None:
    doc = summarise(_scenario(), _results())
    assert (doc["calls"], doc["calls_ok"]) == (4, 2)
    assert {e["expectation"]: e["met"] for e in doc["expectations"]} == {
        "caller_hears_model is pass": 3,
        "audio_quality_ok is pass or unknown": 2,
        "dtmf received '12#'": 3,
        "first_audio_heard_ms < 1500": 2,
        "echo_detected == 0": 2,
        "turns >= 2": 2,
    }
    assert all(e["calls"] == 4 for e in doc["expectations"])
    assert doc["criteria"] == {
        "caller_hears_model": {"pass": 3, "fail": 0, "unknown": 0},
        "audio_quality_ok": {"pass": 2, "fail": 1, "unknown": 0},
    }
    fa = doc["metrics"]["first_audio_heard_ms"]
    assert fa["n"] == 3 and fa["p50"] == 400.0 and fa["p95"] == pytest.approx(400 + 0.9 * 1600)
    assert fa["median_ci"] == [400.0, 2000.0] and fa["ci_level"] == 0.75
    text = campaign_text([doc], "nightly", "/tmp/c.db")
    assert "judged (judged.yaml): 4 call(s), 2 met every expectation" in text
    assert "expectations NOT met on 2 of 4 call(s)" in text
    assert "orchestrator report --db /tmp/c.db --run nightly" in text


def test_the_progress_line_says_what_was_met_and_missed() -> None:
    results = _results()
    assert progress_line(results[1], 2, 4) == (
        "[2/4] judged #2  c_2  completed  expectations 2/6  first audio heard 2000 ms, turns 1  "
        "missed: audio_quality_ok is pass or unknown; first_audio_heard_ms < 1500; echo_detected == 0; turns >= 2"
    )
    assert progress_line(results[3], 4, 4) == (
        "[4/4] judged #4  -  not placed  no result: the carrier refused the call"
    )


def test_junit_has_a_suite_per_scenario_and_a_case_per_call_and_expectation() -> None:
    results = _results()
    other = [CallResult("second", 1, "c_9", "CA9", "completed", results[0].outcomes[:2])]
    root = ET.fromstring(junit_xml("nightly", [("judged", results), ("second", other)]))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["judged", "second"]
    first = suites[0]
    cases = first.findall("testcase")
    assert len(cases) == 3 * 6 + 1  # three judged calls x six expectations, one call that never ran
    failures = [c for c in cases if c.find("failure") is not None]
    errors = [c for c in cases if c.find("error") is not None]
    assert (first.get("tests"), first.get("failures"), first.get("errors")) == ("19", "4", "1")
    assert len(failures) == 4 and all(c.get("classname") == "judged.call-2" for c in failures)
    messages = {c.get("name"): c.find("failure").get("message") for c in failures}  # type: ignore[union-attr]
    assert messages["first_audio_heard_ms < 1500"] == "first_audio_heard_ms = 2000, misses the bound < 1500"
    assert errors[0].find("error").get("message") == "the carrier refused the call"  # type: ignore[union-attr]
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("21", "4", "1")
    assert suites[1].get("tests") == "2" and suites[1].get("failures") == "0"


def test_the_known_metrics_are_what_the_analysis_records() -> None:
    """Every metric `bridge.analysis.analyse` records on a short call with echo can be bounded."""
    from bridge.analysis import MediaEvidence, analyse

    rate, n = 8000, 16000
    t = np.arange(n) / rate
    tone = (8000 * np.sin(2 * np.pi * 440 * t) * (t % 1.0 < 0.5)).astype(np.int16)
    chunks = n // 160
    sends = np.column_stack([np.arange(chunks) * 0.02, np.arange(chunks) * 0.02 + 0.05, np.zeros(chunks)])
    arrivals = np.column_stack([np.arange(chunks) * 0.02 + 0.04, np.arange(chunks) * 20.0])
    inbound = np.roll(tone // 4, 960)  # the played tone comes back 120 ms later
    ev = MediaEvidence(
        rate=rate,
        inbound_pcm=inbound,
        inbound_arrivals=arrivals,
        sent_pcm=tone,
        sends=sends,
        marks=[("m", 1.0, 1.1, False), ("m2", 1.9, 2.0, False)],
        step_ms=[10.0, 12.0],
    )
    recorded = set(analyse(ev).metrics)
    assert recorded - known_metrics() == set()
    assert {"echo_detected", "step_ms_p95", "first_audio_ms", "inbound_jitter_ms"} <= recorded
