"""`orchestrator call` and `orchestrator hangup`: place and end calls through Twilio's REST API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator import exits
from orchestrator.bootstrap import existing_service, open_service, place, require_server
from orchestrator.errors import CarrierError, OrchestratorError
from orchestrator.lifecycle import TERMINAL_STATES
from orchestrator.settings import Settings, check_e164, mask_number
from orchestrator.twilio_rest import hang_up, make_client

if TYPE_CHECKING:
    from orchestrator.stores import AnyStore

__all__ = ["call", "hangup", "place", "wait_for_end"]  # place: re-exported for the benchmarks


def wait_for_end(
    store: AnyStore,
    call_id: str,
    timeout_s: float,
    progress: Callable[[dict[str, Any], float], None] | None = None,
) -> dict[str, Any]:
    """Poll the store until the call is over (or `timeout_s`); `progress(row, elapsed_s)` on each new state."""
    started = time.monotonic()
    seen = None
    while True:
        row = store.get_call(call_id)
        if progress is not None and row["state"] != seen:
            seen = row["state"]
            progress(row, time.monotonic() - started)
        if row["state"] in TERMINAL_STATES or time.monotonic() - started > timeout_s:
            return row
        time.sleep(0.25)


def _progress_line(row: dict[str, Any], elapsed_s: float) -> None:
    click.echo(
        f"  {elapsed_s:6.1f} s  {row['state']}" + (f" ({row['end_reason']})" if row["end_reason"] else ""),
        err=True,
    )


CALL_EXITS = exits.epilog(
    outcome="with --wait: the call ended busy, no-answer, failed or canceled, or was "
    "still going when the wait ran out",
    unavailable="the carrier did not answer or refused the call (kept as a failed call with the reason)",
)


@click.command(epilog=CALL_EXITS)
@click.argument("to")
@click.option("--from", "from_", help="Caller id (E.164); default $TWILIO_FROM_NUMBER.")
@click.option("--run", help="Label grouping this call with others in reports (e.g. nightly).")
@click.option("--say", help="Greeting spoken before the stream connects (default $GREETING). '' for none.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.IntRange(min=1, max=600),
    default=30,
    show_default=True,
    help="Seconds to let it ring.",
)
@click.option("--record", is_flag=True, help="Ask Twilio to record the call (dual channel).")
@click.option(
    "--wait/--no-wait",
    default=False,
    help="Wait until the call ends, printing each state change on stderr, then its final state.",
)
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def call(
    ctx: click.Context,
    to: str,
    from_: str | None,
    run: str | None,
    say: str | None,
    timeout_s: int,
    record: bool,
    wait: bool,
    db: Path | None,
    as_json: bool,
) -> None:
    """Place a call to TO (E.164) and bridge it to the speech backend of the running server.

    Needs `orchestrator serve` running, PUBLIC_URL (https) and Twilio credentials in the settings. Over a
    database shared by workers (`serve --worker`), a session is claimed on the worker with the most free
    ones, and the call streams to that worker's public URL (none free: exit 3).
    Pointing TWILIO_API_BASE_URL at `orchestrator emulator` places it on the carrier emulator instead.

    Example: orchestrator call +14155550123 --run nightly --say "Connecting you to Moshi" --wait
    """
    check_e164(to, "TO")
    settings = Settings.from_env().with_overrides(db=db)
    settings.require_twilio()
    health = None
    service = existing_service(settings.db)  # workers registered there: a session is claimed on one
    if service is None or not service.store.list_workers():
        health = require_server(settings)  # before a database is made: no server, no file made
        service = service or open_service(settings.db)
    try:
        row = place(
            settings,
            service,
            to=to,
            from_=from_,
            run=run,
            say=say,
            timeout_s=timeout_s,
            record=record,
            health=health,
        )
    except CarrierError as exc:
        raise exits.UserError(f"{exc} (stored as a failed call)", exits.UNAVAILABLE) from exc
    if wait:
        if not as_json:
            click.echo(
                f"call {row['id']} ({row['call_sid']}) to {mask_number(to)}: waiting for it to end", err=True
            )
        row = wait_for_end(
            service.store,
            row["id"],
            timeout_s + settings.max_call_seconds + 30,
            progress=None if as_json else _progress_line,
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": row["id"],
                    "call_sid": row["call_sid"],
                    "state": row["state"],
                    "end_reason": row["end_reason"],
                }
            )
        )
    else:
        click.echo(
            f"call {row['id']} ({row['call_sid']}) to {mask_number(to)}: {row['state']}"
            + (f" ({row['end_reason']})" if row["end_reason"] else "")
        )
    if wait and row["state"] != "completed":
        ctx.exit(exits.OUTCOME)


HANGUP_ANSWERS = {
    "completed": "the call is over",
    "canceled": "the call was canceled before it was answered",
    "in-progress": "it will end in a moment",
    "ringing": "it will end in a moment",
    "queued": "it will end in a moment",
}


@click.command(
    epilog=exits.epilog(
        unavailable="the carrier did not answer or refused (e.g. --cancel on an answered call)"
    )
)
@click.argument("call_ref", metavar="CALL")
@click.option(
    "--cancel", is_flag=True, help="Cancel a call that has not been answered yet (status=canceled)."
)
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def hangup(call_ref: str, cancel: bool, db: Path | None, as_json: bool) -> None:
    """End a live call (status=completed), or cancel one still ringing.

    CALL is our call id, its CallSid, or the start of either.

    Example: orchestrator hangup c_1a2b3c4d5e6f7a8b
    """
    settings = Settings.from_env().with_overrides(db=db)
    service = open_service(settings.db, create=False)
    row = service.store.get_call(call_ref)
    if not row["call_sid"]:
        raise OrchestratorError(f"call {row['id']} has no CallSid: it was never accepted by the carrier")
    status = "canceled" if cancel else "completed"
    result = hang_up(make_client(settings), row["call_sid"], status=status)
    service.record(
        source="rest", type="hangup", call_id=row["id"], payload={"requested": status, "status": result}
    )
    if as_json:
        click.echo(
            json.dumps({"id": row["id"], "call_sid": row["call_sid"], "requested": status, "status": result})
        )
    else:
        what = HANGUP_ANSWERS.get(result, f"the carrier reports it {result}")
        click.echo(
            f"asked the carrier to end {row['id']} ({status}): done, {what} "
            f"(`orchestrator show {row['id']}` follows it)"
        )
