"""Text renderings of a run comparison (`orchestrator.report.compare`): a terminal table, Markdown, JSON.

Per metric: both distributions (n, p50, p95), the difference of medians (run - baseline) with its
bootstrap interval, the rank test's p and the verdict; per criterion both pass rates, Fisher's p and
the verdict. Metrics with a better direction come first (marked ↓ lower is better, ↑ higher); the
others follow, where a change is reported and never called a regression.

Pure string building: never prints, never reads files.
"""

from __future__ import annotations

import dataclasses
import json

from orchestrator.report.compare import Comparison, CriterionComparison, MetricComparison
from orchestrator.report.text import LABELS, _md_table, fmt_value, json_clean, metric_label

__all__ = [
    "ARROW",
    "METRIC_HEAD",
    "criterion_row",
    "fmt_p",
    "fmt_rate",
    "intro_lines",
    "metric_row",
    "render_compare_json",
    "render_compare_markdown",
    "render_compare_table",
]

ARROW = {"lower": "↓", "higher": "↑", "either": ""}
METRIC_HEAD = ["metric", "", "base n", "base p50", "base p95", "run n", "run p50", "run p95"]
METRIC_HEAD += ["difference [CI]", "p", "verdict"]
CRITERION_HEAD = ["criterion", "baseline pass", "run pass", "p", "verdict"]


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def fmt_rate(passed: int, judged: int) -> str:
    return f"{passed}/{judged} ({passed / judged * 100:.0f} %)" if judged else "0/0"


def _value(name: str, v: float | None) -> str:
    return "-" if v is None else fmt_value(name, v)


def _signed(name: str, v: float) -> str:
    return ("+" if v > 0 else "") + fmt_value(name, v)


def fmt_diff(m: MetricComparison) -> str:
    if m.diff is None or m.ci_low is None or m.ci_high is None:
        return "-"
    return f"{_signed(m.name, m.diff)} [{_signed(m.name, m.ci_low)}, {_signed(m.name, m.ci_high)}]"


def metric_row(m: MetricComparison) -> list[str]:
    b, r = m.baseline, m.run
    return [
        metric_label(m.name),
        ARROW[m.direction],
        str(b.n),
        _value(m.name, b.p50),
        _value(m.name, b.p95),
        str(r.n),
        _value(m.name, r.p50),
        _value(m.name, r.p95),
        fmt_diff(m),
        fmt_p(m.p_value),
        m.verdict,
    ]


def criterion_row(c: CriterionComparison) -> list[str]:
    return [
        LABELS.get(c.criterion, c.criterion),
        fmt_rate(c.baseline_pass, c.baseline_judged),
        fmt_rate(c.run_pass, c.run_judged),
        fmt_p(c.p_value),
        c.verdict,
    ]


def intro_lines(cmp: Comparison) -> list[str]:
    """What was compared and how, the margins, and the regressions found: the same in every format."""
    regressions = [
        metric_label(n) if any(m.name == n for m in cmp.metrics) else LABELS.get(n, n)
        for n in cmp.regressions
    ]
    return [
        f"{cmp.run_calls} call(s) in {cmp.run} against {cmp.baseline_calls} in {cmp.baseline}.",
        f"Difference of medians (run - baseline) with a {cmp.confidence * 100:g} % bootstrap interval "
        f"({cmp.n_boot} resamples, seed {cmp.seed}); p: Mann-Whitney U, two-sided; pass rates among the "
        f"calls each criterion could be judged on, p: Fisher's exact test; significant below {cmp.alpha:g}.",
        "A regression is a significant worsening past the margin ("
        + "; ".join(f"{k}: {v}" for k, v in cmp.margins.items())
        + ")"
        + f"; a pass rate down by more than {cmp.pass_rate_margin * 100:g} points.",
        f"Regressions ({len(regressions)}): {', '.join(regressions)}"
        if regressions
        else "Regressions: none.",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, len(header) - 1) else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    return [line.rstrip() for line in lines]


def _parts(cmp: Comparison) -> tuple[list[MetricComparison], list[MetricComparison]]:
    directed = [m for m in cmp.metrics if m.direction != "either"]
    return directed, [m for m in cmp.metrics if m.direction == "either"]


def render_compare_table(cmp: Comparison) -> str:
    title = f"Run {cmp.run} against baseline {cmp.baseline}"
    out = [title, "=" * len(title), "", *intro_lines(cmp)]
    directed, other = _parts(cmp)
    if not cmp.metrics:
        out += ["", "No metrics recorded in either run."]
    if directed:
        out += ["", "Metrics (↓ lower is better, ↑ higher is better)"]
        out += _table(METRIC_HEAD, [metric_row(m) for m in directed])
    if other:
        out += ["", "Other metrics (no better direction: a change is never a regression)"]
        out += _table(METRIC_HEAD, [metric_row(m) for m in other])
    out += ["", "Criteria (pass rate among the calls each could be judged on)"]
    out += _table(CRITERION_HEAD, [criterion_row(c) for c in cmp.criteria])
    return "\n".join(out) + "\n"


def render_compare_markdown(cmp: Comparison) -> str:
    out = [
        f"# Run {cmp.run} against baseline {cmp.baseline}",
        "",
        *(f"{line}  " for line in intro_lines(cmp)),
    ]
    directed, other = _parts(cmp)
    if directed:
        out += ["", "## Metrics (↓ lower is better, ↑ higher is better)", ""]
        out += _md_table(METRIC_HEAD, [_bold_verdict(metric_row(m)) for m in directed])
    if other:
        out += ["", "## Other metrics (no better direction: a change is never a regression)", ""]
        out += _md_table(METRIC_HEAD, [metric_row(m) for m in other])
    out += ["", "## Criteria", ""]
    out += _md_table(CRITERION_HEAD, [_bold_verdict(criterion_row(c)) for c in cmp.criteria])
    return "\n".join(out) + "\n"


def _bold_verdict(row: list[str]) -> list[str]:
    return [*row[:-1], f"**{row[-1]}**"] if row[-1] == "regression" else row


def render_compare_json(cmp: Comparison) -> str:
    """One JSON document: every metric and criterion judged, the settings, and the regressions."""
    data = dataclasses.asdict(cmp)
    for c, raw in zip(cmp.criteria, data["criteria"], strict=True):
        raw["baseline_rate"], raw["run_rate"] = c.baseline_rate, c.run_rate
    data["regressions"] = list(cmp.regressions)
    return json.dumps(json_clean(data), indent=2, ensure_ascii=False) + "\n"
