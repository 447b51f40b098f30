"""The schema: numbered SQL migrations, applied in order, and the checks before any is applied.

The files live in the top-level ``migrations/`` folder and are installed as the ``orchestrator.migrations``
package, so an installed copy finds them. Each is applied inside a transaction and recorded in
``_sqlite_migrations`` (sqlite-utils' ``Migrations``). A database that records a migration this code does
not know was written by a newer version: we refuse to touch it rather than guess; a SQLite file with
tables but no record of ours is another application's and is refused too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import sqlite_utils
from sqlite_utils.migrations import Migrations

from orchestrator.errors import StoreError

__all__ = ["MIGRATION_SET", "MigrationFile", "build_migrations", "check_schema", "migration_files"]

MIGRATION_SET = "orchestrator"


@dataclass(frozen=True, slots=True)
class MigrationFile:
    name: str  # e.g. "0001_initial"
    sql: str


def migration_files() -> list[MigrationFile]:
    """The numbered SQL files shipped with the package, in order."""
    folder = resources.files("orchestrator.migrations")
    files = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".sql") and f.name[:4].isdigit()),
        key=lambda f: f.name,
    )
    return [MigrationFile(f.name[:-4], f.read_text(encoding="utf-8")) for f in files]


def _statements(sql: str) -> Iterator[str]:
    """Split a SQL script into statements (executescript would COMMIT and break the transaction)."""
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            buf = ""
            if stmt and not all(ln.strip().startswith("--") or not ln.strip() for ln in stmt.splitlines()):
                yield stmt
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        raise StoreError(f"incomplete SQL statement at the end of a migration: {buf.strip()[:60]!r}")


def build_migrations(files: list[MigrationFile] | None = None) -> Migrations:
    migrations = Migrations(MIGRATION_SET)
    for mf in files if files is not None else migration_files():

        def run(db: sqlite_utils.Database, sql: str = mf.sql) -> None:
            for stmt in _statements(sql):
                db.execute(stmt)

        migrations(name=mf.name)(run)
    return migrations


def check_schema(conn: sqlite3.Connection, db: sqlite_utils.Database, path: str) -> None:
    """Refuse (StoreError) a file that is not SQLite, another application's database, or a newer schema."""
    try:
        applied = {m.name for m in build_migrations().applied(db)}
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable SQLite database: {exc}") from exc
    if tables and not applied:  # an empty file is ours to fill; someone else's tables are not
        shown = ", ".join(tables[:4]) + (f" and {len(tables) - 4} more" if len(tables) > 4 else "")
        raise StoreError(
            f"{path} is another application's SQLite database (tables {shown}), not ours: point --db / "
            "ORCHESTRATOR_DB at a new file or one this tool made"
        )
    known = {m.name for m in migration_files()}
    unknown = sorted(applied - known)
    if unknown:
        raise StoreError(
            f"database {path} was written by a newer version (unknown migrations: "
            f"{', '.join(unknown)}); upgrade moshi-call-orchestrator or use another --db"
        )
