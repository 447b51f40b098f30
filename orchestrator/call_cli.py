"""`orchestrator call` and `orchestrator hangup`: place and end calls through Twilio's REST API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.errors import CarrierError, OrchestratorError, SettingsError
from orchestrator.service import CallService
from orchestrator.settings import Settings, check_e164, mask_number
from orchestrator.store import Store
from orchestrator.twilio_rest import hang_up, make_client, place_call
from orchestrator.twiml import stream_twiml

TERMINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def server_health(settings: Settings) -> dict[str, Any] | None:
    url = f"http://{settings.host}:{settings.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def place(settings: Settings, service: CallService, *, to: str, from_: str | None, run: str | None,
          say: str | None, timeout_s: int, record: bool, check_server: bool = True) -> dict[str, Any]:
    """Create the call row, dial, record the outcome. Returns the call row. Raises on refusal.

    The running server is asked first: it must be up, not busy, and it knows the public URL it serves
    (with `serve --tunnel`, a fresh one each start), which wins over PUBLIC_URL in the settings so the
    TwiML always points at the tunnel that is really there.
    """
    to = check_e164(to, "TO")  # the argument first: it is what the user just typed
    settings.require_twilio()
    from_ = check_e164(from_ or settings.twilio_from_number or "", "TWILIO_FROM_NUMBER (or --from)")
    backend = settings.backend
    if check_server:
        health = server_health(settings)
        if health is None:
            raise SettingsError(
                f"no server answers at http://{settings.host}:{settings.port}/healthz: start `orchestrator serve` "
                "first (ORCHESTRATOR_HOST/ORCHESTRATOR_PORT must point at it)")
        if health.get("busy"):
            raise OrchestratorError("the model is busy with another call; try again when it ends")
        backend = health.get("backend", backend)
        if health.get("public_url"):
            settings = settings.with_overrides(public_url=health["public_url"])
    public_url = settings.require_public_url()
    say_text = settings.greeting if say is None else say
    store = service.store
    call = store.create_call(direction="outbound-api", to_number=to, from_number=from_, run=run, backend=backend,
                             say_text=say_text or None)
    twiml = stream_twiml(public_url, call_id=call["id"], token=call["token"], say=say_text or None)
    client = make_client(settings)
    try:
        placed = place_call(client, to=to, from_=from_, twiml=twiml,
                            status_callback=f"{public_url}/twilio/status?call_id={call['id']}",
                            timeout_s=timeout_s, record=record)
    except CarrierError as exc:
        # kept as a failed call with the reason, not deleted: a run's report must show the attempt
        # (call_initiated: fail, and why); no row is made for mistakes caught before dialing
        service.record(source="rest", type="create_failed", call_id=call["id"],
                       payload={"code": exc.code, "status": exc.status, "message": str(exc),
                                "unreachable": exc.unreachable}, detail=str(exc))
        raise
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=placed.sid,
                   payload={"sid": placed.sid, "status": placed.status})
    return store.get_call(call["id"])


def wait_for_end(store: Store, call_id: str, timeout_s: float,
                 progress: Callable[[dict[str, Any], float], None] | None = None) -> dict[str, Any]:
    """Poll the store until the call is over (or `timeout_s`); `progress(row, elapsed_s)` on each new state."""
    started = time.monotonic()
    seen = None
    while True:
        row = store.get_call(call_id)
        if progress is not None and row["state"] != seen:
            seen = row["state"]
            progress(row, time.monotonic() - started)
        if row["state"] in TERMINAL or time.monotonic() - started > timeout_s:
            return row
        time.sleep(0.25)


def _progress_line(row: dict[str, Any], elapsed_s: float) -> None:
    click.echo(f"  {elapsed_s:6.1f} s  {row['state']}" + (f" ({row['end_reason']})" if row["end_reason"] else ""),
               err=True)


CALL_EXITS = exits.epilog(outcome="with --wait: the call ended busy, no-answer, failed or canceled, or was "
                          "still going when the wait ran out", unavailable="the carrier did not answer or refused "
                          "the call (kept as a failed call with the reason)")


@click.command(epilog=CALL_EXITS)
@click.argument("to")
@click.option("--from", "from_", help="Caller id (E.164); default $TWILIO_FROM_NUMBER.")
@click.option("--run", help="Label grouping this call with others in reports (e.g. nightly).")
@click.option("--say", help="Greeting spoken before the stream connects (default $GREETING). '' for none.")
@click.option("--timeout", "timeout_s", type=click.IntRange(min=1, max=600), default=30, show_default=True,
              help="Seconds to let it ring.")
@click.option("--record", is_flag=True, help="Ask Twilio to record the call (dual channel).")
@click.option("--wait/--no-wait", default=False,
              help="Wait until the call ends, printing each state change on stderr, then its final state.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def call(ctx: click.Context, to: str, from_: str | None, run: str | None, say: str | None, timeout_s: int,
         record: bool, wait: bool, db: Path | None, as_json: bool) -> None:
    """Place a call to TO (E.164) and bridge it to the speech backend of the running server.

    Needs `orchestrator serve` running, PUBLIC_URL (https) and Twilio credentials in the settings.
    Pointing TWILIO_API_BASE_URL at `orchestrator emulator` places it on the carrier emulator instead.

    Example: orchestrator call +14155550123 --run nightly --say "Connecting you to Moshi" --wait
    """
    check_e164(to, "TO")
    settings = Settings.from_env().with_overrides(db=db)
    service = CallService(Store(settings.db))
    try:
        row = place(settings, service, to=to, from_=from_, run=run, say=say, timeout_s=timeout_s, record=record)
    except CarrierError as exc:
        raise exits.UserError(f"{exc} (stored as a failed call)", exits.UNAVAILABLE) from exc
    if wait:
        if not as_json:
            click.echo(f"call {row['id']} ({row['call_sid']}) to {mask_number(to)}: waiting for it to end", err=True)
        row = wait_for_end(service.store, row["id"], timeout_s + settings.max_call_seconds + 30,
                           progress=None if as_json else _progress_line)
    if as_json:
        click.echo(json.dumps({"id": row["id"], "call_sid": row["call_sid"], "state": row["state"],
                               "end_reason": row["end_reason"]}))
    else:
        click.echo(f"call {row['id']} ({row['call_sid']}) to {mask_number(to)}: {row['state']}"
                   + (f" ({row['end_reason']})" if row["end_reason"] else ""))
    if wait and row["state"] != "completed":
        ctx.exit(exits.OUTCOME)


HANGUP_ANSWERS = {
    "completed": "the call is over",
    "canceled": "the call was canceled before it was answered",
    "in-progress": "it will end in a moment",
    "ringing": "it will end in a moment",
    "queued": "it will end in a moment",
}


@click.command(epilog=exits.epilog(unavailable="the carrier did not answer or refused (e.g. --cancel on an "
                                               "answered call)"))
@click.argument("call_ref", metavar="CALL")
@click.option("--cancel", is_flag=True, help="Cancel a call that has not been answered yet (status=canceled).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def hangup(call_ref: str, cancel: bool, db: Path | None, as_json: bool) -> None:
    """End a live call (status=completed), or cancel one still ringing.

    CALL is our call id, its CallSid, or the start of either.

    Example: orchestrator hangup c_1a2b3c4d5e6f7a8b
    """
    settings = Settings.from_env().with_overrides(db=db)
    service = CallService(Store(settings.db, create=False))
    row = service.store.get_call(call_ref)
    if not row["call_sid"]:
        raise OrchestratorError(f"call {row['id']} has no CallSid: it was never accepted by the carrier")
    status = "canceled" if cancel else "completed"
    result = hang_up(make_client(settings), row["call_sid"], status=status)
    service.record(source="rest", type="hangup", call_id=row["id"], payload={"requested": status, "status": result})
    if as_json:
        click.echo(json.dumps({"id": row["id"], "call_sid": row["call_sid"], "requested": status, "status": result}))
    else:
        what = HANGUP_ANSWERS.get(result, f"the carrier reports it {result}")
        click.echo(f"asked the carrier to end {row['id']} ({status}): done, {what} "
                   f"(`orchestrator show {row['id']}` follows it)")
