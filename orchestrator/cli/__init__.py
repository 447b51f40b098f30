"""The `orchestrator` command line. Every command has help and an Example; `--json` prints one document.

Errors a user can fix (unknown call, bad setting, unreadable database) are one line on stderr and an
exit status from `orchestrator.exits` (2: fix something here, 3: something outside did not answer),
never a traceback.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.cli.commands import LazyGroup
from orchestrator.cli.common import (
    db_option,
    emit,
    json_option,
    open_store,
    redact_option,
    since_option,
    table,
)
from orchestrator.criteria import CRITERIA
from orchestrator.lifecycle import CallState
from orchestrator.redact import personal_data_masked
from orchestrator.schema import migration_files
from orchestrator.service import CallService, relative_ms
from orchestrator.settings import Settings, load_env_file, mask_number
from orchestrator.textwidth import wrap


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="moshi-call-orchestrator")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Place or answer phone calls that talk to Moshi, follow each call as a persisted state
    machine, and prove with measurements that it worked.

    Start with `orchestrator demo`: a full call against the built-in carrier emulator, no Twilio
    account or model needed. Settings come from the environment or a .env file (see .env.example).

    Example: orchestrator demo --seconds 15
    """
    load_env_file()  # before a sub-command parses its options: some read environment variables
    ctx.ensure_object(dict)


@cli.command(epilog=exits.epilog(unavailable=None))
@db_option
@click.option("--list", "list_only", is_flag=True, help="Show the migrations and whether each is applied.")
@json_option
def migrate(db: Path | None, list_only: bool, as_json: bool) -> None:
    """Create or upgrade the database schema (numbered SQL migrations, each in a transaction).

    Without --list it says what it applied now; --list shows every migration and when it was applied
    (and never creates the database).

    Example: orchestrator migrate --db calls.db --list
    """
    from orchestrator.stores import as_target, is_pg_url, open_store, shown_target

    target = as_target(db or Settings.from_env().db)
    path = shown_target(target)  # a PostgreSQL URL without its password
    on_disk = not is_pg_url(target)
    if list_only and on_disk and not Path(target).exists():  # listing never creates it: all pending
        applied_now: list[str] = []
        status: list[dict[str, Any]] = [{"name": m.name, "applied_at": None} for m in migration_files()]
    else:
        store = open_store(target, migrate=False)
        applied_now = [] if list_only else store.migrate()
        status = store.migration_status()
        store.close()
    if as_json:
        emit({"db": path, "migrations": status} | ({} if list_only else {"applied_now": applied_now}))
        return
    if list_only:
        click.echo(
            f"database: {path}" + ("" if not on_disk or Path(target).exists() else " (does not exist yet)")
        )
        click.echo(
            table([[m["name"], m["applied_at"] or "pending"] for m in status], ["migration", "applied"])
        )
    elif applied_now:
        click.echo(f"{path}: applied {len(applied_now)} migration(s): {', '.join(applied_now)}")
    else:
        click.echo(f"{path}: schema already up to date ({len(status)} migrations)")


@cli.command(epilog=exits.epilog(unavailable=None))
@db_option
@click.option("--run", help="Only calls of this run label.")
@click.option("--state", type=click.Choice([s.value for s in CallState]), help="Only calls in this state.")
@since_option
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many calls."
)
@json_option
@redact_option
def calls(
    db: Path | None,
    run: str | None,
    state: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    redact: bool,
) -> None:
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
        total = store.count_calls()
        click.echo(
            f"no calls match (the database holds {total}; drop --run/--state/--since to see them)"
            if total
            else "no calls yet (place one with `orchestrator call` or run `orchestrator demo`)"
        )
        return
    click.echo(
        table(
            [
                [
                    r["id"],
                    r["call_sid"] or "-",
                    r["direction"],
                    mask_number(r["to_number"]),
                    r["state"],
                    r["run"] or "-",
                    r["created_at"],
                    r["end_reason"] or "",
                ]
                for r in rows
            ],
            ["id", "call_sid", "direction", "to", "state", "run", "created", "end reason"],
        )
    )


def _call_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "call_sid": r["call_sid"],
        "direction": r["direction"],
        "to": r["to_number"],
        "from": r["from_number"],
        "state": r["state"],
        "run": r.get("run"),
        "created_at": r["created_at"],
        "ended_at": r["ended_at"],
        "end_reason": r["end_reason"],
    }


@cli.command(epilog=exits.epilog(unavailable=None))
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


def fmt_metric(value: float, unit: str | None) -> str:
    """A metric as a person reads it: 412 ms, 1.25 s, 2, yes, -23.4 dBFS, 0.50 %."""
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "bool":
        return "yes" if value else "no"
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    if unit in ("dB", "dBFS"):
        return f"{value:.1f} {unit}"
    return f"{value:.3f}" + (f" {unit}" if unit else "")


def fmt_offset(ms: float) -> str:
    """Time since the call was created, as the report prints it."""
    return f"{ms / 1000:+.3f} s"


def event_detail(e: dict[str, Any]) -> str:
    """What the timeline says of an informative event beyond its type: the keys pressed, a replay's other call."""
    p = e.get("payload") or {}
    if e["type"] == "dtmf" and isinstance(p.get("digits"), str):
        return f" {p['digits'][:64]!r}" + (
            f" ({p['count']} keys)" if p.get("count", 0) > len(p["digits"]) else ""
        )
    if e["type"] in ("replay_of", "replayed_as") and isinstance(p.get("call_id"), str):
        return f" {p['call_id']}" + (f" ({p['backend']})" if isinstance(p.get("backend"), str) else "")
    if e["type"] == "media_config" and isinstance(p.get("backend"), str):
        return f" backend {p['backend']}, aec {p.get('aec', '?')}"
    return ""


