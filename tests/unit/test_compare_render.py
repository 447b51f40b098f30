"""The comparison's renderings: the table, Markdown and JSON say the same verdicts as the values; the HTML
page is self-contained (no script, nothing fetched) and marks the regressions."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from orchestrator.report.compare import Comparison, RunSample, compare
from orchestrator.report.compare_html import render_compare_html
from orchestrator.report.compare_text import (
    render_compare_json,
    render_compare_markdown,
    render_compare_table,
)

LAT = "response_latency_ms_p50"
BASE = (500.0, 512.0, 524.0, 536.0, 548.0, 506.0, 518.0, 530.0, 542.0, 554.0)


def _pair() -> tuple[RunSample, RunSample, Comparison]:
    base = RunSample(
        "nightly-1",
        10,
        {LAT: BASE, "turns": (3.0,) * 10, "echo_delay_ms": BASE, "barge_in_stop_ms": (300.0, 310.0)},
        {"conversation_interactive": ("pass",) * 10, "tunnel_exposed": ("unknown",) * 10},
    )
    run = RunSample(
        "nightly-2",
        10,
        {LAT: tuple(v + 150 for v in BASE), "turns": (3.0,) * 10, "echo_delay_ms": BASE},
        {"conversation_interactive": ("pass",) * 2 + ("fail",) * 8, "tunnel_exposed": ("unknown",) * 10},
    )
    return base, run, compare(base, run)


def _row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label))


def test_table_prints_distributions_difference_p_and_verdict() -> None:
    _, _, cmp = _pair()
    text = render_compare_table(cmp)
    assert text.startswith("Run nightly-2 against baseline nightly-1\n")
    assert "Regressions (2): response latency p50 (ms), Conversation interactive" in text
    m = next(x for x in cmp.metrics if x.name == LAT)
    assert m.baseline.p50 is not None and m.run.p50 is not None
    row = _row(text, "response latency p50 (ms)")
    assert row.split()[-1] == "regression"
    assert f"{m.baseline.p50:.0f}" in row and f"{m.run.p50:.0f}" in row and "+150 [" in row
    assert _row(text, "barge in stop (ms)").endswith("not enough calls")
    assert _row(text, "turns").endswith("no change")
    assert "Other metrics (no better direction" in text and _row(text, "echo delay (ms)").endswith(
        "no change"
    )
    assert _row(text, "Conversation interactive").split()[-1] == "regression"
    assert "10/10 (100 %)" in _row(text, "Conversation interactive")
    assert _row(text, "Tunnel exposes server").endswith("not enough calls")
    assert all(line == line.rstrip() for line in text.splitlines())


def test_markdown_marks_regressions() -> None:
    _, _, cmp = _pair()
    text = render_compare_markdown(cmp)
    lat = next(line for line in text.splitlines() if line.startswith("| response latency p50 (ms)"))
    assert lat.endswith("| **regression** |")
    assert "## Criteria" in text


def test_json_reads_back_with_the_same_verdicts() -> None:
    _, _, cmp = _pair()
    data = json.loads(render_compare_json(cmp))
    assert data["regressions"] == [LAT, "conversation_interactive"]
    assert data["baseline"] == "nightly-1" and data["run"] == "nightly-2"
    by_name = {m["name"]: m for m in data["metrics"]}
    assert by_name[LAT]["verdict"] == "regression" and by_name[LAT]["diff"] == 150.0
    assert by_name["barge_in_stop_ms"]["p_value"] is None
    crit = {c["criterion"]: c for c in data["criteria"]}
    assert (
        crit["conversation_interactive"]["baseline_rate"],
        crit["conversation_interactive"]["run_rate"],
    ) == (
        1.0,
        0.2,
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_marks_the_regressions() -> None:
    base, run, cmp = _pair()
    page = render_compare_html(cmp, base, run)
    parser = _Tags()
    parser.feed(page)
    names = {t for t, _ in parser.tags}
    assert "script" not in names and "link" not in names and "img" not in names
    # nothing fetched: the only URL is the SVG namespace
    assert set(re.findall(r"https?://[^\"' ]+", page)) <= {"http://www.w3.org/2000/svg"}
    rows = {
        a.get("data-metric"): a.get("data-verdict")
        for t, a in parser.tags
        if t == "tr" and "data-metric" in a
    }
    assert rows == {m.name: m.verdict for m in cmp.metrics}
    crit = {a.get("data-criterion"): a.get("data-verdict") for t, a in parser.tags if "data-criterion" in a}
    assert crit["conversation_interactive"] == "regression"
    # a strip plot per judged metric with a direction: latency and turns, not the directionless echo delay
    # nor barge-in (too few calls)
    strips = {a.get("id") for t, a in parser.tags if t == "svg"}
    assert strips == {f"cmp-{LAT}", "cmp-turns"}
    assert page.count("<circle") == 4 * 10  # ten calls a side in each of the two plots
    assert "--pass" in page  # the report's own stylesheet


def test_html_without_samples_has_the_tables_only() -> None:
    _, _, cmp = _pair()
    page = render_compare_html(cmp)
    assert "<svg" not in page and 'id="compare-metrics-table"' in page
