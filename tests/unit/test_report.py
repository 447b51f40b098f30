"""The test-run report: built from synthetic call documents whose contents we know, in every format."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from orchestrator.criteria import CRITERIA
from orchestrator.report import (
    FORMATS,
    build_report,
    render,
    render_html,
    render_json,
    render_markdown,
    render_table,
)
from orchestrator.report.model import mask_number, percentile
from orchestrator.report.samples import iso, sample_docs
from orchestrator.report.svg import LEFT, RIGHT, W, call_range_s
from orchestrator.thresholds import Thresholds


@pytest.fixture
def docs() -> list[dict[str, Any]]:
    return sample_docs()


def test_calls_are_grouped_by_run_and_filtered_by_label(docs: list[dict[str, Any]]) -> None:
    other = copy.deepcopy(docs[0])
    other["call"].update(id="x1", run=None)
    report = build_report([*docs, other])
    assert [(r.label, [c.id for c in r.calls]) for r in report.runs] == [
        ("sample", ["c1", "c2", "c3", "c4"]),
        ("(no run)", ["x1"]),
    ]
    only = build_report([*docs, other], "sample")
    assert only.title == "Test run sample" and [r.label for r in only.runs] == ["sample"]
    assert build_report(docs, "nope").runs == ()


def test_manual_verdict_wins_for_display_and_the_automatic_one_is_kept(docs: list[dict[str, Any]]) -> None:
    c2 = build_report(docs).runs[0].calls[1]
    cell = c2.cell("audio_quality_ok")
    assert cell is not None
    assert (cell.status, cell.decided_by, cell.manual_status, cell.auto_status, cell.auto_source) == (
        "fail",
        "manual",
        "fail",
        "pass",
        "stored",
    )
    assert cell.evidence == "manual: hiss on the line from the second turn"
    assert cell.auto_evidence.startswith("inbound clipping 0.00 %")


def test_calls_without_stored_verdicts_are_judged_by_the_report(docs: list[dict[str, Any]]) -> None:
    run = build_report(docs).runs[0]
    busy = run.calls[2]
    assert busy.verdict_source == "computed"
    assert [c.status for c in busy.cells][4:6] == ["fail", "unknown"]
    assert run.calls[0].verdict_source == "stored"
    assert run.counts["answered_ivr_heard"] == {"pass": 2, "fail": 2, "unknown": 0}
    assert run.counts["tunnel_exposed"] == {"pass": 0, "fail": 0, "unknown": 4}


def test_metric_summaries_match_numpy_percentiles(docs: list[dict[str, Any]]) -> None:
    run = build_report(docs).runs[0]
    by_name = {s.name: s for s in run.summaries}
    heard = by_name["first_audio_heard_ms"]
    assert (heard.n, heard.min, heard.max) == (2, 362.0, 402.0)
    assert heard.p50 == pytest.approx(np.percentile([362, 402], 50))
    assert heard.p95 == pytest.approx(np.percentile([362, 402], 95))
    assert by_name["model_load_s"].n == 4  # the busy and refused calls still loaded a model
    assert "echo_delay_ms" in by_name and by_name["echo_delay_ms"].n == 1
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 25, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_latency_distributions_collect_every_turn(docs: list[dict[str, Any]]) -> None:
    run = build_report(docs).runs[0]
    assert run.first_audio_heard_ms() == [("c1", 362.0), ("c2", 402.0)]
    assert sorted(v for _, v in run.response_latencies_ms()) == [380, 420, 510, 640, 1310, 2150]


def test_timeline_is_relative_to_call_creation(docs: list[dict[str, Any]]) -> None:
    c1 = build_report(docs).runs[0].calls[0]
    states = [(round(i.t_ms), i.label) for i in c1.timeline if i.kind == "state"]
    assert states == [
        (210, "· → queued"),
        (900, "queued → ringing"),
        (3000, "ringing → in-progress"),
        (5450, "in-progress → streaming"),
        (19660, "streaming → completed"),
    ]
    rejected = [i for i in c1.timeline if not i.accepted]
    assert [(round(i.t_ms), i.label, i.detail) for i in rejected] == [
        (3500, "status_callback: in-progress", "rejected: duplicate")
    ]
    assert c1.stream_start_ms == pytest.approx(5450)
    assert [(s.state, round(s.start_ms), round(s.end_ms)) for s in c1.spans][-2:] == [
        ("streaming", 5450, 19660),
        ("completed", 19660, 19660),
    ]
    assert c1.to == "…0010" and mask_number("+15005550006") == "…0006"


def test_table_shows_checklist_metrics_and_timelines(docs: list[dict[str, Any]]) -> None:
    text = render_table(build_report(docs, "sample"))
    rows = {
        line.split("  ")[0]: line.split()
        for line in text.splitlines()
        if line.startswith(("Audio", "Call init"))
    }
    assert rows["Audio quality OK"][-4:] == ["pass", "FAIL*", "?", "?"]
    assert rows["Call initiated"][-4:] == ["pass", "pass", "pass", "FAIL"]
    assert "FAIL audio_quality_ok [manual]: manual: hiss on the line from the second turn" in text
    assert "auto: pass audio_quality_ok: inbound clipping" in text
    assert re.search(r"\+5450 ms\s+state\s+in-progress → streaming", text)
    assert re.search(r"first audio heard \(ms\)\s+2\s+382\s+400\s+362\s+402", text)
    assert "FAIL call_initiated: create refused (code 21211): Invalid 'To' Phone Number" in text


def test_markdown_has_a_checklist_table_per_run(docs: list[dict[str, Any]]) -> None:
    md = render_markdown(build_report(docs))
    assert "## Run sample (4 calls)" in md
    assert "| Audio quality OK | ✅ | ❌* | ❔ | ❔ |" in md
    assert "| passed | 10/10 | 7/10 | 3/4 | 2/4 |" in md  # of the criteria that could be judged
    assert md.count("### Call ") == 4


def test_json_is_one_document_with_everything(docs: list[dict[str, Any]]) -> None:
    docs[0]["metrics"]["inbound_jitter_ms"] = float("nan")
    data = json.loads(render_json(build_report(docs)))
    assert data["n_calls"] == 4 and data["criteria"] == list(CRITERIA)
    call = data["runs"][0]["calls"][1]
    assert call["from"] == "…0006" and "from_" not in call
    manual = [c for c in call["cells"] if c["decided_by"] == "manual"]
    assert [(c["criterion"], c["status"], c["auto_status"]) for c in manual] == [
        ("audio_quality_ok", "fail", "pass")
    ]
    assert data["runs"][0]["calls"][0]["metrics"]["inbound_jitter_ms"] is None  # NaN is not JSON
    assert data["thresholds"]["model_load_s_max"] == 10.0


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self.classes: dict[str, list[dict[str, str | None]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        for cls in (a.get("class") or "").split():
            self.classes.setdefault(cls, []).append(a)


def test_html_is_self_contained_with_the_expected_plots(docs: list[dict[str, Any]]) -> None:
    page = render_html(build_report(docs, "sample"))
    parsed = _Ids()
    parsed.feed(page)
    assert len(parsed.ids) == len(set(parsed.ids)), "duplicate ids"
    assert not {"script", "link", "img", "iframe"} & parsed.tags
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg ")
    expected = {"matrix-sample", "dist-sample-first_audio_heard_ms", "dist-sample-response_latency_ms"}
    expected |= {f"call-c{i}" for i in range(1, 5)} | {f"timeline-c{i}" for i in range(1, 5)}
    expected |= {"levels-c1", "levels-c2", "latency-c1", "latency-c2"}
    assert expected <= set(parsed.ids)
    assert "levels-c3" not in parsed.ids and "latency-c3" not in parsed.ids  # busy: no audio
    manual = parsed.classes["manual"]
    assert [m.get("data-criterion") for m in manual if m.get("data-criterion")] == ["audio_quality_ok"]
    assert len(parsed.classes["bar"]) == 6 and len(parsed.classes["over"]) == 2  # 1310 and 2150 ms > 1000
    assert len(parsed.classes["speech-caller"]) == 6 and len(parsed.classes["speech-model"]) == 8


def test_echo_is_marked_where_it_lies(docs: list[dict[str, Any]]) -> None:
    page = render_html(build_report(docs))
    levels = page[page.index('<svg id="levels-c2"') :]
    levels = levels[: levels.index("</svg>")]
    assert "comes back 210 ms later, 18.0 dB down (ERL) at ≈ -42 dBFS" in levels
    bands = [float(x) for x in re.findall(r'class="echo-band" x="([0-9.]+)"', levels)]
    c2 = docs[1]["analysis"]
    lo, hi = call_range_s(build_report(docs).runs[0].calls[1])
    scale = (W - LEFT - RIGHT) / (hi - lo)
    onsets = [s for s, _ in c2["outbound_segments"]]
    assert [round(lo + (x - LEFT) / scale - s, 2) for x, s in zip(bands, onsets, strict=True)] == [0.21] * 4
    # one axis: the timeline draws the model's speech exactly where the levels plot's axis puts it
    timeline = page[page.index('<svg id="timeline-c2"') :]
    speech = [
        float(x)
        for x in re.findall(
            r'class="speech speech-model" x="([0-9.]+)"', timeline[: timeline.index("</svg>")]
        )
    ]
    assert [round(b - x, 1) for b, x in zip(bands, speech, strict=True)] == [round(0.21 * scale, 1)] * 4
    clean = page[page.index('<svg id="levels-c1"') :]
    assert "echo-band" not in clean[: clean.index("</svg>")]


def test_text_from_documents_is_escaped(docs: list[dict[str, Any]]) -> None:
    docs[1]["checks"][-1]["evidence"] = "<script>alert(1)</script>"
    docs[0]["call"]["id"] = 'a"<b>'
    page = render_html(build_report(docs))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'id="call-a__b_"' in page


def test_partial_and_empty_documents_render_in_every_format() -> None:
    partial: list[dict[str, Any]] = [
        {"call": {"id": "bare", "state": "ringing", "run": "r", "created_at": iso(0)}},
        {
            "call": {"id": "odd"},
            "transitions": [{"to": "queued", "at": "not a time"}],
            "metrics": {"turns": "x"},
        },
        {},
    ]
    for docs in (partial, []):
        report = build_report(docs)
        for fmt in FORMATS:
            out = render(report, fmt)
            assert out.endswith("\n")
    assert "No calls." in render_table(build_report([])) and "No calls." in render_html(build_report([]))
    assert "bare" in render_html(build_report(partial))


def test_render_rejects_an_unknown_format(docs: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="choose one of table, md, json, html"):
        render(build_report(docs), "pdf")


def test_thresholds_given_to_the_report_are_used_for_computed_verdicts_and_plots(
    docs: list[dict[str, Any]],
) -> None:
    th = Thresholds(model_load_s_max=5.0, response_latency_ms_max=500.0)
    report = build_report(docs, thresholds=th)
    busy = report.runs[0].calls[2].cell("model_loads_quickly")
    assert busy is not None and busy.auto_evidence == "model loaded in 7.6 s > 5 s"
    stored = report.runs[0].calls[0].cell("model_loads_quickly")
    assert stored is not None and stored.status == "pass"  # stored verdicts are not re-judged
    assert "threshold 500 ms" in render_html(report)


def _dots_ms(svg: str) -> list[float]:
    return [float(x) for x in re.findall(r'<circle class="dot" cx="([0-9.]+)"', svg)]


def test_distribution_axes_scale_to_the_data_not_to_the_threshold() -> None:
    from orchestrator.report.dist_svg import distribution_svg

    values = [("a", 106.0), ("b", 110.0), ("c", 115.0)]
    svg = distribution_svg("x", "t", values, 2000.0)
    xs = _dots_ms(svg)
    # 9 ms of spread, padded by 8 % of it each side: the three dots fill most of the plot's width
    assert (max(xs) - min(xs)) / (W - LEFT - RIGHT) > 0.8
    ticks = [float(t) for t in re.findall(r">([0-9.]+) ms</text>", svg)]
    assert ticks and min(ticks) >= 100 and max(ticks) <= 120
    assert "threshold 2000 ms → (off scale)" in svg and 'class="threshold"' not in svg
    near = distribution_svg("y", "t", values, 118.0)  # a threshold near the data is drawn on the axis
    assert 'class="threshold"' in near


def test_many_values_give_a_cdf_with_p50_and_p95_where_they_are() -> None:
    from orchestrator.report.dist_svg import distribution_svg

    values = [(f"c{i}", float(v)) for i, v in enumerate([100, 120, 140, 160, 180, 200, 400, 900])]
    svg = distribution_svg("z", "t", values, 1000.0)
    assert 'class="distribution cdf-plot"' in svg and "p50 170 ms" in svg
    # p95 of 8 values, by hand: position 0.95 * 7 = 6.65 between 400 and 900 -> 725
    assert "p95 725 ms" in svg
    x50 = float(re.search(r'class="quantile q-p50" x1="([0-9.]+)"', svg).group(1))  # type: ignore[union-attr]
    x95 = float(re.search(r'class="quantile q-p95" x1="([0-9.]+)"', svg).group(1))  # type: ignore[union-attr]
    xs = dict(zip([v for _, v in values], _dots_ms(svg), strict=True))
    assert xs[160.0] < x50 < xs[180.0] and xs[400.0] < x95 < xs[900.0]
    few = distribution_svg("w", "t", values[:5], 1000.0)
    assert "cdf" not in few and 'class="box"' in few


def test_calls_are_grouped_by_the_criterion_they_fail(docs: list[dict[str, Any]]) -> None:
    report = build_report(docs)
    page = render_html(report)
    failing = page[page.index('<ul class="failing" id="failing-sample">') :]
    failing = failing[: failing.index("</ul>")]
    groups = dict(re.findall(r'<li data-criterion="([a-z_]+)">(.*?)</li>', failing))
    calls = report.runs[0].calls
    expected = {
        n: [c.id for c in calls if (cell := c.cell(n)) is not None and cell.status == "fail"]
        for n in CRITERIA
    }
    assert {n: re.findall(r">(c\d)</a>", v) for n, v in groups.items()} == {
        n: v for n, v in expected.items() if v
    }
    counts = [len(re.findall(r"</a>", v)) for v in groups.values()]
    assert counts == sorted(counts, reverse=True)  # most failed first


def test_header_counts_passes_among_the_checks_that_could_be_judged(docs: list[dict[str, Any]]) -> None:
    report = build_report(docs)
    cells = [cell for c in report.runs[0].calls for cell in c.cells]
    passed = sum(1 for c in cells if c.status == "pass")
    unknown = sum(1 for c in cells if c.status == "unknown")
    assert unknown > 0  # the samples run offline: no tunnel to judge
    assert f"{passed}/{len(cells) - unknown} judged checks pass, {unknown} unknown" in render_html(report)
