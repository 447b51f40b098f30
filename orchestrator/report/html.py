"""The HTML test-run report: one self-contained page (inline CSS, inline SVG; no script, nothing fetched).

Layout, per run: the checklist matrix (table#matrix-<run>.matrix, calls x criteria, colour per status, a
manual verdict marked and the automatic one shown beneath it; with `call_links`, each row links its call
page), the calls grouped by failing criterion (ul#failing-<run>), latency distributions across calls
(axes scaled to the data, a CDF with p50/p95 once there are more than a handful), the metric summary
(p50/p95); then per call (section#call-<id>.call): its verdicts with evidence, the timeline of states,
events and speech and the levels of both channels with the echo marked, on one axis (s since the stream
started), and the response latency of each turn. A call without audio (busy, refused) has fewer plots.

Pure string building: never writes the file, never reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from orchestrator.report.dist_svg import distribution_svg
from orchestrator.report.model import CallReport, Cell, Report, RunReport
from orchestrator.report.svg import (
    CALLER,
    ECHO,
    MODEL,
    OVER,
    STATE_COLOURS,
    dom_id,
    latency_bars_svg,
    levels_svg,
    timeline_svg,
)
from orchestrator.report.text import LABELS, fmt_ms, fmt_value, metric_label

SHORT: dict[str, str] = {
    "model_loads_quickly": "Model loads",
    "server_listening": "Server listening",
    "tunnel_exposed": "Tunnel",
    "call_initiated": "Call initiated",
    "answered_ivr_heard": "Answered + IVR",
    "websocket_connected": "WebSocket",
    "caller_hears_model": "Caller hears model",
    "model_hears_caller": "Model hears caller",
    "conversation_interactive": "Interactive",
    "audio_quality_ok": "Audio quality",
    "no_latency_echo_issues": "Latency / echo",
}
SYMBOL = {"pass": "✔", "fail": "✘", "unknown": "?"}

CSS = """
:root { --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9; --unknown:#6e7781;
  --unknown-bg:#eaeef2; --ink:#24292f; --muted:#57606a; --line:#d0d7de; --caller:CALLER; --model:MODEL; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
  margin: 0; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: #d0d7de; }
main { padding: 8px 32px 40px; max-width: 1320px; }
section.run, section.call { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 22px; margin: 20px 0; }
h2 { margin: 4px 0 12px; font-size: 21px; } h3 { margin: 4px 0 8px; font-size: 18px; }
h4 { margin: 16px 0 6px; font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; font-size: 13px; margin: 6px 0 12px; }
.legend .sw { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px;
  margin-right: 5px; }
table { border-collapse: collapse; }
table.matrix { width: 100%; table-layout: fixed; }
table.matrix th, table.matrix td { border: 1px solid var(--line); padding: 6px 4px; text-align: center; }
table.matrix thead th { font-size: 12px; font-weight: 600; background: #f6f8fa; vertical-align: bottom; }
table.matrix th.callid { text-align: left; width: 150px; font-weight: 600; font-size: 13px; }
table.matrix td { font-size: 20px; font-weight: 700; }
td.pass { background: var(--pass-bg); color: var(--pass); }
td.fail { background: var(--fail-bg); color: var(--fail); }
td.unknown { background: var(--unknown-bg); color: var(--unknown); }
td.manual { outline: 3px solid #8250df; outline-offset: -4px; }
td .auto { display: block; font-size: 10px; font-weight: 500; color: var(--muted); }
tr.totals td { font-size: 12px; font-weight: 600; color: var(--muted); background: #fff; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  color: #fff; vertical-align: 2px; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.unknown { background: var(--unknown); } .badge.manual { background: #8250df; }
.facts { color: var(--muted); margin: 0 0 8px; }
ul.verdicts { list-style: none; padding: 0; margin: 0; columns: 2; column-gap: 28px; font-size: 13px; }
ul.verdicts li { break-inside: avoid; margin: 0 0 5px; }
ul.verdicts .sub { color: var(--muted); }
svg { width: 100%; height: auto; display: block; margin: 4px 0; font-size: 15px; }
/* plots on the 1000-unit canvas never shrink below 760 px (a scroll bar instead): 15 units >= 11 px */
.scroll { overflow-x: auto; } .scroll svg { min-width: 760px; }
svg .tick, svg .lane { fill: var(--muted); font-size: 15px; } svg .lane { font-weight: 600; }
svg .plot-title { font-weight: 600; font-size: 16px; } svg .on-colour { font-size: 14px; font-weight: 600; }
svg .echo-label { font-weight: 700; } svg .stats { fill: var(--muted); }
svg.latency-bars { max-width: 520px; } svg.latency-bars .tick { font-size: 12px; }
.plots h4 { margin-top: 10px; }
ul.failing { margin: 0 0 8px; padding-left: 20px; font-size: 14px; } ul.failing a { margin-right: 8px; }
table.metrics td, table.metrics th, table.events td, table.events th { padding: 3px 10px;
  border-bottom: 1px solid var(--line); text-align: right; font-size: 13px; }
table.metrics td:first-child, table.events td:not(:first-child) { text-align: left; }
table.events tr.rejected td { color: var(--fail); }
details summary { cursor: pointer; color: #0969da; margin: 8px 0; }
.none { color: var(--muted); font-style: italic; }
""".replace("CALLER", CALLER).replace("MODEL", MODEL)


def _badge(status: str, text: str | None = None) -> str:
    return f'<span class="badge {escape(status)}">{escape(text or status)}</span>'


def _legend() -> str:
    items = [
        ("var(--pass)", "pass"),
        ("var(--fail)", "fail"),
        ("var(--unknown)", "unknown (evidence cannot exist)"),
        ("#8250df", "manual verdict (automatic one shown beneath)"),
        (CALLER, "caller speech / inbound"),
        (MODEL, "model speech / outbound"),
        (ECHO, "echo"),
        (OVER, "over a threshold"),
    ]
    states = [(colour, state) for state, colour in STATE_COLOURS.items()]
    chips = [f'<span><span class="sw" style="background:{c}"></span>{escape(t)}</span>' for c, t in items]
    chips += [f'<span><span class="sw" style="background:{c}"></span>{escape(t)}</span>' for c, t in states]
    return '<div class="legend">' + "".join(chips) + "</div>"


def _cell(cell: Cell | None) -> str:
    if cell is None:
        return '<td class="unknown">–</td>'
    manual = cell.decided_by == "manual"
    tip = f"{LABELS.get(cell.criterion, cell.criterion)}: {cell.status} — {cell.evidence}"
    inner = SYMBOL.get(cell.status, "?")
    if manual:
        tip += f" | auto {cell.auto_status} — {cell.auto_evidence}"
        inner += f'<span class="auto">manual · auto {SYMBOL.get(cell.auto_status, "?")}</span>'
    cls = f"{cell.status}{' manual' if manual else ''}"
    return f'<td class="{escape(cls)}" data-criterion="{cell.criterion}" title="{escape(tip)}">{inner}</td>'


Links = Mapping[str, str]  # call id -> its call page, relative to this report


def _page_link(c: CallReport, links: Links) -> str:
    href = links.get(c.id)
    return f' <a class="call-page" href="{escape(href)}">call page</a>' if href else ""


def _matrix(report: Report, run: RunReport, links: Links) -> str:
    head = "".join(f'<th title="{escape(LABELS[n])}">{escape(SHORT.get(n, n))}</th>' for n in report.criteria)
    rows = []
    for c in run.calls:
        link = (
            f'<a href="#call-{dom_id(c.id)}">{escape(c.id)}</a>{_page_link(c, links)}'
            f"<br><small>{escape(c.state)}</small>"
        )
        rows.append(
            f'<tr data-call="{escape(c.id)}"><th class="callid">{link}</th>'
            + "".join(_cell(c.cell(n)) for n in report.criteria)
            + "</tr>"
        )
    # of the calls where the criterion could be judged: an unknown (no tunnel offline, no model to load)
    # is not a failure to pass
    totals = "".join(
        f"<td>{run.counts[n]['pass']}/{run.counts[n]['pass'] + run.counts[n]['fail']} pass"
        + (f"<br><small>{run.counts[n]['unknown']} unknown</small>" if run.counts[n]["unknown"] else "")
        + "</td>"
        for n in report.criteria
    )
    return (
        f'<table id="matrix-{dom_id(run.label)}" class="matrix"><thead><tr><th class="callid">call</th>{head}'
        f'</tr></thead><tbody>{"".join(rows)}<tr class="totals"><th class="callid">passed</th>{totals}</tr>'
        "</tbody></table>"
    )


def _failing(report: Report, run: RunReport, links: Links) -> str:
    """The calls grouped by the criterion they fail, most failed first: where to look, without a script."""
    groups = []
    for name in report.criteria:
        failed = [c for c in run.calls if (cell := c.cell(name)) is not None and cell.status == "fail"]
        if failed:
            groups.append((name, failed))
    if not groups:
        return '<p class="none">No call fails a criterion.</p>'
    groups.sort(key=lambda g: -len(g[1]))
    items = []
    for name, failed in groups:
        calls = " ".join(
            f'<a href="{escape(links.get(c.id) or "#call-" + dom_id(c.id))}">{escape(c.id)}</a>'
            for c in failed
        )
        items.append(
            f'<li data-criterion="{escape(name)}"><b>{escape(LABELS.get(name, name))}</b> '
            f"({len(failed)} of {len(run.calls)}): {calls}</li>"
        )
    return f'<ul class="failing" id="failing-{dom_id(run.label)}">{"".join(items)}</ul>'


def _metrics_table(run: RunReport) -> str:
    if not run.summaries:
        return '<p class="none">No metrics recorded in this run.</p>'
    rows = "".join(
        f'<tr><td title="{escape(s.name)}">{escape(metric_label(s.name))}</td><td>{s.n}</td>'
        + "".join(f"<td>{fmt_value(s.name, v)}</td>" for v in (s.p50, s.p95, s.min, s.max))
        + "</tr>"
        for s in run.summaries
    )
    head = "<tr><th>metric</th><th>calls</th><th>p50</th><th>p95</th><th>min</th><th>max</th></tr>"
    return f'<table class="metrics"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def _verdicts(c: CallReport) -> str:
    items = []
    for cell in c.cells:
        label = escape(LABELS.get(cell.criterion, cell.criterion))
        if cell.manual_status is not None:
            items.append(
                f"<li>{_badge(cell.manual_status)} {_badge('manual')} <b>{label}</b>: "
                f"{escape(cell.manual_evidence or '')}<br><span class='sub'>auto {escape(cell.auto_status)}: "
                f"{escape(cell.auto_evidence)}</span></li>"
            )
        else:
            computed = cell.auto_source == "computed" and c.verdict_source == "mixed"
            note = " <span class='sub'>(computed by the report)</span>" if computed else ""
            items.append(
                f"<li>{_badge(cell.auto_status)} <b>{label}</b>: {escape(cell.auto_evidence)}{note}</li>"
            )
    return '<ul class="verdicts">' + "".join(items) + "</ul>"


def _events_table(c: CallReport) -> str:
    rows = "".join(
        f'<tr class="{item.kind}{"" if item.accepted else " rejected"}"><td>{escape(fmt_ms(item.t_ms))}</td>'
        f"<td>{escape(item.kind)}</td><td>{escape(item.label)}</td><td>{escape(item.detail)}</td></tr>"
        for item in c.timeline
    )
    return (
        f"<details><summary>Timeline: {len(c.timeline)} state changes and events</summary>"
        '<table class="events"><thead><tr><th>since created</th><th>kind</th><th>what</th><th>note</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></details>"
    )


def _call_section(report: Report, c: CallReport, links: Links) -> str:
    origin = (
        "the stream started" if c.stream_start_ms is not None else "the call was created; it never streamed"
    )
    passed = sum(1 for cell in c.cells if cell.status == "pass")
    judged = sum(1 for cell in c.cells if cell.status != "unknown")
    unknown = len(c.cells) - judged
    facts = [c.direction or "", f"to {c.to}" if c.to else "", f"backend {c.backend}" if c.backend else ""]
    if c.duration_s is not None:
        facts.append(f"{c.duration_s:.1f} s")
    if c.end_reason:
        facts.append(f"ended: {c.end_reason}")
    state_status = (
        "pass"
        if c.state == "completed"
        else "fail"
        if c.state in ("busy", "no-answer", "failed")
        else "unknown"
    )
    parts = [
        f'<section class="call" id="call-{dom_id(c.id)}" data-call="{escape(c.id)}">',
        f"<h3>Call {escape(c.id)} {_badge(state_status, c.state)}{_page_link(c, links)} "
        f"<small>{passed}/{judged} criteria pass"
        + (f", {unknown} unknown" if unknown else "")
        + "</small></h3>",
        f'<p class="facts">{escape(c.call_sid or "no CallSid")} · {escape(" · ".join(f for f in facts if f))}</p>',
        '<p class="facts">Automatic verdicts computed by this report: none were stored with the call.</p>'
        if c.verdict_source == "computed"
        else "",
        _verdicts(c),
        f"<h4>Timeline and levels on one axis: states, events, speech (s since {origin})</h4>",
        f'<div class="scroll">{timeline_svg(c)}</div>'
        if c.timeline
        else '<p class="none">No timeline recorded.</p>',
    ]
    levels = levels_svg(c)
    bars = latency_bars_svg(c, report.thresholds.response_latency_ms_max)
    if levels or bars:
        parts.append('<div class="plots">')
        parts.append(
            f'<div class="scroll">{levels}</div>' if levels else '<p class="none">No level data.</p>'
        )
        parts.append("<h4>Response latency per turn</h4>")
        parts.append(bars or '<p class="none">No turns measured.</p>')
        parts.append("</div>")
    else:
        parts.append('<p class="none">No audio on this call: no levels or turns to plot.</p>')
    parts += [_events_table(c), "</section>"]
    return "".join(parts)


def _run_section(report: Report, run: RunReport, links: Links) -> str:
    th = report.thresholds
    run_id = dom_id(run.label)
    dists = [
        distribution_svg(
            f"{run_id}-first_audio_heard_ms",
            "First audio heard (ms after stream start), per call",
            run.first_audio_heard_ms(),
            th.first_audio_heard_ms_max,
        ),
        distribution_svg(
            f"{run_id}-response_latency_ms",
            "Response latency (ms), every turn of every call",
            run.response_latencies_ms(),
            th.response_latency_ms_max,
        ),
    ]
    plotted = "".join(f'<div class="scroll">{d}</div>' for d in dists if d)
    plotted = plotted or '<p class="none">No latency measured in this run.</p>'
    return (
        f'<section class="run" id="run-{run_id}"><h2>Run {escape(run.label)} · {len(run.calls)} calls</h2>'
        f"<h4>Checklist</h4>{_matrix(report, run, links)}"
        f"<h4>Failing criteria, most failed first</h4>{_failing(report, run, links)}"
        f"<h4>Latency across calls</h4>{plotted}"
        f"<h4>Metrics across calls</h4>{_metrics_table(run)}</section>"
        + "".join(_call_section(report, c, links) for c in run.calls)
    )


def render_html(report: Report, call_links: Links | None = None) -> str:
    """The whole report as one HTML document; `call_links` (call id -> href) links each call's page."""
    links: Links = call_links or {}
    total = sum(1 for r in report.runs for c in r.calls for cell in c.cells if cell.status == "pass")
    # of the checks that could be judged: an unknown (no tunnel offline, no model to load) is counted apart
    unknown = sum(1 for r in report.runs for c in r.calls for cell in c.cells if cell.status == "unknown")
    cells = sum(len(c.cells) for r in report.runs for c in r.calls) - unknown
    th = report.thresholds
    summary = (
        f"{len(report.runs)} run(s), {report.n_calls} call(s), {total}/{cells} judged checks pass, {unknown} unknown · thresholds: first audio "
        f"≤ {th.first_audio_heard_ms_max:.0f} ms, response p50 ≤ {th.response_latency_ms_max:.0f} ms, "
        f"model load ≤ {th.model_load_s_max:g} s, ≥ {th.min_turns} turns"
    )
    body = "".join(_run_section(report, r, links) for r in report.runs) or '<p class="none">No calls.</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(report.title)}</h1><p>{escape(summary)}</p></header>"
        f"<main>{_legend()}{body}</main></body></html>\n"
    )
