"""`orchestrator report`: the test-run report from the store, as a table, Markdown, JSON or HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.cli.common import check_out, since_option, write_out
from orchestrator.cli.report_pages import pages_dir, write_call_pages
from orchestrator.redact import personal_data_masked
from orchestrator.report import FORMATS, build_report, render, render_html
from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.stores import open_store
from orchestrator.thresholds import Thresholds


def load_docs(
    service: CallService, *, run: str | None, since: str | None, limit: int, calls: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    if calls:
        return [service.document(ref) for ref in calls]
    rows = service.store.list_calls(run=run, since=since, limit=limit)
    return [service.document(r["id"]) for r in reversed(rows)]  # oldest first reads like a log


@click.command(
    epilog=exits.epilog(
        outcome="with --fail-on-regression: a regression against the baseline run", unavailable=None
    )
)
@click.option("--run", help="Only this run label.")
@since_option
@click.option(
    "--call",
    "calls",
    multiple=True,
    help="Only these calls (id, CallSid or the start of either); repeatable.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=200, show_default=True, help="At most this many calls."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for a terminal, md for a ticket, json for scripts, html for a page with plots.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout."
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file."
)
@click.option(
    "--redact",
    is_flag=True,
    help="Also mask phone numbers written inside evidence and reasons, and the caller's name and place "
    "(numbers in the call header are always masked in reports): for a report shared elsewhere.",
)
@click.option(
    "--compare",
    nargs=2,
    metavar="BASELINE_RUN RUN",
    default=None,
    help="Compare RUN against BASELINE_RUN (run labels): per metric both distributions, the difference of "
    "medians with a bootstrap interval and a rank test; per criterion the pass rates and an exact test.",
)
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help="With --compare: exit 1 when a metric or criterion regressed (significant and past its margin).",
)
@click.option(
    "--margin",
    "margins",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --compare: the smallest difference of medians that counts, per unit (ms, s, dB, dBFS, ratio, "
    "count, bool) or metric: ms=80, response_latency_ms_p50=100, ms=50,10% (whichever is larger); repeatable. "
    "Default ms=50,10%.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="With --compare: the significance level of the rank and exact tests.",
)
def report(
    run: str | None,
    since: str | None,
    calls: tuple[str, ...],
    limit: int,
    fmt: str,
    out: Path | None,
    as_json: bool,
    db: Path | None,
    redact: bool,
    compare: tuple[str, str] | None,
    fail_on_regression: bool,
    margins: tuple[str, ...],
    alpha: float,
) -> None:
    """Report test runs: the checklist as a pass/fail matrix, metric summaries, per-call timelines.

    With --compare BASELINE_RUN RUN: one run against a baseline run, judged metric by metric and
    criterion by criterion.

    Example: orchestrator report --run nightly --format html --redact --out nightly.html

    Example: orchestrator report --compare nightly-1 nightly-2 --fail-on-regression
    """
    if out is not None:
        check_out(out)
    if not compare and (fail_on_regression or margins or alpha != 0.05):
        raise exits.UserError("--fail-on-regression, --margin and --alpha go with --compare BASELINE_RUN RUN")
    if compare and (run or calls or since):
        raise exits.UserError("--compare takes the two run labels itself: drop --run, --call and --since")
    settings = Settings.from_env().with_overrides(db=db)
    service = CallService(open_store(settings.db, create=False))
    if compare:
        from orchestrator.cli.report_compare import run_compare  # numpy and scipy: only for a comparison

        run_compare(
            service,
            compare,
            fmt="json" if as_json else fmt,
            out=out,
            limit=limit,
            margins=margins,
            alpha=alpha,
            fail_on_regression=fail_on_regression,
            redact=redact,
        )
        return
    docs = load_docs(service, run=run, since=since, limit=limit, calls=calls)
    if redact:
        docs = [personal_data_masked(d) for d in docs]
    built = build_report(docs, run, Thresholds.from_env(os.environ))
    with_pages = out is not None and fmt == "html" and not as_json
    if out is not None and with_pages:  # the call pages beside the run report, which links them
        links = write_call_pages(docs, built, out, with_audio=not redact)
        text = render_html(built, call_links=links)
    else:
        text = render(built, "json" if as_json else fmt)
    if out:
        write_out(out, text)
        pages = f", call pages in {pages_dir(out)}" if with_pages else ""
        click.echo(f"wrote {out} ({len(docs)} call(s){pages})")
    else:
        click.echo(text)
