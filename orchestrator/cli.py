"""The `orchestrator` command line. Every command has help and an Example; `--json` prints one document.

Errors a user can fix (unknown call, bad setting, unreadable database) are one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.commands import LazyGroup
from orchestrator.errors import OrchestratorError
from orchestrator.redact import personal_data_masked
from orchestrator.service import CallService, relative_ms
from orchestrator.settings import Settings, mask_number
from orchestrator.store import Store

CRITERIA = (
    "model_loads_quickly", "server_listening", "tunnel_exposed", "call_initiated", "answered_ivr_heard",
    "websocket_connected", "caller_hears_model", "model_hears_caller", "conversation_interactive",
    "audio_quality_ok", "no_latency_echo_issues",
)

db_option = click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="SQLite database file (default: $ORCHESTRATOR_DB or the user data dir).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
redact_option = click.option("--redact", is_flag=True,
                             help="Mask phone numbers (last four digits kept) and the caller's name and place, "
                                  "for output shared beyond this database's owner.")


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj["settings"] if ctx.obj and "settings" in ctx.obj else Settings.from_env()
    return base.with_overrides(**overrides)


def open_store(db: Path | None) -> Store:
    settings = Settings.from_env()
    return Store(db or settings.db)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(out)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="moshi-call-orchestrator")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Place or answer phone calls that talk to Moshi, follow each call as a persisted state
    machine, and prove with measurements that it worked.

    Start with `orchestrator demo`: a full call against the built-in carrier emulator, no Twilio
    account or model needed. Settings come from the environment or a .env file (see .env.example).

    Example: orchestrator demo --seconds 15
    """
    ctx.ensure_object(dict)


@cli.command()
@db_option
@click.option("--list", "list_only", is_flag=True, help="Show the migrations and whether each is applied.")
@json_option
def migrate(db: Path | None, list_only: bool, as_json: bool) -> None:
    """Create or upgrade the database schema (numbered SQL migrations, each in a transaction).

    Example: orchestrator migrate --db calls.db --list
    """
    store = Store(db or Settings.from_env().db, migrate=not list_only)
    status = store.migration_status()
    if as_json:
        emit({"db": store.path, "migrations": status})
        return
    click.echo(f"database: {store.path}")
    click.echo(table([[m["name"], m["applied_at"] or "pending"] for m in status], ["migration", "applied"]))


@cli.command()
@db_option
@click.option("--run", help="Only calls of this run label.")
@click.option("--state", help="Only calls in this state (queued, ringing, streaming, completed, busy...).")
@click.option("--since", help="Only calls created at or after this ISO time (e.g. 2026-11-24 or 2026-11-24T10:00).")
@click.option("--limit", default=50, show_default=True, help="At most this many calls.")
@json_option
@redact_option
def calls(db: Path | None, run: str | None, state: str | None, since: str | None, limit: int, as_json: bool,
          redact: bool) -> None:
    """List calls, newest first. The table masks phone numbers; --json holds them in full (for you, the
    owner of this database) unless --redact.

    Example: orchestrator calls --run nightly --state completed
    """
    store = open_store(db)
    rows = store.list_calls(run=run, state=state, since=since, limit=limit)
    if as_json:
        summary = {"calls": [_call_summary(r) for r in rows]}
        emit(personal_data_masked(summary) if redact else summary)
        return
    if not rows:
        click.echo("no calls yet (place one with `orchestrator call` or run `orchestrator demo`)")
        return
    click.echo(table(
        [[r["id"], r["call_sid"] or "-", r["direction"], mask_number(r["to_number"]), r["state"],
          r["run"] or "-", r["created_at"], r["end_reason"] or ""] for r in rows],
        ["id", "call_sid", "direction", "to", "state", "run", "created", "end reason"],
    ))


def _call_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "call_sid": r["call_sid"], "direction": r["direction"], "to": r["to_number"],
            "from": r["from_number"], "state": r["state"], "run": r.get("run"), "created_at": r["created_at"],
            "ended_at": r["ended_at"], "end_reason": r["end_reason"]}


