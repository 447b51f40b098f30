"""`orchestrator workers`: the workers registered in the database, whether each is up, and its sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.cli.common import db_option, emit, json_option, open_store, table
from orchestrator.settings import Settings
from orchestrator.store import utcnow
from orchestrator.workers import heartbeat_age_s, worker_status


@click.command(epilog=exits.epilog(unavailable="the PostgreSQL server did not answer"))
@db_option
@click.option("--forget", metavar="NAME", default=None, help="Remove a stopped or dead worker's row.")
@json_option
def workers(db: Path | None, forget: str | None, as_json: bool) -> None:
    """List the workers sharing this database: up, stopped or dead, sessions claimed of their capacity.

    A worker is up while its heartbeat is younger than WORKER_STALE_S; a dead one's unfinished calls
    are taken over by a worker that is up. `--forget` removes the row of a worker that is not up.

    Example: orchestrator workers --db postgresql://orchestrator@db.internal/calls
    """
    settings = Settings.from_env()
    store = open_store(db)
    now, stale_s = utcnow(), settings.worker_stale_s
    if forget is not None:
        row = store.get_worker(forget)
        if row is None:
            raise exits.UserError(f"no worker named {forget!r} (`orchestrator workers` lists them)")
        if worker_status(row, now=now, stale_s=stale_s) == "up":
            raise exits.UserError(f"worker {forget!r} is up: stop it first (its calls need it)")
        store.forget_worker(forget)
        click.echo(f"forgot worker {forget}")
        return
    rows = [_summary(r, now, stale_s) for r in store.list_workers()]
    if as_json:
        emit({"workers": rows, "stale_after_s": stale_s})
        return
    if not rows:
        click.echo("no workers in this database (start one with `orchestrator serve --worker NAME`)")
        return
    click.echo(
        table(
            [
                [
                    r["name"],
                    r["status"],
                    f"{r['claimed']}/{r['capacity']}",
                    str(r["streams"]),
                    r["backend"],
                    r["public_url"] or "-",
                    f"{r['heartbeat_age_s']:.1f} s ago",
                    f"{r['host']} pid {r['pid']}",
                ]
                for r in rows
            ],
            ["name", "status", "sessions", "streams", "backend", "public URL", "heartbeat", "where"],
        )
    )


def _summary(row: dict[str, Any], now: Any, stale_s: float) -> dict[str, Any]:
    return {
        "name": row["name"],
        "status": worker_status(row, now=now, stale_s=stale_s),
        "capacity": int(row["capacity"]),
        "claimed": int(row["claimed"]),
        "streams": int(row["in_use"]),
        "backend": row["backend"],
        "public_url": row["public_url"],
        "host": row["host"],
        "pid": row["pid"],
        "started_at": row["started_at"],
        "heartbeat_at": row["heartbeat_at"],
        "heartbeat_age_s": round(heartbeat_age_s(row, now), 1),
        "stopped_at": row["stopped_at"],
    }
