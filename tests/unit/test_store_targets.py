"""Which store a database setting names, and how a PostgreSQL URL is shown: no database needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.store import Store
from orchestrator.store_pg_url import is_pg_url, mask_url
from orchestrator.stores import as_target, open_store, shown_target


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://orch:pw@db:5432/calls", "postgresql://orch:***@db:5432/calls"),
        ("postgres://orch:p%40ss:x@db/calls", "postgres://orch:***@db/calls"),
        (
            "postgresql://orch@db/calls?password=pw&sslmode=require",
            "postgresql://orch@db/calls?password=***&sslmode=require",
        ),
        ("postgresql://db/calls", "postgresql://db/calls"),
        ("POSTGRESQL://a:b@h/d", "POSTGRESQL://a:***@h/d"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert is_pg_url(url) and mask_url(url) == shown


def test_paths_are_not_urls() -> None:
    assert not any(is_pg_url(p) for p in ("calls.db", "/var/postgres/calls.db", ":memory:", "postgresql.db"))


@pytest.mark.parametrize(
    "url", ["postgresql://orch:pw@db:5432/calls", "postgres://orch@db/calls?sslmode=require"]
)
def test_a_url_that_went_through_path_is_mended(url: str) -> None:
    assert str(Path(url)) != url  # what Settings' Path() does to it
    assert as_target(Path(url)) == url == as_target(url)
    assert "pw" not in shown_target(Path(url))


def test_a_path_opens_sqlite_and_stays_a_path(tmp_path: Path) -> None:
    odd = tmp_path / "postgresql" / "calls.db"  # a folder of that name is still a folder
    assert as_target(odd) == str(odd)
    store = open_store(odd)
    assert type(store) is Store and odd.exists()
    store.close()


def test_a_postgresql_error_after_the_store_is_open_is_one_line_not_a_traceback() -> None:
    import psycopg

    from orchestrator import exits

    lost = exits.translate(psycopg.OperationalError("server closed the connection unexpectedly\n\tdetail"))
    assert lost is not None and lost.exit_code == exits.UNAVAILABLE
    assert lost.format_message() == "PostgreSQL stopped answering: server closed the connection unexpectedly"
    bad = psycopg.errors.UniqueViolation("duplicate key value violates unique constraint")
    refused = exits.translate(bad)
    assert refused is not None and refused.exit_code == exits.USAGE and "\n" not in refused.format_message()
