"""The PostgreSQL schema: the same numbered migrations as SQLite's, and the same refusals.

The names and order are those of ``migrations/*.sql`` (``orchestrator.schema.migration_files``). A
migration whose SQLite text is not valid PostgreSQL has a dialect file of the same name in
``migrations/postgres/``; the others are applied as they are. Each is applied in its own transaction
together with its row in ``_orchestrator_migrations``, under a transaction-scoped advisory lock, so two
processes starting at once on an empty database apply each migration once.

Before anything is written: a database that records a migration this code does not know was written
by a newer version and is refused; one with tables in our schema and no record of ours is another
application's and is refused too. Nothing here decides business rules or touches SQLite.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from orchestrator.errors import StoreError
from orchestrator.schema import MIGRATION_SET, MigrationFile, migration_files
from orchestrator.store import utcnow

if TYPE_CHECKING:  # psycopg is needed only to talk to a server: the file lists work without the extra
    import psycopg

__all__ = [
    "MIGRATIONS_TABLE",
    "applied_migrations",
    "apply_migrations",
    "check_pg_schema",
    "pg_migration_files",
]

MIGRATIONS_TABLE = "_orchestrator_migrations"
# pg_advisory_xact_lock key: any constant that no other application is likely to use
_LOCK_KEY = 0x6F72_6368_6D69_67  # "orchmig"


def dialect_files() -> dict[str, str]:
    """name -> SQL of the files in migrations/postgres/."""
    folder = resources.files("orchestrator.migrations").joinpath("postgres")
    if not folder.is_dir():
        return {}
    return {
        f.name[:-4]: f.read_text(encoding="utf-8")
        for f in folder.iterdir()
        if f.name.endswith(".sql") and f.name[:4].isdigit()
    }


def pg_migration_files() -> list[MigrationFile]:
    """The shared migrations in order, each with its PostgreSQL text (the dialect file where there is one)."""
    overrides = dialect_files()
    stray = sorted(set(overrides) - {m.name for m in migration_files()})
    if stray:  # a dialect file must shadow a shared migration, never add one of its own
        raise StoreError(f"migrations/postgres has files with no shared migration: {', '.join(stray)}")
    return [MigrationFile(m.name, overrides.get(m.name, m.sql)) for m in migration_files()]


def _has_table(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """name -> applied_at, in the order applied (empty when nothing was ever applied)."""
    if not _has_table(conn, MIGRATIONS_TABLE):
        return {}
    rows = conn.execute(
        f"SELECT name, applied_at FROM {MIGRATIONS_TABLE} WHERE migration_set = %s ORDER BY seq",
        [MIGRATION_SET],
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def check_pg_schema(conn: psycopg.Connection[Any], where: str) -> None:
    """Refuse (StoreError) another application's database or a newer schema; `where` names it (masked)."""
    applied = applied_migrations(conn)
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).fetchall()
    ]
    if tables and not applied:
        shown = ", ".join(tables[:4]) + (f" and {len(tables) - 4} more" if len(tables) > 4 else "")
        raise StoreError(
            f"{where} is another application's PostgreSQL database (tables {shown}), not ours: point "
            "ORCHESTRATOR_DB at an empty database or one this tool made"
        )
    known = {m.name for m in migration_files()}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise StoreError(
            f"database {where} was written by a newer version (unknown migrations: "
            f"{', '.join(unknown)}); upgrade moshi-call-orchestrator or use another database"
        )


def apply_migrations(
    conn: psycopg.Connection[Any], where: str, files: list[MigrationFile] | None = None
) -> list[str]:
    """Apply the pending ones of `files` (default: all), each in its own transaction; the names applied.

    `conn` is in autocommit mode. The advisory lock is taken before the applied set is read again, so a
    second process waiting on it sees what the first one applied and skips it.
    """
    import psycopg

    done: list[str] = []
    for mf in files if files is not None else pg_migration_files():
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (seq BIGINT GENERATED ALWAYS AS IDENTITY, "
                    "migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
                    "PRIMARY KEY (migration_set, name))"
                )
                if mf.name in applied_migrations(conn):
                    continue
                conn.execute(mf.sql.encode())  # no parameters: the whole file in one simple query
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) VALUES (%s, %s, %s)",
                    [MIGRATION_SET, mf.name, str(utcnow())],  # sqlite-utils' form, as Store shows it
                )
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise StoreError(f"migration {mf.name} failed on {where}: {first}") from exc
        done.append(mf.name)
    return done
