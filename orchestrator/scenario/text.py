"""A campaign as a person reads it: one progress line per settled call, then each scenario's summary.

Pure: builds strings from `CallResult`s and `summary.summarise` documents; prints nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.scenario.summary import CallResult

# the figures a progress line shows, when the call has them (name, label)
_PROGRESS = (
    ("first_audio_heard_ms", "first audio heard"),
    ("response_latency_ms_p50", "latency p50"),
    ("turns", "turns"),
    ("barge_in_stop_ms", "barge-in stop"),
)


def figure(name: str, value: float) -> str:
    """A metric's value with its unit as its name says it (ms, s, dB), a count or a flag otherwise."""
    if name.endswith("_ms") or "_ms_" in name:
        return f"{value:.1f} ms" if abs(value) < 10 else f"{value:.0f} ms"
    if name.endswith("_s"):
        return f"{value:.2f} s"
    if name.endswith(("_db", "_dbfs")):
        return f"{value:.1f} dB" + ("FS" if name.endswith("_dbfs") else "")
    if name.endswith("_ratio"):
        return f"{value * 100:.2f} %"
    return f"{value:g}"


def progress_line(r: CallResult, done: int, total: int) -> str:
    head = f"[{done}/{total}] {r.scenario} #{r.repeat}  {r.call_id or '-'}  {r.state}"
    if r.error is not None:
        return f"{head}  no result: {r.error}"
    figures = ", ".join(f"{label} {figure(n, r.metrics[n])}" for n, label in _PROGRESS if n in r.metrics)
    missed = [o.label for o in r.outcomes if not o.met]
    tail = f"  missed: {'; '.join(missed)}" if missed else ""
    return f"{head}  expectations {r.met}/{len(r.outcomes)}" + (f"  {figures}" if figures else "") + tail


def _table(rows: list[list[str]], headers: list[str], indent: str = "  ") -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=False)]
    right = [i > 0 for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=False)]
        return (indent + "  ".join(cells)).rstrip()

    return [fmt(headers), *(fmt(r) for r in rows)]


def _rate(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} %" if n else "-"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One scenario's summary block."""
    n = doc["calls"]
    lines = [f"{doc['scenario']} ({doc['path']}): {n} call(s), {doc['calls_ok']} met every expectation"]
    if doc["expectations"]:
        rows = [
            [e["expectation"], f"{e['met']}/{e['calls']}", _rate(e["met"], e["calls"])]
            for e in doc["expectations"]
        ]
        lines += _table(rows, ["expectation", "met", "rate"])
    if doc["criteria"]:
        # the pass rate counts the calls where the criterion could be judged (unknown: no evidence)
        rows = [
            [name, str(c["pass"]), str(c["fail"]), str(c["unknown"]), _rate(c["pass"], c["pass"] + c["fail"])]
            for name, c in doc["criteria"].items()
        ]
        lines += ["", *_table(rows, ["criterion", "pass", "fail", "unknown", "pass rate (judged)"])]
    if doc["metrics"]:
        rows = []
        for name, s in doc["metrics"].items():
            low, high = s["median_ci"]
            level = s["ci_level"]
            ci = f"[{figure(name, low)}, {figure(name, high)}] ({100 * level:.0f} %)" if s["n"] > 1 else "-"
            rows.append([name, str(s["n"]), figure(name, s["p50"]), figure(name, s["p95"]), ci])
        lines += ["", *_table(rows, ["metric", "n", "p50", "p95", "median CI (level)"])]
    return lines


def campaign_text(docs: Sequence[dict[str, Any]], run: str, db: str) -> str:
    """Every scenario's summary, then one line: were all expectations met, and where the calls are."""
    lines: list[str] = []
    for doc in docs:
        lines += [*summary_lines(doc), ""]
    calls = sum(d["calls"] for d in docs)
    bad = sum(d["calls"] - d["calls_ok"] for d in docs)
    verdict = (
        f"all expectations met on {calls} call(s)"
        if bad == 0
        else f"expectations NOT met on {bad} of {calls} call(s)"
    )
    lines.append(f"run {run}: {verdict}")
    lines.append(f"the calls: orchestrator report --db {db} --run {run}")
    return "\n".join(lines)
