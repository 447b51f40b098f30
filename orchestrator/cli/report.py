"""`orchestrator report`: the test-run report from the store, as a table, Markdown, JSON or HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.cli.common import check_out, since_option, write_out
from orchestrator.redact import personal_data_masked
from orchestrator.report import FORMATS, build_report, render
from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.thresholds import Thresholds


def load_docs(
    service: CallService, *, run: str | None, since: str | None, limit: int, calls: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    if calls:
        return [service.document(ref) for ref in calls]
    rows = service.store.list_calls(run=run, since=since, limit=limit)
    return [service.document(r["id"]) for r in reversed(rows)]  # oldest first reads like a log


@click.command(epilog=exits.epilog(unavailable=None))
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
) -> None:
    """Report test runs: the checklist as a pass/fail matrix, metric summaries, per-call timelines.

    Example: orchestrator report --run nightly --format html --redact --out nightly.html
    """
    if out is not None:
        check_out(out)
    settings = Settings.from_env().with_overrides(db=db)
    service = CallService(Store(settings.db, create=False))
    docs = load_docs(service, run=run, since=since, limit=limit, calls=calls)
    if redact:
        docs = [personal_data_masked(d) for d in docs]
    text = render(build_report(docs, run, Thresholds.from_env(os.environ)), "json" if as_json else fmt)
    if out:
        write_out(out, text)
        click.echo(f"wrote {out} ({len(docs)} call(s))")
    else:
        click.echo(text)
