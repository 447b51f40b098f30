"""Fixtures for running one store test against both engines: SQLite in a temp file, PostgreSQL in a
throwaway cluster (one per test session, a fresh database per test).

tests/integration/conftest.py makes the fixtures every integration test's (`engine`, `pg_engine`).
Without PostgreSQL binaries or psycopg the PostgreSQL half is skipped with the reason;
`ORCHESTRATOR_REQUIRE_PG=1` (CI) turns that skip into a failure.

`Engine.sql()` reaches the database beside the store, the way another program would (to plant a
future migration or a foreign table): it is never the store's code.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.schema import build_migrations, migration_files
from orchestrator.stores import open_store
from tests.integration.pg_server import PgCluster, why_unavailable

ENGINES = ["sqlite", "postgres"]


@dataclass
class Engine:
    name: str
    target: str  # a file path or a postgresql:// URL
    opened: list[Any] = field(default_factory=list)

    @property
    def migrations_table(self) -> str:
        return "_sqlite_migrations" if self.name == "sqlite" else "_orchestrator_migrations"

    def open(self, **kw: Any) -> Any:
        store = open_store(self.target, **kw)
        self.opened.append(store)
        return store

    def sql(self, script: str) -> list[tuple[Any, ...]]:
        """Run statements (no parameters) outside the store; the rows of the last one."""
        if self.name == "sqlite":
            con = sqlite3.connect(self.target, isolation_level=None)
            try:
                rows: list[tuple[Any, ...]] = []
                for stmt in (s for s in script.split(";") if s.strip()):
                    rows = con.execute(stmt).fetchall()
                return rows
            finally:
                con.close()
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(script.encode())
            return list(cur.fetchall()) if cur.description else []

    def apply_first(self, count: int) -> None:
        """An "old" database: only the first `count` migrations applied, by the engine's own machinery."""
        files = migration_files()[:count]
        if self.name == "sqlite":
            import sqlite_utils

            db = sqlite_utils.Database(sqlite3.connect(self.target, isolation_level=None))
            build_migrations(files).apply(db)
            db.conn.close()
            return
        import psycopg

        from orchestrator.store_pg_schema import apply_migrations, pg_migration_files

        with psycopg.connect(self.target, autocommit=True) as conn:
            apply_migrations(conn, "test", pg_migration_files()[:count])

    def close_all(self) -> None:
        for store in self.opened:
            store.close()
        self.opened.clear()


def _skip_or_fail(why: str) -> None:
    if os.environ.get("ORCHESTRATOR_REQUIRE_PG") == "1":
        pytest.fail(f"ORCHESTRATOR_REQUIRE_PG=1 but {why}")
    pytest.skip(f"PostgreSQL half skipped: {why}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    why = why_unavailable()
    if why:
        _skip_or_fail(why)
    cluster = PgCluster.start(fast=True)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = Engine("sqlite", str(tmp_path / "orchestrator.db"))
        yield eng
        eng.close_all()
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    eng = Engine("postgres", cluster.create_database())
    yield eng
    eng.close_all()
    if cluster.root is None:  # an external server keeps no leftovers; a throwaway one is removed whole
        cluster.drop_database(eng.target)


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """PostgreSQL only (the tests of what only a shared database has to get right)."""
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    eng = Engine("postgres", cluster.create_database())
    yield eng
    eng.close_all()
    if cluster.root is None:
        cluster.drop_database(eng.target)
