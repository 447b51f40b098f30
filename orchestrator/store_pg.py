"""The PostgreSQL store: the `Store` interface and semantics over a shared database, for several processes.

Same public methods, same rows out as `orchestrator.store.Store`: dicts with the same keys, timestamps as
the same ISO strings (kept as text, compared byte by byte), JSON columns decoded the same way, ids as
ints. The schema comes from the same numbered migrations (``orchestrator.store_pg_schema``).

Connections come from a psycopg_pool pool, in autocommit mode: a call outside `transaction()` is its own
transaction, as in SQLite. `transaction()` takes one connection for the calling thread until it ends;
nested, it is a savepoint. What several processes sharing the database need on top of SQLite's one
writer, the database enforces: a run label and a CallSid are unique keys, a metric an upsert, a dedupe
key is claimed in `dedupe_claims` (so of two processes judging the same retried callback at once, the
second waits for the first and finds it a duplicate), and a call read inside a transaction is locked
(``FOR UPDATE``) until it commits, so two processes cannot both move it from the same state.

Like `Store`, no business rules here: rows in, rows out. Never log or show the URL unmasked.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from orchestrator.errors import UnknownCall
from orchestrator.store import _CALL_COLUMNS, iso, utcnow
from orchestrator.store_pg_rows import PgEventRows
from orchestrator.store_workers import WorkerRows

__all__ = ["PgStore"]


class PgStore(WorkerRows, PgEventRows):
    """Rows in, rows out. Every write is its own transaction unless grouped with `transaction()`.

    The connection, schema and transactions are `PgBase`'s (orchestrator.store_pg_base); events,
    metrics and the rest `PgEventRows`' (orchestrator.store_pg_rows); runs and calls are here.
    """

    _pg = True

    def _worker_rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return self._rows(sql, args)

    def _worker_exec(self, sql: str, args: list[Any]) -> int:
        with self._conn() as conn:
            return int(conn.execute(sql, args).rowcount)

    def ensure_run(self, label: str) -> int:
        """The id of the run with this label, made if new (the unique label settles a race)."""
        self._exec(
            "INSERT INTO runs (label, created_at) VALUES (%s, %s) ON CONFLICT (label) DO NOTHING",
            [label, iso(utcnow())],
        )
        row = self._one("SELECT id FROM runs WHERE label = %s", [label])
        assert row is not None
        return int(row[0])

    def create_call(
        self,
        *,
        direction: str,
        to_number: str | None,
        from_number: str | None,
        run: str | None = None,
        backend: str | None = None,
        say_text: str | None = None,
        facts: dict[str, Any] | None = None,
        call_sid: str | None = None,
        state: str = "queued",
    ) -> dict[str, Any]:
        now = iso(utcnow())
        row = {
            "id": "c_" + secrets.token_hex(8),
            "call_sid": call_sid,
            "run_id": self.ensure_run(run) if run else None,
            "direction": direction,
            "to_number": to_number,
            "from_number": from_number,
            "state": state,
            "created_at": now,
            "updated_at": now,
            "backend": backend,
            "say_text": say_text,
            "token": secrets.token_urlsafe(24),
            "facts": json.dumps(facts or {}),
        }
        self._exec(
            f"INSERT INTO calls ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )
        return self.get_call(str(row["id"]))

    def find_call(self, *, call_id: str | None = None, call_sid: str | None = None) -> dict[str, Any] | None:
        lock = " FOR UPDATE" if self._in_transaction() else ""
        for column, value in (("id", call_id), ("call_sid", call_sid)):
            if value:
                rows = self._rows(f"SELECT * FROM calls WHERE {column} = %s{lock}", [value])
                if rows:
                    return rows[0]
        return None

    def find_calls(self, *, call_id: str, call_sid: str) -> list[dict[str, Any]]:
        """The calls with this id or this CallSid (0, 1 or 2 rows), in one read (locked in a transaction)."""
        lock = " FOR UPDATE" if self._in_transaction() else ""
        return self._rows(f"SELECT * FROM calls WHERE id = %s OR call_sid = %s{lock}", [call_id, call_sid])

    def get_call(self, ref: str) -> dict[str, Any]:
        """A call by our id or its CallSid, or by a prefix of either that only one call has."""
        row = self.find_call(call_id=ref, call_sid=ref)
        if row is not None:
            return row
        prefix = ref.rstrip(".…")
        if len(prefix) >= 4:
            found = self._rows(
                "SELECT * FROM calls WHERE left(id, %s) = %s OR left(call_sid, %s) = %s LIMIT 6",
                [len(prefix), prefix, len(prefix), prefix],
            )
            if len(found) == 1:
                return found[0]
            if found:
                ids = ", ".join(r["id"] for r in found[:5])
                raise UnknownCall(
                    f"{ref!r} is the start of {'more than 5' if len(found) > 5 else len(found)} "
                    f"calls ({ids}): give more of the id"
                )
        raise UnknownCall(f"no call with id or CallSid {ref!r} (list them with `orchestrator calls`)")

    def update_call(self, call_id: str, **fields: Any) -> None:
        fields["updated_at"] = iso(utcnow())
        unknown = set(fields) - _CALL_COLUMNS
        if unknown:
            raise ValueError(f"unknown call column(s): {', '.join(sorted(unknown))}")
        names = list(fields)
        self._exec(
            f"UPDATE calls SET {', '.join(f'{n} = %s' for n in names)} WHERE id = %s",
            [*(fields[n] for n in names), call_id],
        )

    def forget_recording(self, call_id: str, path: str) -> None:
        """The call no longer points at `path` (removed from disk); a newer recording is left alone."""
        self._exec(
            "UPDATE calls SET recording_path = NULL WHERE id = %s AND recording_path = %s", [call_id, path]
        )

    def list_calls(
        self, *, run: str | None = None, state: str | None = None, since: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if run:
            where.append("calls.run_id = (SELECT id FROM runs WHERE label = %s)")
            args.append(run)
        if state:
            where.append("calls.state = %s")
            args.append(state)
        if since:
            where.append("calls.created_at >= %s")
            args.append(since)
        sql = (
            "SELECT calls.*, runs.label AS run FROM calls LEFT JOIN runs ON runs.id = calls.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY calls.created_at DESC, calls._seq DESC LIMIT %s"
        )
        return self._rows(sql, [*args, limit])

    def count_calls(self) -> int:
        row = self._one("SELECT count(*) FROM calls")
        return int(row[0]) if row else 0

    def unfinished_calls(self, *, quiet_before: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Calls not in a terminal state, least recently updated first; with `quiet_before`, only those
        not updated since then."""
        sql = "SELECT * FROM calls WHERE state IN ('queued', 'ringing', 'in-progress', 'streaming')"
        args: list[Any] = []
        if quiet_before is not None:
            sql += " AND updated_at < %s"
            args.append(quiet_before)
        return self._rows(sql + " ORDER BY updated_at, _seq LIMIT %s", [*args, limit])

    def last_event(self, call_id: str, source: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT * FROM events WHERE call_id = %s AND source = %s ORDER BY id DESC LIMIT 1",
            [call_id, source],
        )
        return rows[0] if rows else None

    def server_event(self, type: str) -> tuple[int, str] | None:
        """(id, payload JSON) of the newest event the server recorded about itself of this type."""
        rows = self._rows(
            "SELECT id, payload FROM events WHERE source = 'server' AND type = %s ORDER BY id DESC LIMIT 1",
            [type],
        )
        return (int(rows[0]["id"]), str(rows[0]["payload"])) if rows else None

    def run_labels(self) -> list[str]:
        """Every run label, oldest first."""
        return [str(r["label"]) for r in self._rows("SELECT label FROM runs ORDER BY id", [])]

    def run_label(self, run_id: int | None) -> str | None:
        if run_id is None:
            return None
        row = self._one("SELECT label FROM runs WHERE id = %s", [run_id])
        return str(row[0]) if row else None
