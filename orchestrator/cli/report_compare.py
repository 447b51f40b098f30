"""`orchestrator report --compare BASELINE_RUN RUN`: two recorded runs compared, with an exit code for CI.

Loads each run's calls from the store, builds each run's report values (orchestrator.report.model)
and judges the difference (orchestrator.report.compare). Exit codes: 0 compared (no regression, or
no `--fail-on-regression`), 1 a regression with `--fail-on-regression`, 2 an unknown run label, a
malformed `--margin` or a conflicting option.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestrator import exits
from orchestrator.cli.common import write_out
from orchestrator.redact import personal_data_masked
from orchestrator.report import build_report
from orchestrator.report.compare import Comparison, RunSample, compare, parse_margin, sample_of
from orchestrator.report.compare_html import render_compare_html
from orchestrator.report.compare_text import (
    render_compare_json,
    render_compare_markdown,
    render_compare_table,
)
from orchestrator.report.directions import Margin
from orchestrator.service import CallService
from orchestrator.thresholds import Thresholds


def run_labels(service: CallService) -> list[str]:
    return service.store.run_labels()


def parse_margins(values: tuple[str, ...]) -> dict[str, Margin]:
    out: dict[str, Margin] = {}
    for text in values:
        try:
            key, margin = parse_margin(text)
        except ValueError as exc:
            raise exits.UserError(str(exc)) from None
        out[key] = margin
    return out


def load_sample(service: CallService, label: str, *, limit: int, redact: bool) -> RunSample:
    rows = service.store.list_calls(run=label, limit=limit)
    docs = [service.document(r["id"]) for r in reversed(rows)]
    if redact:
        docs = [personal_data_masked(d) for d in docs]
    runs = build_report(docs, label, Thresholds.from_env(os.environ)).runs
    return sample_of(runs[0]) if runs else RunSample(label, 0, {}, {})


def render_comparison(cmp: Comparison, fmt: str, baseline: RunSample, run: RunSample) -> str:
    if fmt == "html":
        return render_compare_html(cmp, baseline, run)
    renderers = {"table": render_compare_table, "md": render_compare_markdown, "json": render_compare_json}
    return renderers[fmt](cmp)


def run_compare(
    service: CallService,
    labels: tuple[str, str],
    *,
    fmt: str,
    out: Path | None,
    limit: int,
    margins: tuple[str, ...],
    alpha: float,
    fail_on_regression: bool,
    redact: bool,
) -> None:
    """Compare, print or write, and leave with exit 1 on a regression when asked to."""
    known = run_labels(service)
    for label in labels:
        if label not in known:
            listed = ", ".join(known) if known else "none yet (`orchestrator scenario --run LABEL` makes one)"
            raise exits.UserError(f"no run labelled {label!r}; known runs: {listed}")
    overrides = parse_margins(margins)
    base_label, run_label = labels
    baseline = load_sample(service, base_label, limit=limit, redact=redact)
    run = load_sample(service, run_label, limit=limit, redact=redact)
    try:
        cmp = compare(baseline, run, alpha=alpha, margins=overrides)
    except ValueError as exc:
        raise exits.UserError(str(exc)) from None
    text = render_comparison(cmp, fmt, baseline, run)
    if out:
        write_out(out, text)
        click.echo(f"wrote {out} ({cmp.run_calls} call(s) against {cmp.baseline_calls})")
    else:
        click.echo(text, nl=False)
    if fail_on_regression and cmp.regressions:
        click.echo(f"regression against {base_label}: {', '.join(cmp.regressions)}", err=True)
        click.get_current_context().exit(exits.OUTCOME)