@cli.command()
@click.argument("call")
@db_option
@json_option
@redact_option
def show(call: str, db: Path | None, as_json: bool, redact: bool) -> None:
    """Show one call: header, timeline of events and transitions, metrics and checks.

    CALL is our call id (c_...) or the Twilio CallSid (CA...). --json is the whole record, for you, the
    owner of this database: full phone numbers (in the call and in the carrier's event payloads) and the
    caller's place as Twilio sent them; secrets (tokens) never. Pass --redact before sharing it.

    Example: orchestrator show c_1a2b3c4d5e6f7a8b --json --redact
    """
    doc = CallService(open_store(db)).document(call)
    if redact:
        doc = personal_data_masked(doc)
    if as_json:
        emit(doc)
        return
    click.echo(render_call(doc))


def render_call(doc: dict[str, Any]) -> str:
    c = doc["call"]
    origin = c["created_at"]
    lines = [
        f"call {c['id']}  sid {c['call_sid'] or '-'}  {c['direction']}  to {mask_number(c['to'])}",
        f"state {c['state']}  run {c['run'] or '-'}  backend {c['backend'] or '-'}  created {c['created_at']}"
        + (f"  ended {c['ended_at']} ({c['end_reason']})" if c["ended_at"] else ""),
        "",
        "timeline (ms since created):",
    ]
    items: list[tuple[float, str]] = []
    for e in doc["events"]:
        mark = "  " if e["accepted"] else "x "
        why = f"  [{e['reason']}]" if e["reason"] else ""
        items.append((relative_ms(e["at"], origin), f"{mark}event {e['source']}/{e['type']}{why}"))
    for t in doc["transitions"]:
        items.append((relative_ms(t["at"], origin), f"  -> {t['from']} => {t['to']}  ({t['trigger']})"))
    for ms, text in sorted(items, key=lambda x: x[0]):
        lines.append(f"  {ms:9.0f}  {text}")
    if doc["metrics"]:
        lines += ["", "metrics:"] + [f"  {k:28s} {v:.3f}" for k, v in sorted(doc["metrics"].items())]
    if doc["checks"]:
        lines += ["", "checks:"]
        for ch in doc["checks"]:
            note = f"  note: {ch['note']}" if ch.get("note") else ""
            lines.append(f"  {ch['criterion']:26s} {ch['status']:8s} {ch['decided_by']:6s} {ch['evidence'] or ''}{note}")
    if doc.get("transcript"):
        lines += ["", "transcript: " + "".join(p["text"] for p in doc["transcript"])]
    return "\n".join(lines)


@cli.command()
@click.argument("call", required=False)
@click.argument("criterion", required=False, type=click.Choice(CRITERIA))
@click.argument("verdict", required=False, type=click.Choice(["pass", "fail", "unknown"]))
@click.option("--note", help="Why (kept beside the verdict).")
@click.option("--recompute", is_flag=True, help="Re-evaluate the automatic criteria from stored evidence.")
@db_option
@json_option
def check(call: str | None, criterion: str | None, verdict: str | None, note: str | None, recompute: bool,
          db: Path | None, as_json: bool) -> None:
    """Record a manual verdict for one criterion, or re-evaluate automatic ones.

    A manual verdict is kept beside the automatic one; both are shown.

    Example: orchestrator check c_1a2b3c4d5e6f7a8b caller_hears_model pass --note "heard it clearly"

    Example: orchestrator check --recompute          (all calls)
    """
    store = open_store(db)
    service = CallService(store)
    if recompute:
        from orchestrator.evaluation import evaluate_call

        refs = [call] if call else [r["id"] for r in store.list_calls(limit=100000)]
        results = {ref: [dataclasses.asdict(v) for v in evaluate_call(service, ref)] for ref in refs}
        if as_json:
            emit({"recomputed": results})
        else:
            click.echo(f"re-evaluated {len(refs)} call(s)")
        return
    if not (call and criterion and verdict):
        raise click.UsageError("give CALL CRITERION VERDICT, or --recompute")
    row = store.get_call(call)
    store.add_check(row["id"], criterion, verdict, note or "", "manual", note)
    if as_json:
        emit({"call": row["id"], "criterion": criterion, "status": verdict, "decided_by": "manual", "note": note})
    else:
        click.echo(f"{row['id']}: {criterion} = {verdict} (manual)")


def _register_optional() -> None:
    """Load every lazily registered command (for tests that inspect them all)."""
    from orchestrator import commands

    commands.register(cli)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OrchestratorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except sqlite3.Error as exc:
        click.echo(f"error: database problem: {exc} (check --db / ORCHESTRATOR_DB)", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
