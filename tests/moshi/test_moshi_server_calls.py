"""Whole phone calls through the `moshi-server` backend, the product's way: the real server
(`orchestrator.rig.LocalRig`), the carrier emulator, `place()` as `orchestrator call` runs it.

- Against the real moshi_mlx `local_web` (tiny generated weights): a call completes, its stored metrics
  carry what the bridge saw of the server (handshake, round trip per frame, Opus CPU), and /healthz
  lists the server with its session taken during the call and given back after it.
- A pool of two fake servers (handshake, then every audio message echoed back) of one session each
  and three calls: two stream, one on each server (the fakes count their own connections), and the
  third is refused busy in each way a user can meet it: `orchestrator call` refuses before dialling,
  an inbound call is answered with the spoken busy message, and a stream that arrives anyway is
  closed with the reason recorded. Every wait is bounded: nothing may hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("sphn")
pytest.importorskip("websockets")

from websockets.asyncio.server import ServerConnection, serve

from bridge.backends.moshi_protocol import Handshake
from orchestrator.bootstrap import open_service, place
from orchestrator.emulator import CallOptions, Faults
from orchestrator.errors import OrchestratorError
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.web.hooks import BUSY_MESSAGE
from orchestrator.web.state import STATE
from tests.moshi.local_web_server import LocalWeb

pytestmark = pytest.mark.moshi


async def healthz(rig: LocalRig) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{rig.server.local_url}/healthz") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


async def until(what: str, done: Any, timeout_s: float = 30.0) -> None:
    """Poll the async predicate `done()` until it is true; fail (never hang) after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await done():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


# --- against the real local_web -----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_call_through_local_web_stores_the_servers_figures_and_gives_its_session_back(
    local_web: LocalWeb, tmp_path: Path
) -> None:
    settings = rig_settings(
        tmp_path, backend="moshi-server", moshi_server_urls=local_web.url, greeting="", max_call_seconds=5.0
    )
    far = CallOptions(ring_s=0.1, caller_start_s=0.3, faults=Faults(hangup_after_stream_s=20.0))
    async with LocalRig(settings, tmp_path / "truth") as rig:
        before = await healthz(rig)
        row = await rig.place(far)

        async def streaming() -> bool:
            return bool(rig.service.store.get_call(row["id"])["state"] == "streaming")

        await until("the call streams", streaming)
        during = await healthz(rig)
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=40)
        doc = await rig.settled(row["id"])
        after = await healthz(rig)
    call = doc["call"]
    assert call["state"] == "completed", local_web.log_tail()
    assert call["end_reason"].startswith("budget_exhausted"), call["end_reason"]  # our budget, not a hang-up
    assert truth.stream["ended"]["reason"] != "hangup"
    m = doc["metrics"]
    assert m["backend_handshake_ms"] > 0
    assert m["backend_lag_ms_p50"] > 0 and m["backend_lag_ms_p99"] >= m["backend_lag_ms_p50"]
    assert m["opus_encode_ms_p50"] > 0 and m["opus_decode_ms_p50"] > 0
    assert m["backend_frames_dropped"] == 0
    assert m["frames_to_model"] >= 20 and m.get("first_audio_ms") is not None
    assert truth.stream["frames_sent"] > 0 and m["marks_played"] > 0  # the phone got the model's audio
    assert doc["transcript"], "the model's text pieces are stored per call"
    for health, in_use in ((before, 0), (during, 1), (after, 0)):
        (server,) = health["servers"]
        assert server["url"] == local_web.url and server["capacity"] == 1
        assert server["in_use"] == in_use, health
    assert after["servers"][0]["reachable"] is True and after["servers"][0]["sessions_opened"] == 1
    assert not after["busy"] and before["backend"] == "moshi-server"


# --- a pool of two fake servers, three calls ------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server(connections: list[int]) -> AsyncIterator[str]:
    """Handshake, then every audio message straight back with a text piece; counts its connections."""

    async def handler(ws: ServerConnection) -> None:
        connections.append(1)
        await ws.send(Handshake(0, 1).serialize())
        async for msg in ws:
            if isinstance(msg, bytes) and msg[:1] == b"\x01":
                await ws.send(msg)
                await ws.send(b"\x02 hi")

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/chat"


def dial_unchecked(rig: LocalRig, to: str) -> dict[str, Any]:
    """`place()` without asking /healthz first: a stream that arrives although every session is taken."""
    service = open_service(rig.settings.db)
    try:
        return place(
            rig.settings,
            service,
            to=to,
            from_=rig.settings.twilio_from_number,
            run=None,
            say=None,
            timeout_s=30,
            record=False,
            check_server=False,
        )
    finally:
        service.store.close()


