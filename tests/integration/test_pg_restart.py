"""The PostgreSQL server restarting under a running server (issue 20, part 3): callbacks that arrive
meanwhile wait for their write and are answered 2xx only once it committed, /healthz says the database
is unreachable (503) until it answers again, and past DB_RETRY_S a write is answered 503, never lost
silently. SQLite's own errors never take that path.

The PostgreSQL tests run on a cluster of their own (it is stopped and started here, which the session's
shared one must not be), skipped like the other PostgreSQL tests when there is none to be had.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.doctor import Finding, database_finding, running_server_finding, tunnel_finding
from orchestrator.errors import StoreUnreachable
from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.stores import open_store
from orchestrator.web.app import create_app
from orchestrator.web.state import STATE
from orchestrator.writer import AsyncService
from tests.integration.engines import _skip_or_fail
from tests.integration.pg_server import PgCluster, why_unavailable
from tests.integration.test_control_plane import post_signed, status_params

PASSWORD = "s3cret-restart-pw"  # the cluster trusts local connections: in the URL only to be masked


@pytest.fixture(scope="module")
def restartable() -> Iterator[PgCluster]:
    why = why_unavailable()
    if why:
        _skip_or_fail(why)
    if os.environ.get("ORCHESTRATOR_TEST_PG"):
        pytest.skip("ORCHESTRATOR_TEST_PG names a server started elsewhere: it is not ours to restart")
    cluster = PgCluster.start(fast=True)
    try:
        yield cluster
    finally:
        cluster.stop()


def database(cluster: PgCluster) -> str:
    """A new database's URL, with a password that must never show."""
    return cluster.create_database("restart").replace("postgres@", f"postgres:{PASSWORD}@", 1)