def render_call(doc: dict[str, Any]) -> str:
    c = doc["call"]
    origin = c["created_at"]
    lines = [
        f"call {c['id']}  sid {c['call_sid'] or '-'}  {c['direction']}  to {mask_number(c['to'])}",
        f"state {c['state']}  run {c['run'] or '-'}  backend {c['backend'] or '-'}  created {c['created_at']}",
    ]
    if c["ended_at"]:
        lines.append(f"ended {c['ended_at']} ({c['end_reason']})")
    if c.get("recording_path"):
        lines.append(f"recording {c['recording_path']}")
    if c.get("worker"):
        lines.append(f"worker {c['worker']}")
    lines += ["", "timeline (since created):"]
    items: list[tuple[float, str]] = []
    for e in doc["events"]:
        mark = "  " if e["accepted"] else "x "
        why = f"  [{e['reason']}]" if e["reason"] else ""
        items.append(
            (relative_ms(e["at"], origin), f"{mark}event {e['source']}/{e['type']}{event_detail(e)}{why}")
        )
    for t in doc["transitions"]:
        items.append((relative_ms(t["at"], origin), f"  -> {t['from']} => {t['to']}  ({t['trigger']})"))
    for ms, text in sorted(items, key=lambda x: x[0]):
        lines += wrap(text, f"  {fmt_offset(ms):>11}  ", " " * 19)
    units = doc.get("metric_units") or {}
    if doc["metrics"]:
        lines += ["", "metrics:"] + [
            f"  {k:28s} {fmt_metric(v, units.get(k))}" for k, v in sorted(doc["metrics"].items())
        ]
    if doc["checks"]:
        lines += ["", "checks:", *check_lines(doc["checks"])]
    if doc.get("transcript"):
        lines += ["", *wrap("".join(p["text"] for p in doc["transcript"]), "transcript: ", "  ")]
    return "\n".join(lines)


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    out = []
    for ch in checks:
        note = f"  note: {ch['note']}" if ch.get("note") else ""
        out += wrap(
            f"{ch['evidence'] or ''}{note}",
            f"  {ch['criterion']:26s} {ch['status']:8s} {ch['decided_by']:6s} ",
        )
    return out


@cli.command(epilog=exits.epilog(unavailable=None))
@click.argument("call", required=False)
@click.argument("criterion", required=False, type=click.Choice(CRITERIA), metavar="[CRITERION]")
@click.argument(
    "verdict", required=False, type=click.Choice(["pass", "fail", "unknown"]), metavar="[VERDICT]"
)
@click.option("--note", help="Why (kept beside the verdict).")
@click.option("--recompute", is_flag=True, help="Re-evaluate the automatic criteria from stored evidence.")
@db_option
@json_option
def check(
    call: str | None,
    criterion: str | None,
    verdict: str | None,
    note: str | None,
    recompute: bool,
    db: Path | None,
    as_json: bool,
) -> None:
    """List a call's checks, record a manual verdict for one criterion, or re-evaluate automatic ones.

    CALL alone lists its checks. With CRITERION and VERDICT (pass, fail or unknown) a manual verdict is
    kept beside the automatic one; both are shown. CRITERION is one of: model_loads_quickly,
    server_listening, tunnel_exposed, call_initiated, answered_ivr_heard, websocket_connected,
    caller_hears_model, model_hears_caller, conversation_interactive, audio_quality_ok,
    no_latency_echo_issues.

    Example: orchestrator check c_1a2b3c4d5e6f7a8b caller_hears_model pass --note "heard it clearly"

    Example: orchestrator check --recompute          (all calls)
    """
    store = open_store(db)
    service = CallService(store)
    if recompute:
        from orchestrator.evaluation import evaluate_call

        refs = [store.get_call(call)["id"]] if call else [r["id"] for r in store.list_calls(limit=100000)]
        results = {ref: [dataclasses.asdict(v) for v in evaluate_call(service, ref)] for ref in refs}
        if as_json:
            emit({"recomputed": results})
        else:
            click.echo(f"re-evaluated {len(refs)} call(s)")
        return
    if not call:
        raise click.UsageError("give CALL (to list its checks), CALL CRITERION VERDICT, or --recompute")
    row = store.get_call(call)
    if criterion is None:
        checks = service.document(row["id"])["checks"]
        if as_json:
            emit({"call": row["id"], "checks": checks})
        elif checks:
            click.echo("\n".join([f"{row['id']}:", *check_lines(checks)]))
        else:
            click.echo(
                f"{row['id']}: no checks yet (`orchestrator check --recompute {row['id']}` decides them)"
            )
        return
    if verdict is None:
        raise click.UsageError(f"give a VERDICT for {criterion}: pass, fail or unknown")
    store.add_check(row["id"], criterion, verdict, note or "", "manual", note)
    if as_json:
        emit(
            {
                "call": row["id"],
                "criterion": criterion,
                "status": verdict,
                "decided_by": "manual",
                "note": note,
            }
        )
    else:
        click.echo(f"{row['id']}: {criterion} = {verdict} (manual)")


def _register_optional() -> None:
    """Load every lazily registered command (for tests that inspect them all)."""
    from orchestrator.cli import commands

    commands.register(cli)


def main(argv: list[str] | None = None) -> None:
    """The console entry point: exit codes as in orchestrator.exits, never a traceback for a user's mistake."""
    cli.main(args=argv, prog_name="orchestrator")
