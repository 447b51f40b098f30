"""The HTML run comparison: one self-contained page in the look of the test-run report (its CSS reused),
no script, nothing fetched.

Layout: a header (run against baseline, the regressions), then section#compare-metrics with
table#compare-metrics-table (one tr[data-metric][data-verdict] per metric: both distributions, the
difference with its interval, p, verdict), table#compare-criteria (tr[data-criterion][data-verdict]),
and, when the per-call values are given, a strip plot per judged metric with a better direction
(svg#cmp-<metric>.compare-strip: baseline and run lanes, one dot per call, medians marked).

Pure string building: never writes the file, never reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from orchestrator.report.compare import NOT_ENOUGH, Comparison, MetricComparison, RunSample
from orchestrator.report.compare_text import ARROW, METRIC_HEAD, criterion_row, intro_lines, metric_row
from orchestrator.report.html import CSS
from orchestrator.report.model import percentile
from orchestrator.report.svg import CALLER, GRID, INK, MODEL, dom_id, nice_ticks
from orchestrator.report.text import fmt_value, metric_label

__all__ = ["render_compare_html"]

_CSS = """
table.compare td, table.compare th { padding: 3px 9px; border-bottom: 1px solid var(--line); text-align: right;
  font-size: 13px; white-space: nowrap; }
table.compare td:first-child, table.compare th:first-child, table.compare td.verdict,
  table.compare th:last-child { text-align: left; }
td.verdict { font-weight: 600; }
tr[data-verdict="regression"] td.verdict { color: #fff; background: var(--fail); }
tr[data-verdict="worse"] td.verdict { color: var(--fail); }
tr[data-verdict="better"] td.verdict { color: var(--pass); }
tr[data-verdict="changed"] td.verdict { color: #8250df; }
tr[data-verdict="not enough calls"] td { color: var(--muted); }
.verdict-none { color: var(--pass); font-weight: 600; } .verdict-some { color: var(--fail); font-weight: 600; }
.strips { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
"""

_W, _LEFT, _RIGHT = 600, 90, 16


def _t(v: float) -> str:
    return f"{v:.1f}"


def _table(cls: str, id_: str, head: list[str], rows: list[tuple[str, str, list[str]]]) -> str:
    """rows: (data attribute name, value, cells); the last cell is the verdict."""
    thead = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        f'<tr data-{attr}="{escape(key)}" data-verdict="{escape(cells[-1])}">'
        + "".join(f"<td>{escape(x)}</td>" for x in cells[:-1])
        + f'<td class="verdict">{escape(cells[-1])}</td></tr>'
        for attr, key, cells in rows
    )
    return f'<table id="{id_}" class="{cls}"><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>'


def strip_svg(m: MetricComparison, baseline: Sequence[float], run: Sequence[float]) -> str:
    """Both runs' per-call values of one metric on one axis, a lane each, medians as bars."""
    if not baseline or not run:
        return ""
    low, high = min(*baseline, *run), max(*baseline, *run)
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 1.0)
    low, high = low - pad, high + pad

    def sx(v: float) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * (v - low) / (high - low)

    title = f"{metric_label(m.name)} {ARROW[m.direction]}: {m.verdict}"
    body = [f'<text x="{_LEFT}" y="14" class="plot-title" fill="{INK}">{escape(title)}</text>']
    for tick in nice_ticks(low, high, 5):
        x = _t(sx(tick))
        body.append(f'<line x1="{x}" y1="24" x2="{x}" y2="92" stroke="{GRID}"/>')
        body.append(
            f'<text x="{x}" y="106" text-anchor="middle" class="tick">{escape(fmt_value(m.name, tick))}</text>'
        )
    for lane, (label, values, colour) in enumerate((("baseline", baseline, CALLER), ("run", run, MODEL))):
        y = 40 + lane * 34
        body.append(f'<text x="{_LEFT - 8}" y="{y + 4}" text-anchor="end" class="lane">{label}</text>')
        for i, v in enumerate(values):
            jitter = ((i * 7919) % 13 - 6) * 1.2  # spread overlapping dots, deterministically
            body.append(
                f'<circle cx="{_t(sx(v))}" cy="{_t(y + jitter)}" r="4" fill="{colour}" fill-opacity="0.6">'
                f"<title>{escape(label)}: {escape(fmt_value(m.name, v))}</title></circle>"
            )
        med = _t(sx(percentile(values, 50)))
        body.append(
            f'<line class="median" x1="{med}" y1="{y - 13}" x2="{med}" y2="{y + 13}" stroke="{INK}" stroke-width="3"/>'
        )
    return (
        f'<svg id="cmp-{dom_id(m.name)}" class="compare-strip" viewBox="0 0 {_W} 114" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def render_compare_html(
    cmp: Comparison, baseline: RunSample | None = None, run: RunSample | None = None
) -> str:
    """The comparison as one HTML document; with the samples, a strip plot per judged directed metric."""
    title = f"Run {cmp.run} against baseline {cmp.baseline}"
    intro = intro_lines(cmp)
    found = "verdict-some" if cmp.regressions else "verdict-none"
    metric_rows = [("metric", m.name, metric_row(m)) for m in cmp.metrics]
    metrics = (
        _table(
            "compare",
            "compare-metrics-table",
            METRIC_HEAD,
            metric_rows,
        )
        if cmp.metrics
        else '<p class="none">No metrics recorded in either run.</p>'
    )
    criteria = _table(
        "compare",
        "compare-criteria",
        ["criterion", "baseline pass", "run pass", "p", "verdict"],
        [("criterion", c.criterion, criterion_row(c)) for c in cmp.criteria],
    )
    strips = ""
    if baseline is not None and run is not None:
        plots = [
            strip_svg(m, baseline.metrics.get(m.name, ()), run.metrics.get(m.name, ()))
            for m in cmp.metrics
            if m.direction != "either" and m.verdict != NOT_ENOUGH
        ]
        strips = '<h4>Per-call values</h4><div class="strips">' + "".join(p for p in plots if p) + "</div>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(intro[0])}</p></header><main>"
        f'<section class="run" id="compare-summary"><p class="{found}">{escape(intro[3])}</p>'
        + f'<p class="facts">{escape(intro[1])}</p><p class="facts">{escape(intro[2])}</p></section>'
        f'<section class="run" id="compare-metrics"><h2>Metrics</h2>'
        f'<p class="facts">{escape(ARROW["lower"])} lower is better, {escape(ARROW["higher"])} higher is better; '
        "unmarked metrics have no better direction: a change there is never a regression.</p>"
        f"{metrics}{strips}</section>"
        f'<section class="run" id="compare-criteria-section"><h2>Criteria</h2>{criteria}</section>'
        "</main></body></html>\n"
    )
