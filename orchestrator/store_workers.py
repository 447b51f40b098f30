"""Workers' rows and session claims, on either engine: the part of the store that several workers share.

One mixin for `Store` (SQLite) and `PgStore`: the SQL is the same but for the placeholder (written `?`
here, turned into `%s` for psycopg by `_worker_sql`) and the lock. A claim must never give two calls the
last session of a worker: on PostgreSQL the candidate workers' rows are locked (`FOR UPDATE`) before
their live calls are counted, so concurrent claims queue behind each other and each counts what the one
before committed; on SQLite the top-level transaction is `BEGIN IMMEDIATE`, one writer at a time.

Sessions in use are not a counter: they are the worker's calls that are not over (`calls.worker`), so
a crash cannot leave a slot taken for ever; a call is released by ending, whoever records the end.
Rows in, rows out: the times are given (ISO text, as every stored time), and when a worker counts as
alive is `orchestrator.workers`' rule, passed in as `alive_since`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIVE_STATES", "WorkerRows"]

#: a call in one of these still holds its worker's session (the rest are terminal)
LIVE_STATES = ("queued", "ringing", "in-progress", "streaming")
_LIVE = "(" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"
_WORKER_COLUMNS = ("public_url", "backend", "capacity", "host", "pid", "started_at", "heartbeat_at")


class WorkerRows:
    """Workers and claims. The store provides `_worker_rows`, `_worker_exec`, `transaction`."""

    _pg = False  # PgStore: psycopg placeholders and row locks

    # -- provided by the store ------------------------------------------------------------------------

    def _worker_rows(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _worker_exec(self, sql: str, args: list[Any]) -> int:
        """Run one statement; the number of rows it changed."""
        raise NotImplementedError

    def _worker_sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    # -- workers --------------------------------------------------------------------------------------

    def put_worker(self, name: str, **fields: Any) -> None:
        """Make or replace the row of worker `name` (a start: not stopped, none in use). `fields`: every
        column of `workers` but `name`, `stopped_at` and `in_use`."""
        row = {column: fields[column] for column in _WORKER_COLUMNS}
        names = ["name", *row]
        sets = ", ".join(f"{c} = excluded.{c}" for c in row)
        self._worker_exec(
            self._worker_sql(
                f"INSERT INTO workers ({', '.join(names)}, stopped_at, in_use) "
                f"VALUES ({', '.join(['?'] * len(names))}, NULL, 0) "
                f"ON CONFLICT (name) DO UPDATE SET {sets}, stopped_at = NULL, in_use = 0"
            ),
            [name, *row.values()],
        )

    def get_worker(self, name: str) -> dict[str, Any] | None:
        rows = self.list_workers(name=name)
        return rows[0] if rows else None

    def list_workers(self, *, name: str | None = None) -> list[dict[str, Any]]:
        """Every worker (or the one named), with `claimed`: its calls that are not over."""
        where = " WHERE w.name = ?" if name is not None else ""
        return self._worker_rows(
            self._worker_sql(
                "SELECT w.*, (SELECT count(*) FROM calls c WHERE c.worker = w.name AND c.state IN "
                f"{_LIVE}) AS claimed FROM workers w{where} ORDER BY w.name"
            ),
            [name] if name is not None else [],
        )

    def heartbeat_worker(self, name: str, *, at: str, in_use: int) -> bool:
        """The worker is alive now with `in_use` sessions open; False when its row is gone or stopped
        (it must register again)."""
        return (
            self._worker_exec(
                self._worker_sql(
                    "UPDATE workers SET heartbeat_at = ?, in_use = ? WHERE name = ? AND stopped_at IS NULL"
                ),
                [at, in_use, name],
            )
            > 0
        )

    def stop_worker(self, name: str, *, at: str) -> None:
        """The worker stopped cleanly: it takes no more calls, and its unfinished ones go to the others."""
        self._worker_exec(
            self._worker_sql("UPDATE workers SET stopped_at = ?, in_use = 0 WHERE name = ?"), [at, name]
        )

    def forget_worker(self, name: str) -> bool:
        """Remove a stopped or dead worker's row (its calls keep its name as history)."""
        return self._worker_exec(self._worker_sql("DELETE FROM workers WHERE name = ?"), [name]) > 0

    # -- claims ---------------------------------------------------------------------------------------

    def claim_worker(
        self, call_id: str, *, alive_since: str, prefer: str | None = None
    ) -> dict[str, Any] | None:
        """Give the call a session on the live worker with the most free ones (`prefer` on a tie), in one
        transaction with the caller's writes; None when every live worker is full (or there is none).

        Alive: not stopped, and a heartbeat at or after `alive_since`. The call row must exist.
        """
        lock = " FOR UPDATE" if self._pg else ""
        with self.transaction():  # type: ignore[attr-defined]
            # lock first, count after: a concurrent claim waits here and then counts our call
            candidates = self._worker_rows(
                self._worker_sql(
                    "SELECT name FROM workers WHERE stopped_at IS NULL AND heartbeat_at >= ? "
                    f"ORDER BY name{lock}"
                ),
                [alive_since],
            )
            if not candidates:
                return None
            alive = {c["name"] for c in candidates}
            best: dict[str, Any] | None = None
            best_key: tuple[int, int] | None = None
            for row in self.list_workers():
                if row["name"] not in alive:
                    continue
                free = int(row["capacity"]) - int(row["claimed"])
                key = (free, 1 if row["name"] == prefer else 0)
                if free > 0 and (best_key is None or key > best_key):
                    best, best_key = row, key
            if best is None:
                return None
            self._worker_exec(
                self._worker_sql("UPDATE calls SET worker = ? WHERE id = ?"), [best["name"], call_id]
            )
            best["claimed"] = int(best["claimed"]) + 1
            return best

    def adopt_calls(self, worker: str, *, alive_since: str) -> list[dict[str, Any]]:
        """Move to `worker` the unfinished calls of workers that stopped or went quiet (heartbeat before
        `alive_since`); each is returned as it was (`worker` still the old one). Atomic, so of two workers
        adopting at once each call goes to one."""
        lock = " FOR UPDATE OF c" if self._pg else ""
        with self.transaction():  # type: ignore[attr-defined]
            rows = self._worker_rows(
                self._worker_sql(
                    f"SELECT c.* FROM calls c JOIN workers w ON w.name = c.worker WHERE c.state IN {_LIVE} "
                    "AND c.worker <> ? AND (w.stopped_at IS NOT NULL OR w.heartbeat_at < ?) "
                    f"ORDER BY c.created_at{lock}"
                ),
                [worker, alive_since],
            )
            for row in rows:
                row.pop("_seq", None)
                self._worker_exec(
                    self._worker_sql("UPDATE calls SET worker = ? WHERE id = ? AND worker = ?"),
                    [worker, row["id"], row["worker"]],
                )
            return rows
