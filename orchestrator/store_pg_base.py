"""The PostgreSQL store's plumbing: the pool, the schema checks at open, transactions, and row helpers.

`PgBase` is what `orchestrator.store_pg.PgStore` stands on; it holds no table knowledge beyond the
migrations. Connections come from a psycopg_pool pool in autocommit mode: a statement outside
`transaction()` is its own transaction, as in SQLite; `transaction()` binds one connection to the calling
thread until it ends, and nested it is a savepoint. Never show the URL unmasked (`self.path` is masked).

A server that restarts kills every connection: the pool drops one that broke on return, and
`lost_connection()` tells such an error from a statement's own; `reconnect()` is how the writer thread
(orchestrator.writer) comes back once the server answers again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from orchestrator.errors import StoreError
from orchestrator.schema import migration_files
from orchestrator.store_pg_url import INSTALL_HINT, connect_error, parse_target

try:
    import psycopg
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # the `postgres` extra is not installed: PgStore() says so in one line
    psycopg = None  # type: ignore[assignment]

__all__ = ["PgBase", "lost_connection"]

#: SQLSTATEs of a server going away (57P01 admin shutdown, 57P02 crash shutdown, 57P03 starting up or
#: shutting down) beside class 08 (connection exceptions); no SQLSTATE at all means no answer came.
_SERVER_GONE = ("57P01", "57P02", "57P03")


#: deadlock detected, serialization failure: another transaction won; the same work run again succeeds
_TRANSIENT = frozenset({"40P01", "40001"})


def lost_connection(exc: BaseException) -> bool:
    """Did `exc` (or an error it came from) lose the server rather than fail a statement?

    True for a connection refused, broken or timed out, and a server shutting down or starting up; False
    for what a statement did (a unique violation, a deadlock, a cancelled query), which retrying the same
    work on a new connection would not change."""
    seen: BaseException | None = exc
    for _ in range(8):  # the error, then what it was raised from or during (a failed rollback's cause)
        if seen is None:
            return False
        if psycopg is not None and isinstance(seen, psycopg.OperationalError):
            state = seen.sqlstate
            if state is None or state.startswith("08") or state in _SERVER_GONE:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


class PgBase:
    """Connections, schema and transactions of a PostgreSQL store (the rows are PgStore's)."""

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        create: bool = True,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout_s: int = 5,
    ) -> None:
        """Connect to `url` (postgresql://...), check the schema, and with `migrate` upgrade it.

        The database itself must exist (this never creates one). `create=False` is for commands that only
        read: a database with none of our tables yet is a StoreError, as a missing file is for SQLite.
        Another application's database, or one a newer version wrote, is refused before anything is
        written to it. `path` is the URL with its password masked, for messages.
        """
        self.target = parse_target(url)
        self.path = self.target.shown
        self._pool_size = (min_size, max_size)
        self._connect_timeout_s = connect_timeout_s
        if psycopg is None:
            raise StoreError(f"{self.path} needs PostgreSQL support, which is not installed: {INSTALL_HINT}")
        from orchestrator.store_pg_schema import applied_migrations, check_pg_schema

        try:  # one connection first: a precise error, and the checks before a pool exists
            first = psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout_s)
        except psycopg.Error as exc:
            raise connect_error(exc, self.target) from exc
        try:
            check_pg_schema(first, self.path)
            if not create and not applied_migrations(first):
                raise StoreError(
                    f"no orchestrator tables in {self.path} yet (`orchestrator migrate` with this "
                    "ORCHESTRATOR_DB makes them)"
                )
        except psycopg.Error as exc:  # e.g. a user not allowed to read the catalog
            raise connect_error(exc, self.target) from exc
        finally:
            first.close()
        self._local = threading.local()
        try:
            self._pool = self._open_pool()
        except PoolTimeout as exc:
            raise connect_error(exc, self.target) from exc
        if migrate:
            self.migrate()

    def _open_pool(self) -> ConnectionPool[Any]:
        """A pool with its first connection made (PoolTimeout, the pool closed, when none can be)."""
        pool: ConnectionPool[Any] = ConnectionPool(
            self.target.url,
            min_size=self._pool_size[0],
            max_size=self._pool_size[1],
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout_s},
            # waiting for a connection is bounded like making one: with the server gone, the caller
            # (the writer's retry) decides what to do, not a pool waiting out its 30 s default
            timeout=float(self._connect_timeout_s),
            open=False,
            name="orchestrator-store",
        )
        try:
            pool.open(wait=True, timeout=float(self._connect_timeout_s) * 2)
        except BaseException:
            pool.close()
            raise
        return pool

    # -- a server that went away -------------------------------------------------------------------

    def lost_connection(self, exc: BaseException) -> bool:
        """Did `exc` lose the server (module `lost_connection`)? A method, so the writer asks the store:
        SQLite's Store has none, and its errors are never retried."""
        return lost_connection(exc)

    def aborted(self) -> bool:
        conn = getattr(self._local, "conn", None)
        return conn is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR

    def transient(self, exc: BaseException) -> bool:
        return psycopg is not None and isinstance(exc, psycopg.Error) and exc.sqlstate in _TRANSIENT

    def reconnect(self) -> None:
        """Once the server answers again, a new pool in place of the old; raises psycopg.Error while it
        does not (one connection attempt, at most `connect_timeout_s`).

        A new pool rather than the old one's own recovery: every idle connection of the old one died
        with the server but shows it only when used, and psycopg_pool reconnects on its own schedule
        (1 s doubling), which would add seconds after a short restart. The old pool is closed first, so
        it stops trying (and logging) on its own while the server is away. Call it with no transaction
        open.
        """
        self._pool.close(timeout=1.0)  # a closed pool again: nothing
        psycopg.connect(self.target.url, autocommit=True, connect_timeout=self._connect_timeout_s).close()
        self._pool = self._open_pool()

    def describe(self, exc: BaseException) -> str:
        """One line for a database error, password masked (for /healthz and logs)."""
        return str(connect_error(exc, self.target))

    # -- schema -------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied now."""
        from orchestrator.store_pg_schema import apply_migrations

        with self._pool.connection() as conn:
            return apply_migrations(conn, self.path)

    def migration_status(self) -> list[dict[str, Any]]:
        from orchestrator.store_pg_schema import applied_migrations

        with self._conn() as conn:
            applied = applied_migrations(conn)
        return [{"name": m.name, "applied_at": applied.get(m.name)} for m in migration_files()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of writes: a transaction on this thread's connection; nested, a savepoint."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with conn.transaction():
                yield
            return
        with self._pool.connection() as conn:
            self._local.conn = conn
            try:
                with conn.transaction():
                    yield
                    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                        # an error someone caught left it aborted: COMMIT would roll back without a word
                        raise StoreError(
                            "the transaction was aborted by an earlier error in it: nothing of it was written"
                        )
            finally:
                self._local.conn = None

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested part of the current transaction that can fail alone (outside one: a transaction)."""
        with self.transaction():
            yield

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's transaction connection, or one from the pool for a single autocommit statement."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._pool.connection() as conn:
            yield conn

    def _in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def atomic(self) -> Any:
        """A unit of statements inside the caller's transaction without a savepoint of its own (two round
        trips fewer: an error aborts the caller's transaction, which the writer then runs again without
        the failing job), or a transaction of its own outside one. SQLite's is `transaction()`."""
        return self._atomic()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """Several statements as one: a transaction of their own, or part of the caller's (no savepoint:
        an error aborts the caller's transaction, which is what the caller's own unit is for)."""
        if self._in_transaction():
            yield
            return
        with self.transaction():
            yield

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = conn.cursor(row_factory=dict_row).execute(sql, args).fetchall()
        for row in rows:
            row.pop("_seq", None)  # calls' insertion order (SQLite's rowid): never part of a row
        return rows

    def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchone()

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._conn() as conn:
            conn.execute(sql, args)

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._atomic(), self._conn() as conn:
            conn.cursor().executemany(sql, rows)
