"""The PostgreSQL migrations mirror the shared ones: same names, same tables, columns and indexes; a
shared file applied to PostgreSQL as it is holds no SQLite-only SQL. No database here: the files are read
as text, and the engines themselves are exercised in tests/integration/test_store_engines.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from orchestrator.schema import migration_files

ROOT = Path(__file__).resolve().parents[2]
PG = ROOT / "migrations" / "postgres"
# what only a database shared by several processes needs (documented in postgres/0001_initial.sql)
PG_ONLY_COLUMNS = {("calls", "_seq")}
PG_ONLY_TABLES = {"dedupe_claims"}
SQLITE_ONLY = re.compile(
    r"\bINTEGER\s+PRIMARY\s+KEY\b|\bAUTOINCREMENT\b|\bREAL\b|\bINSERT\s+OR\b|\bREPLACE\s+INTO\b|\bPRAGMA\b|\browid\b"
    r"|\bWITHOUT\s+ROWID\b|\bdatetime\(|\bstrftime\(|\bIFNULL\(|\bGLOB\b",
    re.IGNORECASE,
)


def _code(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def tables(sql: str) -> dict[str, set[str]]:
    out = {}
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", _code(sql), re.DOTALL):
        cols = set()
        for line in body.splitlines():
            word = line.strip().split(" ", 1)[0]
            if word and word.upper() not in {"PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT"}:
                cols.add(word)
        out[name] = cols
    return out


def indexes(sql: str) -> set[tuple[str, str, str]]:
    return {
        (n, t, re.sub(r"\s+", "", c))
        for n, t, c in re.findall(r"CREATE INDEX (\w+) ON (\w+)\s*\(([^)]*)\)", _code(sql), re.IGNORECASE)
    }


def test_every_dialect_file_shadows_a_shared_migration() -> None:
    from orchestrator.store_pg_schema import pg_migration_files

    shared = [m.name for m in migration_files()]
    dialect = sorted(p.stem for p in PG.glob("*.sql"))
    assert dialect and set(dialect) <= set(shared)
    assert [m.name for m in pg_migration_files()] == shared


@pytest.mark.parametrize("name", [m.name for m in migration_files()])
def test_each_migration_says_the_same_on_postgres(name: str) -> None:
    from orchestrator.store_pg_schema import pg_migration_files

    shared = {m.name: m.sql for m in migration_files()}[name]
    pg = {m.name: m.sql for m in pg_migration_files()}[name]
    if not (PG / f"{name}.sql").exists():
        found = SQLITE_ONLY.findall(_code(shared))
        assert not found, (
            f"{name} is applied to PostgreSQL as it is but has SQLite-only SQL {found}: add postgres/{name}.sql"
        )
        return
    want, got = tables(shared), tables(pg)
    assert set(got) - PG_ONLY_TABLES == set(want)
    for table, cols in want.items():
        assert got[table] - {c for t, c in PG_ONLY_COLUMNS if t == table} == cols, table
    assert indexes(pg) == indexes(shared)
    assert not SQLITE_ONLY.findall(_code(pg))


def test_the_dialect_files_ship_with_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "postgres/*.sql" in config["tool"]["setuptools"]["package-data"]["orchestrator.migrations"]
    extra = config["project"]["optional-dependencies"]["postgres"]
    assert any(d.startswith("psycopg[binary,pool]") for d in extra)