def new_call(url: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        return store.create_call(
            direction="outbound-api", to_number="+14155550100", from_number="+15005550006"
        )
    finally:
        store.close()


def events(url: str, call_id: str) -> list[tuple[str, int, str | None]]:
    """(type, accepted, reason) of the call's events, read beside the server as another program would."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT type, accepted, reason FROM events WHERE call_id = %s ORDER BY id", (call_id,)
        ).fetchall()
    return [(str(t), int(a), r) for t, a, r in rows]


async def health_until(client: Any, state: str, timeout_s: float = 15.0) -> tuple[int, dict[str, Any]]:
    """Poll /healthz until its database state is `state`; the status and the document."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get("/healthz")
        doc = await resp.json()
        if doc["db"]["state"] == state or time.monotonic() > deadline:
            return resp.status, doc
        await asyncio.sleep(0.05)


def doctor_findings(settings: Settings, url: str) -> tuple[Finding, Finding, Finding]:
    """`orchestrator doctor`'s database, running-server and tunnel findings for `settings`."""

    def check() -> str:
        store = open_store(url, migrate=False)
        store.close()
        return "opened"

    return (
        database_finding(settings, check),
        running_server_finding(settings),
        tunnel_finding(str(settings.public_url)),
    )


async def test_callbacks_during_a_restart_are_answered_once_written_and_stored_once(
    restartable: PgCluster, aiohttp_client: Any, settings: Settings
) -> None:
    url = database(restartable)
    call = new_call(url)
    client = await aiohttp_client(create_app(settings.with_overrides(db=url, db_retry_s=8.0)))
    path = f"/twilio/status?call_id={call['id']}"
    assert (await post_signed(client, path, status_params("initiated", 0))).status == 204
    status, doc = await health_until(client, "ok")
    assert status == 200 and doc["ok"] is True and doc["db"]["retries"] == 0

    await asyncio.to_thread(restartable.stop_server)
    try:
        sent = [
            asyncio.create_task(post_signed(client, path, status_params(state, seq)))
            for state, seq in (("ringing", 1), ("in-progress", 2))
        ]
        status, doc = await health_until(client, "unreachable")
        assert status == 503 and doc["ok"] is False and doc["db"]["state"] == "unreachable"
        assert f"PostgreSQL at 127.0.0.1:{restartable.port}" in doc["db"]["last_error"]
        assert PASSWORD not in str(doc)
        await asyncio.sleep(1.0)  # a restart that takes a while: the callbacks keep waiting, unanswered
        assert not any(task.done() for task in sent)
    finally:
        await asyncio.to_thread(restartable.start_server)

    answers = await asyncio.gather(*sent)
    assert [r.status for r in answers] == [204, 204]
    status, doc = await health_until(client, "ok")
    assert status == 200 and doc["ok"] is True and doc["db"]["retries"] > 0 and doc["db"]["failed_jobs"] == 0
    # every callback answered 2xx is stored, once, and applied
    assert events(url, call["id"]) == [("initiated", 1, None), ("ringing", 1, None), ("in-progress", 1, None)]
    store = open_store(url, migrate=False)
    assert store.get_call(call["id"])["state"] == "in-progress"
    store.close()


async def test_past_db_retry_s_a_write_is_refused_in_one_line_and_the_server_comes_back(
    restartable: PgCluster, aiohttp_client: Any, settings: Settings
) -> None:
    url = database(restartable)
    call = new_call(url)
    client = await aiohttp_client(create_app(settings.with_overrides(db=url, db_retry_s=1.0)))
    service = client.server.app[STATE].service
    path = f"/twilio/status?call_id={call['id']}"

    await asyncio.to_thread(restartable.stop_server)
    try:
        started = time.monotonic()
        refused = await post_signed(client, path, status_params("ringing", 1))
        waited = time.monotonic() - started
        assert refused.status == 503 and "database unreachable" in await refused.text()
        assert waited >= 0.9  # it kept trying for DB_RETRY_S before it gave up
        with pytest.raises(StoreUnreachable) as err:
            await service.run(lambda s: s.store.get_call(call["id"]))
        message = str(err.value)
        assert "DB_RETRY_S" in message and "connection refused" in message
        assert "\n" not in message and PASSWORD not in message
        status, doc = await health_until(client, "unreachable")
        assert status == 503 and doc["db"]["failed_jobs"] == 2
        # doctor meanwhile: the database does not answer, the server here says so, the tunnel still works
        here = settings.with_overrides(port=client.port, public_url=f"http://127.0.0.1:{client.port}")
        db_finding, running, tunnel = await asyncio.to_thread(doctor_findings, here, url)
        assert db_finding.ok is False and "connection refused" in db_finding.detail
        assert "DB_RETRY_S" in db_finding.detail
        assert running.ok is False and "database has not answered since" in running.detail
        assert tunnel.ok is True and "HTTP 503" in tunnel.detail
        assert PASSWORD not in db_finding.detail + running.detail
    finally:
        await asyncio.to_thread(restartable.start_server)

    # idle, the writer keeps asking: /healthz turns ok again without a request to write
    status, doc = await health_until(client, "ok")
    assert status == 200 and doc["ok"] is True
    _, running, _ = await asyncio.to_thread(doctor_findings, here, url)
    assert running.ok is True and "its database answers" in running.detail
    assert events(url, call["id"]) == []  # the refused callback left nothing behind
    again = await post_signed(client, path, status_params("ringing", 1))  # the carrier's retry
    assert again.status == 204
    assert events(url, call["id"]) == [("ringing", 1, None)]


async def test_a_statements_own_error_is_not_retried_on_postgresql(restartable: PgCluster) -> None:
    service = AsyncService(lambda: open_store(database(restartable)), retry_s=5.0)
    await service.start()
    try:
        import psycopg

        def bad_statement(s: CallService) -> None:
            store: Any = s.store  # PgStore's own statement helper: the error is the statement's
            store._exec("SELECT * FROM no_such_table")

        with pytest.raises(psycopg.errors.UndefinedTable):
            await service.run(bad_statement)
        assert service.health()["state"] == "ok" and service.health()["retries"] == 0
    finally:
        await service.close()


async def test_a_busy_sqlite_database_is_the_jobs_own_error(tmp_path: Path) -> None:
    """SQLite has no server to lose: its OperationalError (locked, busy) goes to the job at once."""
    service = AsyncService(lambda: Store(tmp_path / "s.db"), retry_s=5.0)
    await service.start()
    try:

        def locked(s: CallService) -> None:
            raise sqlite3.OperationalError("database is locked")

        with pytest.raises(sqlite3.OperationalError):
            await service.run(locked)
        assert service.health()["state"] == "ok" and service.health()["retries"] == 0
    finally:
        await service.close()


def test_which_errors_lose_the_server() -> None:
    psycopg = pytest.importorskip("psycopg")
    from orchestrator.store_pg_base import lost_connection

    errors = psycopg.errors
    for gone in (
        psycopg.OperationalError("server closed the connection unexpectedly"),  # no SQLSTATE: no answer
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.CannotConnectNow("the database system is starting up"),
        errors.ConnectionFailure("connection failure"),
    ):
        assert lost_connection(gone), gone
    for own in (
        errors.UniqueViolation("duplicate key"),
        errors.DeadlockDetected("deadlock detected"),
        errors.QueryCanceled("canceling statement"),
        sqlite3.OperationalError("database is locked"),
        RuntimeError("a bug"),
    ):
        assert not lost_connection(own), own
    try:  # a rollback that failed because the connection had gone: the cause decides
        try:
            raise errors.AdminShutdown("terminating connection")
        except psycopg.Error as exc:
            raise RuntimeError("rollback failed") from exc
    except RuntimeError as wrapped:
        assert lost_connection(wrapped)
