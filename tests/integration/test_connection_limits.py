"""The real listener (`start_server`) under idle, slow and too many connections, on 127.0.0.1.

Tiny caps and timeouts keep every case to a second or two; each wait is bounded, none is timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType

from orchestrator.cli.serve import RunningServer, start_server
from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.web.app import STATE
from orchestrator.web.limits import connection_cap
from tests.integration.test_hostile_media import signed_headers

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 5.0  # generous: every timeout below is 0.5 s, swept every 0.5 s
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture
async def server(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    overrides = {
        "port": 0,
        "header_timeout_s": 0.5,
        "keepalive_timeout_s": 0.5,
        "body_timeout_s": 0.5,
        "media_start_timeout_s": 0.5,
        "max_connections": 6,
        **getattr(request, "param", {}),
    }
    running = await start_server(dataclasses.replace(settings, **overrides), tunnel_health=False)
    yield running
    await running.stop()


def counts(server: RunningServer) -> dict[str, int]:
    return dict(server.app[STATE].guard.counts)


async def raw(server: RunningServer, send: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (bounded wait)."""
    return await asyncio.wait_for(reader.read(), BOUND_S)


async def healthz(server: RunningServer) -> bytes:
    reader, writer = await raw(server, HEALTHZ)
    try:
        return await closed_by_server(reader)
    finally:
        writer.close()


async def test_silent_and_slowloris_connections_are_closed_and_healthz_still_answers(
    server: RunningServer,
) -> None:
    silent = [await raw(server) for _ in range(2)]
    slow = [await raw(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n") for _ in range(2)]  # never finished
    assert (await healthz(server)).startswith(b"HTTP/1.1 200")  # meanwhile
    for reader, _ in silent + slow:
        assert await closed_by_server(reader) == b""
    assert counts(server)["header_timeouts"] == 4
    assert server.app[STATE].guard.conns == {}


async def test_an_idle_keep_alive_connection_is_closed_and_so_is_a_next_request_sent_too_slowly(
    server: RunningServer,
) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"  # keep-alive: HTTP/1.1's default
    idle_r, idle_w = await raw(server, one)
    slow_r, slow_w = await raw(server, one)
    for r in (idle_r, slow_r):
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), BOUND_S)
        length = int(
            next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")).split(b":")[1]
        )
        await asyncio.wait_for(r.readexactly(length), BOUND_S)
    slow_w.write(b"GET /healthz HTTP/1.1\r\n")  # the next request's first line, then nothing
    await slow_w.drain()
    assert await closed_by_server(idle_r) == b""
    assert await closed_by_server(slow_r) == b""
    # closed by the guard or by aiohttp's own keep-alive timer, both KEEPALIVE_TIMEOUT_S: either way, closed
    assert server.app[STATE].guard.conns == {}
    for w in (idle_w, slow_w):
        w.close()


@pytest.mark.parametrize("server", [{"header_timeout_s": 30, "keepalive_timeout_s": 30}], indirect=True)
async def test_at_the_cap_idle_connections_are_shed_first_then_the_longest_reading_ones(
    server: RunningServer,
) -> None:
    guard = server.app[STATE].guard
    assert guard.limit == 6
    async with ClientSession() as http:  # three idle keep-alive connections (the pool keeps them open)
        idle = [http.get(f"{server.local_url}/healthz") for _ in range(3)]
        for resp in await asyncio.gather(*idle):
            assert resp.status == 200
            await resp.read()
        reading = [await raw(server) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert guard.phases() == {"reading": 3, "busy": 0, "idle": 3}
        newcomers = [await raw(server) for _ in range(4)]  # held open: each one needs a slot
        await asyncio.sleep(0.1)
        # three idle connections went first, then the oldest of those still sending nothing
        assert counts(server)["shed_idle"] == 3 and counts(server)["shed_reading"] == 1
        assert await closed_by_server(reading[0][0]) == b""
        assert len(guard.conns) == 6
        assert (await healthz(server)).startswith(b"HTTP/1.1 200")  # and a real caller still gets in
        for _, w in reading + newcomers:
            w.close()


@pytest.mark.parametrize("server", [{"body_timeout_s": 30}], indirect=True)
async def test_when_every_slot_is_busy_a_new_connection_is_refused_with_503_and_served_again_later(
    server: RunningServer,
) -> None:
    post = (
        b"POST /twilio/status HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000\r\n\r\nCallSid="
    )  # a body that never comes: its handler is busy reading
    busy = [await raw(server, post) for _ in range(6)]
    await asyncio.sleep(0.2)
    assert server.app[STATE].guard.phases()["busy"] == 6
    assert (await healthz(server)).startswith(b"HTTP/1.1 503")
    assert counts(server)["refused"] == 1
    for _, w in busy:
        w.close()
    await asyncio.sleep(0.2)
    assert (await healthz(server)).startswith(b"HTTP/1.1 200")


async def test_a_body_that_comes_too_slowly_is_answered_408(server: RunningServer) -> None:
    reader, writer = await raw(
        server, b"POST /twilio/status HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab"
    )
    assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 408")
    assert counts(server)["body_timeouts"] == 1
    writer.close()


async def test_an_upgraded_media_socket_that_never_says_start_is_closed(
    server: RunningServer, settings: Settings
) -> None:
    async with (
        ClientSession() as http,
        http.ws_connect(f"{server.local_url}/media", headers=signed_headers()) as ws,
    ):
        msg = await asyncio.wait_for(ws.receive(), BOUND_S)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1008
    store = Store(settings.db)
    row = store.db.execute("SELECT accepted, reason FROM events WHERE type = 'start_timeout'").fetchone()
    store.close()
    assert tuple(row) == (0, "no start within 0.5 s of the WebSocket upgrade")


async def test_metrics_show_the_connections_and_what_the_limits_did(server: RunningServer) -> None:
    reader, writer = await raw(server)
    assert await closed_by_server(reader) == b""
    writer.close()
    async with ClientSession() as http:
        text = await (await http.get(f"{server.local_url}/metrics")).text()
    assert 'orchestrator_connections_closed_total{why="header_timeouts"} 1.0' in text
    assert "orchestrator_connection_limit 6.0" in text


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


@pytest.mark.parametrize(("limit", "ok"), [(None, True), (200, False)])
def test_doctor_shows_the_file_limit_and_the_connection_cap(
    tmp_path: Path, limit: int | None, ok: bool
) -> None:
    env: dict[str, Any] = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "ORCHESTRATOR_DB": str(tmp_path / "d.db"),
        "MAX_CONNECTIONS": "100",
    }
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        preexec_fn=_low_file_limit if limit else None,
    )
    finding = {f["check"]: f for f in json.loads(out.stdout)["findings"]}["open files"]
    soft = limit or resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert finding["ok"] is ok and finding["detail"].startswith(f"soft {soft}, hard ")
    assert f"up to {connection_cap(100, soft)} connections held (MAX_CONNECTIONS 100)" in finding["detail"]
    if not ok:
        assert "ulimit -n 4096" in finding["detail"]
