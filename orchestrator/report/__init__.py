"""The test-run report: one entry point for building it and rendering it in every format.

    report = build_report(docs, run_label)          # docs as `orchestrator show CALL --json` prints them
    render_table(report) | render_markdown(report) | render_json(report) | render_html(report)

The values live in `.model`, the text renderers in `.text`, the HTML page in `.html` (with
its SVG plots in `.svg`). Everything here is pure: it returns strings and never writes files.
"""

from __future__ import annotations

import dataclasses
import json

from orchestrator.report.html import render_html
from orchestrator.report.model import (
    SUMMARY_METRICS,
    CallReport,
    Cell,
    MetricSummary,
    Report,
    RunReport,
    StateSpan,
    TimelineItem,
    build_report,
)
from orchestrator.report.text import json_clean, render_markdown, render_table

FORMATS = ("table", "md", "json", "html")

__all__ = [
    "FORMATS",
    "SUMMARY_METRICS",
    "CallReport",
    "Cell",
    "MetricSummary",
    "Report",
    "RunReport",
    "StateSpan",
    "TimelineItem",
    "build_report",
    "render",
    "render_html",
    "render_json",
    "render_markdown",
    "render_table",
]


def render_json(report: Report) -> str:
    """One JSON document: the whole report, thresholds included."""
    data = dataclasses.asdict(report)
    for run in data["runs"]:
        for call in run["calls"]:
            call["from"] = call.pop("from_")
    data["n_calls"] = report.n_calls
    return json.dumps(json_clean(data), indent=2, ensure_ascii=False, default=str) + "\n"


def render(report: Report, fmt: str) -> str:
    """Render in one of FORMATS; raises ValueError for another."""
    renderers = {"table": render_table, "md": render_markdown, "json": render_json, "html": render_html}
    if fmt not in renderers:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](report)
