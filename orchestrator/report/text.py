"""Text renderings of the test-run report: a terminal table and Markdown.

The checklist reads like the seed report's: one row per criterion, one column per call. A manual
verdict is marked `*` and wins the cell; the automatic one stays in the per-call detail.

Pure string building: never prints, never reads files.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.report.model import CallReport, Cell, MetricSummary, Report, RunReport
from orchestrator.textwidth import wrap

LABELS: dict[str, str] = {
    "model_loads_quickly": "Model loads quickly",
    "server_listening": "Server listening",
    "tunnel_exposed": "Tunnel exposes server",
    "call_initiated": "Call initiated",
    "answered_ivr_heard": "Answered, IVR heard",
    "websocket_connected": "WebSocket connected",
    "caller_hears_model": "Caller hears model",
    "model_hears_caller": "Model hears caller",
    "conversation_interactive": "Conversation interactive",
    "audio_quality_ok": "Audio quality OK",
    "no_latency_echo_issues": "No latency / echo issues",
}
_WORD = {"pass": "pass", "fail": "FAIL", "unknown": "?"}
_EMOJI = {"pass": "✅", "fail": "❌", "unknown": "❔"}
_CALLS_PER_BLOCK = 6


def fmt_value(name: str, value: float) -> str:
    if name.endswith("_ratio"):
        return f"{value * 100:.2f} %"
    if name.endswith("_db") or name.endswith("_dbfs") or name.endswith("_s"):
        return f"{value:.1f}"
    if abs(value) < 10 and value != round(value):  # 0.8 ms of jitter is not "1"
        return f"{value:.1f}"
    return f"{value:.0f}"


_UNITS = (("_ms", "ms"), ("_dbfs", "dBFS"), ("_db", "dB"), ("_s", "s"), ("_ratio", "%"))


def metric_label(name: str) -> str:
    """A metric's name as a person reads it, unit last: response_latency_ms_p50 -> response latency p50 (ms)."""
    words, unit = name, ""
    for suffix, u in _UNITS:
        head, sep, tail = words.rpartition(suffix)
        if sep and (tail == "" or tail.startswith("_")):
            words, unit = head + tail, u
            break
    label = words.strip("_").replace("_", " ")
    return f"{label} ({unit})" if unit else label


def fmt_ms(ms: float) -> str:
    return f"{ms / 1000:+.3f} s" if abs(ms) >= 10_000 else f"{ms:+.0f} ms"


def _mark(cell: Cell | None, emoji: bool = False) -> str:
    if cell is None:
        return "-"
    text = (_EMOJI if emoji else _WORD).get(cell.status, cell.status)
    return text + ("*" if cell.decided_by == "manual" else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def _short(call_id: str) -> str:
    return call_id if len(call_id) <= 12 else call_id[:11] + "…"


def _matrix_rows(report: Report, calls: tuple[CallReport, ...], emoji: bool) -> list[list[str]]:
    rows = [[LABELS.get(n, n)] + [_mark(c.cell(n), emoji) for c in calls] for n in report.criteria]
    # of the criteria that could be judged: an unknown (evidence that cannot exist) is not a failure
    passed = [
        (
            sum(1 for cell in c.cells if cell.status == "pass"),
            sum(1 for cell in c.cells if cell.status != "unknown"),
        )
        for c in calls
    ]
    rows.append(["passed"] + [f"{p}/{j}" for p, j in passed])
    return rows


def _summary_rows(summaries: tuple[MetricSummary, ...]) -> list[list[str]]:
    return [
        [metric_label(s.name), str(s.n), *(fmt_value(s.name, v) for v in (s.p50, s.p95, s.min, s.max))]
        for s in summaries
    ]


def _call_head(c: CallReport) -> str:
    bits = [c.direction or "?", f"to {c.to}" if c.to else "", c.state]
    if c.duration_s is not None:
        bits.append(f"{c.duration_s:.1f} s")
    if c.backend:
        bits.append(f"backend {c.backend}")
    if c.end_reason:
        bits.append(f"ended: {c.end_reason}")
    return f"{c.id} ({c.call_sid or 'no CallSid'}): " + ", ".join(b for b in bits if b)


def _verdict_lines(c: CallReport, emoji: bool) -> list[str]:
    lines = (
        ["(automatic verdicts computed by this report: none stored with the call)"]
        if c.verdict_source == "computed"
        else []
    )
    for cell in c.cells:
        sym = (
            (_EMOJI if emoji else _WORD)[cell.auto_status] if cell.auto_status in _WORD else cell.auto_status
        )
        auto = f"{sym} {cell.criterion}: {cell.auto_evidence}"
        if cell.auto_source == "computed" and c.verdict_source == "mixed":
            auto += " (computed by the report)"
        if cell.manual_status is not None:
            msym = (_EMOJI if emoji else _WORD).get(cell.manual_status, cell.manual_status)
            lines.append(f"{msym} {cell.criterion} [manual]: {cell.manual_evidence}")
            auto = "  auto: " + auto
        lines.append(auto)
    return lines


def _timeline_lines(c: CallReport) -> list[str]:
    out = []
    for item in c.timeline:
        tail = f" ({item.detail})" if item.detail else ""
        out.append(f"{fmt_ms(item.t_ms):>12}  {item.kind:<5}  {item.label}{tail}")
    return out or ["(no timeline recorded)"]


def _blocks(run: RunReport) -> list[tuple[CallReport, ...]]:
    return [run.calls[i : i + _CALLS_PER_BLOCK] for i in range(0, len(run.calls), _CALLS_PER_BLOCK)]


def render_table(report: Report) -> str:
    """A plain-text report for a terminal."""
    out = [report.title, "=" * len(report.title)]
    if not report.runs:
        return "\n".join([*out, "", "No calls."]) + "\n"
    for run in report.runs:
        out += ["", f"Run {run.label}: {len(run.calls)} calls", ""]
        out.append("Checklist (pass / FAIL / ? unknown; * = manual verdict)")
        for block in _blocks(run):
            out += _table(["criterion", *(_short(c.id) for c in block)], _matrix_rows(report, block, False))
            out.append("")
        if run.summaries:
            out.append("Metrics across calls")
            out += _table(["metric", "n", "p50", "p95", "min", "max"], _summary_rows(run.summaries))
        for c in run.calls:
            out += ["", *wrap(_call_head(c), "Call ", "  ")]
            for line in _verdict_lines(c, False):
                out += wrap(line, "  ", "      ")
            out += ["  timeline:"] + ["  " + line for line in _timeline_lines(c)]
    return "\n".join(out) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]


def json_clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (in the report's and the comparison's JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    return value


def render_markdown(report: Report) -> str:
    out = [f"# {report.title}"]
    if not report.runs:
        return "\n".join([*out, "", "No calls."]) + "\n"
    for run in report.runs:
        out += [
            "",
            f"## Run {run.label} ({len(run.calls)} calls)",
            "",
            "✅ pass · ❌ fail · ❔ unknown · `*` manual",
        ]
        for block in _blocks(run):
            out += [
                "",
                *_md_table(["Criterion", *(f"`{c.id}`" for c in block)], _matrix_rows(report, block, True)),
            ]
        if run.summaries:
            out += ["", "### Metrics across calls", ""]
            out += _md_table(["metric", "n", "p50", "p95", "min", "max"], _summary_rows(run.summaries))
        for c in run.calls:
            out += ["", f"### Call {_call_head(c)}", ""]
            out += [f"- {line}" for line in _verdict_lines(c, True)]
            out += ["", "```", *_timeline_lines(c), "```"]
    return "\n".join(out) + "\n"
