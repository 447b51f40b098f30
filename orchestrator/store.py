"""The SQLite store: one database file, schema from numbered migrations, one writer.

sqlite-utils over a single connection in WAL mode with a busy timeout. The schema is created only by
the numbered SQL files in ``migrations/`` (``orchestrator.schema``), applied in order, each inside a
transaction; a database this code did not write, or one a newer version did, is refused untouched.

Threading: a ``Store`` is used by one thread at a time. The server gives it a dedicated writer thread
(see ``orchestrator.writer.AsyncService``); the CLI uses it directly. Keep this module free of business
rules: the lifecycle decides, the service orchestrates, the store only reads and writes rows.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from orchestrator.errors import StoreError, UnknownCall
from orchestrator.schema import build_migrations, check_schema, migration_files
from orchestrator.store_workers import WorkerRows

# the columns update_call may set (anything else is a programming error, refused before SQL sees it)
_CALL_COLUMNS = frozenset(
    (
        "call_sid run_id direction to_number from_number state created_at updated_at ended_at "
        "end_reason backend say_text token stream_sid recording_path facts worker"
    ).split()
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Store(WorkerRows):
    """Rows in, rows out. Every write is its own transaction unless grouped with `transaction()`."""

    def __init__(self, path: str | Path, *, migrate: bool = True, create: bool = True) -> None:
        """Open (and with `migrate`, upgrade) the database at `path`.

        `create=False` is for commands that only read: a missing file is a StoreError, and neither the
        file nor its folder is made. A SQLite file written by another application is refused before
        anything is written to it (not even the WAL journal mode).
        """
        self.path = str(path)
        on_disk = self.path != ":memory:"
        if on_disk and not create and not Path(self.path).exists():
            raise StoreError(
                f"no database at {self.path} (check --db / ORCHESTRATOR_DB; `orchestrator migrate --db PATH` "
                "makes an empty one)"
            )
        try:
            if on_disk and create:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 10000")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self.conn = conn
        self._savepoints = 0
        self.db = sqlite_utils.Database(conn)
        try:
            check_schema(conn, self.db, self.path)
            if on_disk:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        if migrate:
            self.migrate()

    # -- schema -------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied now."""
        migrations = build_migrations()
        pending = [m.name for m in migrations.pending(self.db)]
        if pending:
            try:
                migrations.apply(self.db)
            except sqlite3.Error as exc:
                raise StoreError(f"migration failed on {self.path}: {exc}") from exc
        return pending

    def migration_status(self) -> list[dict[str, Any]]:
        applied = {m.name: m.applied_at for m in build_migrations().applied(self.db)}
        return [{"name": m.name, "applied_at": applied.get(m.name)} for m in migration_files()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of writes.

        At the top level it is a write transaction taken IMMEDIATE: a deferred one that reads first and
        writes later cannot wait for another writer (SQLite answers 'database is locked' at once to avoid
        a deadlock), and other processes (`orchestrator call`, the CLI) write to this file too. Inside an
        open transaction (the server's writer thread commits several units together) it is a savepoint:
        still all-or-nothing, committed with the batch.
        """
        if self.conn.in_transaction:
            with self.savepoint():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def atomic(self) -> Any:
        """A unit of statements, all or nothing: here `transaction()` (a savepoint costs nothing in SQLite;
        PgStore's skips it inside a transaction)."""
        return self.transaction()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested part of the current transaction that can fail alone."""
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def close(self) -> None:
        self.conn.close()

    def _rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _worker_rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return self._rows(sql, args)

    def _worker_exec(self, sql: str, args: list[Any]) -> int:
        return int(self.conn.execute(sql, args).rowcount)

    # -- runs and calls -----------------------------------------------------------------------------

    def ensure_run(self, label: str) -> int:
        """The id of the run with this label, made if new. Insert-or-ignore first, then read: several
        dialers (threads, processes) create the same run at once, and a read-then-insert lost that race."""
        self.conn.execute(
            "INSERT OR IGNORE INTO runs (label, created_at) VALUES (?, ?)", [label, iso(utcnow())]
        )
        row = self.conn.execute("SELECT id FROM runs WHERE label = ?", [label]).fetchone()
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
        self.db.table("calls").insert(row)
        return self.get_call(str(row["id"]))

    def find_call(self, *, call_id: str | None = None, call_sid: str | None = None) -> dict[str, Any] | None:
        for column, value in (("id", call_id), ("call_sid", call_sid)):
            if value:
                cur = self.conn.execute(f"SELECT * FROM calls WHERE {column} = ?", [value])
                row = cur.fetchone()
                if row is not None:
                    return dict(zip([d[0] for d in cur.description], row, strict=True))
        return None

    def find_calls(self, *, call_id: str, call_sid: str) -> list[dict[str, Any]]:
        """The calls with this id or this CallSid (0, 1 or 2 rows), in one read."""
        return self._rows("SELECT * FROM calls WHERE id = ? OR call_sid = ?", [call_id, call_sid])

    def get_call(self, ref: str) -> dict[str, Any]:
        """A call by our id or its CallSid, or by a prefix of either that only one call has (the report
        prints ids shortened, `c_6e9de6427…`: the ellipsis is dropped)."""
        row = self.find_call(call_id=ref, call_sid=ref)
        if row is not None:
            return row
        prefix = ref.rstrip(".…")
        if len(prefix) >= 4:
            # substr, not LIKE: "_" in our ids is a LIKE wildcard
            found = self._rows(
                "SELECT * FROM calls WHERE substr(id, 1, ?) = ? OR substr(call_sid, 1, ?) = ? LIMIT 6",
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
        self.conn.execute(
            f"UPDATE calls SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
            [*(fields[n] for n in names), call_id],
        )

    def forget_recording(self, call_id: str, path: str) -> None:
        """The call no longer points at `path` (removed from disk); a newer recording is left alone."""
        self.conn.execute(
            "UPDATE calls SET recording_path = NULL WHERE id = ? AND recording_path = ?", [call_id, path]
        )

    def list_calls(
        self, *, run: str | None = None, state: str | None = None, since: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if run:
            where.append("calls.run_id = (SELECT id FROM runs WHERE label = ?)")
            args.append(run)
        if state:
            where.append("calls.state = ?")
            args.append(state)
        if since:  # both tables have created_at: name the calls' one
            where.append("calls.created_at >= ?")
            args.append(since)
        sql = (
            "SELECT calls.*, runs.label AS run FROM calls LEFT JOIN runs ON runs.id = calls.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY calls.created_at DESC, calls.rowid DESC LIMIT ?"
        )
        return [dict(r) for r in self.db.query(sql, [*args, limit])]

    def count_calls(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    def unfinished_calls(self, *, quiet_before: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Calls not in a terminal state, least recently updated first; with `quiet_before`, only those
        not updated since then (nothing has been heard of them for a while)."""
        sql = "SELECT * FROM calls WHERE state IN ('queued', 'ringing', 'in-progress', 'streaming')"
        args: list[Any] = []
        if quiet_before is not None:
            sql += " AND updated_at < ?"
            args.append(quiet_before)
        return self._rows(sql + " ORDER BY updated_at, rowid LIMIT ?", [*args, limit])

    def last_event(self, call_id: str, source: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT * FROM events WHERE call_id = ? AND source = ? ORDER BY id DESC LIMIT 1",
            [call_id, source],
        )
        return rows[0] if rows else None

    def server_event(self, type: str) -> tuple[int, str] | None:
        """(id, payload JSON) of the newest event the server recorded about itself of this type."""
        rows = self._rows(
            "SELECT id, payload FROM events WHERE source = 'server' AND type = ? ORDER BY id DESC LIMIT 1",
            [type],
        )
        return (int(rows[0]["id"]), str(rows[0]["payload"])) if rows else None

    def run_labels(self) -> list[str]:
        """Every run label, oldest first."""
        return [str(r["label"]) for r in self._rows("SELECT label FROM runs ORDER BY id", [])]

    def run_label(self, run_id: int | None) -> str | None:
        if run_id is None:
            return None
        row = self.db.execute("SELECT label FROM runs WHERE id = ?", [run_id]).fetchone()
        return str(row[0]) if row else None

    # -- events and transitions ---------------------------------------------------------------------

    def insert_event(
        self,
        *,
        source: str,
        type: str,
        at: datetime,
        payload: dict[str, Any],
        call_id: str | None = None,
        call_sid: str | None = None,
        dedupe_key: str | None = None,
    ) -> int:
        # plain SQL on the hot path: sqlite-utils' insert re-reads the table schema on every call
        cur = self.conn.execute(
            "INSERT INTO events (call_id, call_sid, source, type, at, dedupe_key, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [call_id, call_sid, source, type, iso(at), dedupe_key, json.dumps(payload, default=str)],
        )
        return int(cur.lastrowid or 0)

    def judge_event(self, event_id: int, *, accepted: bool, reason: str | None, call_id: str | None) -> None:
        self.db.execute(
            "UPDATE events SET accepted = ?, reason = ?, call_id = COALESCE(call_id, ?) WHERE id = ?",
            [int(accepted), reason, call_id, event_id],
        )

    def dedupe_seen(self, key: str, before_id: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM events WHERE dedupe_key = ? AND id < ? "
            "AND (reason IS NULL OR (reason NOT LIKE 'bad signature%' AND reason NOT LIKE 'error:%')) LIMIT 1",
            [key, before_id],
        ).fetchone()
        return row is not None

    def record_transition(
        self,
        call_id: str,
        *,
        from_state: str,
        to_state: str,
        trigger: str,
        at: datetime,
        event_id: int | None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO transitions (call_id, from_state, to_state, trigger, at, event_id) VALUES (?, ?, ?, ?, ?, ?)",
            [call_id, from_state, to_state, trigger, iso(at), event_id],
        )

    def events_for(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events WHERE call_id = ?"
        args: list[Any] = [call["id"]]
        if call.get("call_sid"):
            sql += " OR (call_id IS NULL AND call_sid = ?)"
            args.append(call["call_sid"])
        return self._rows(sql + " ORDER BY id", args)

    def transitions_for(self, call_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM transitions WHERE call_id = ? ORDER BY id", [call_id])

    # -- metrics, checks, analysis ------------------------------------------------------------------

    def put_metrics(
        self, call_id: str, metrics: Mapping[str, float | None], units: Mapping[str, str]
    ) -> None:
        now = iso(utcnow())
        rows = [(call_id, k, v, units.get(k), now) for k, v in metrics.items() if v is not None]
        if rows:
            self.conn.executemany(
                "INSERT INTO metrics (call_id, name, value, unit, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (call_id, name) DO UPDATE SET value = excluded.value, unit = excluded.unit, "
                "at = excluded.at",
                rows,
            )

    def metrics_for(self, call_id: str) -> dict[str, float]:
        return {
            r["name"]: r["value"]
            for r in self._rows("SELECT name, value FROM metrics WHERE call_id = ?", [call_id])
        }

    def metric_units_for(self, call_id: str) -> dict[str, str]:
        rows = self._rows("SELECT name, unit FROM metrics WHERE call_id = ? AND unit IS NOT NULL", [call_id])
        return {r["name"]: r["unit"] for r in rows}

    def add_check(
        self,
        call_id: str,
        criterion: str,
        status: str,
        evidence: str,
        decided_by: str,
        note: str | None = None,
    ) -> None:
        if decided_by == "auto":
            self.db.execute(
                "DELETE FROM checks WHERE call_id = ? AND criterion = ? AND decided_by = 'auto'",
                [call_id, criterion],
            )
        self.conn.execute(
            "INSERT INTO checks (call_id, criterion, status, evidence, decided_by, note, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [call_id, criterion, status, evidence, decided_by, note, iso(utcnow())],
        )

    def checks_for(self, call_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM checks WHERE call_id = ? ORDER BY id", [call_id])

    def put_analysis(self, call_id: str, data: dict[str, Any]) -> None:
        self.db.table("call_analysis").upsert(
            {"call_id": call_id, "data": json.dumps(data, default=float), "at": iso(utcnow())}, pk="call_id"
        )

    def analysis_for(self, call_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM call_analysis WHERE call_id = ?", [call_id]).fetchone()
        return json.loads(row[0]) if row else None

    def add_transcript(self, call_id: str, pieces: list[tuple[float, str]]) -> None:
        if pieces:
            self.db.table("transcript").insert_all(
                {"call_id": call_id, "at_ms": t, "text": s} for t, s in pieces
            )

    def transcript_for(self, call_id: str) -> list[dict[str, Any]]:
        return [
            {"at_ms": r["at_ms"], "text": r["text"]}
            for r in self._rows("SELECT at_ms, text FROM transcript WHERE call_id = ? ORDER BY id", [call_id])
        ]