async def test_two_servers_of_one_session_serve_two_calls_and_the_third_is_refused_busy(
    tmp_path: Path,
) -> None:
    a_conns: list[int] = []
    b_conns: list[int] = []
    async with echo_server(a_conns) as a, echo_server(b_conns) as b:
        settings = rig_settings(
            tmp_path,
            backend="moshi-server",
            moshi_server_urls=f"{a}*1, {b}",
            greeting="",
            max_call_seconds=60,
        )
        # the far ends stay on until the test hangs up (bounded at 30 s)
        long_call = CallOptions(ring_s=0.1, caller_start_s=0.3, faults=Faults(hangup_after_stream_s=30.0))
        async with LocalRig(settings, tmp_path / "truth") as rig:
            backend = rig.server.app[STATE].backend
            first, second = await asyncio.gather(
                rig.place(long_call, to="+15005550011"), rig.place(long_call, to="+15005550012")
            )

            async def both_streaming() -> bool:
                states = {rig.service.store.get_call(r["id"])["state"] for r in (first, second)}
                return states == {"streaming"}

            await until("both calls stream", both_streaming)
            busy = await healthz(rig)
            assert busy["busy"] and [s["in_use"] for s in busy["servers"]] == [1, 1], busy

            # 1. `orchestrator call` asks /healthz and refuses before dialling: no call row is made
            with pytest.raises(OrchestratorError, match="the model is busy with another call; try again"):
                await rig.place(long_call, to="+15005550013")
            assert len(rig.service.store.list_calls()) == 2

            # 2. a call to our number while both are taken: the spoken busy message, the refusal recorded
            inbound_sid = await rig.emulator.dial_in(
                f"{settings.public_url}/twilio/voice",
                "+14155550178",
                "+15005550006",
                status_callback=f"{settings.public_url}/twilio/status",
            )
            inbound_truth = await rig.emulator.wait_call(inbound_sid, timeout=20)
            inbound = await rig.settled(rig.service.store.get_call(inbound_sid)["id"], timeout_s=20)

            # 3. a stream that arrives anyway (dialled without asking): closed, the reason recorded
            rig.emulator.set_number("+15005550014", long_call)
            stray = await asyncio.to_thread(dial_unchecked, rig, "+15005550014")
            stray_truth = await rig.emulator.wait_call(stray["call_sid"], timeout=20)
            stray_doc = await rig.settled(stray["id"], timeout_s=20)

            assert await both_streaming(), "the two calls streamed through all three refusals"
            for row in (first, second):
                await rig.emulator.hang_up(row["call_sid"])
            first_doc, second_doc = [await rig.settled(r["id"], timeout_s=30) for r in (first, second)]
            after = await healthz(rig)
    for doc in (first_doc, second_doc):
        assert doc["call"]["state"] == "completed", doc["call"]
        assert doc["metrics"]["backend_handshake_ms"] > 0 and doc["metrics"]["frames_to_model"] > 0
        assert not [e for e in doc["events"] if e["type"] == "backend_ended"]  # the caller hung up
    assert len(a_conns) == 1 and len(b_conns) == 1  # one call on each server, the third on neither

    # what the inbound caller heard, and what the call's record says
    assert [say["text"] for say in inbound_truth.says] == [BUSY_MESSAGE]
    assert inbound["call"]["state"] == "completed" and inbound["call"]["say_text"] is None
    refused = [e for e in inbound["events"] if e["type"] == "refused_busy"]
    assert refused and refused[0]["payload"]["reason"] == "model busy with another call"
    assert not any(e["type"] == "start" and e["source"] == "media" for e in inbound["events"])

    # the stray stream: closed at once by our side, the carrier hung up, the reason in the record
    busy_reason = f"model busy: every moshi server session is in use ({a} 1/1, {b} 1/1)"
    assert stray_truth.stream["ended"]["reason"] == "server-closed" and stray_truth.stream["frames_sent"] == 0
    assert stray_doc["call"]["state"] == "completed"
    rejected = [e for e in stray_doc["events"] if e["type"] == "start_rejected"]
    assert len(rejected) == 1 and rejected[0]["accepted"] is False and rejected[0]["reason"] == busy_reason
    checks = {c["criterion"]: c for c in stray_doc["checks"] if c["decided_by"] == "auto"}
    assert checks["websocket_connected"]["status"] == "fail"
    assert busy_reason in checks["websocket_connected"]["evidence"], checks["websocket_connected"]

    assert not after["busy"] and [s["in_use"] for s in after["servers"]] == [0, 0]
    assert [s["sessions_opened"] for s in after["servers"]] == [1, 1] and not backend.busy
