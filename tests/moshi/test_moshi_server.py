"""The moshi-server backend against fake Moshi-protocol servers (small `websockets` servers on
127.0.0.1 written here): audio and text round trip, every way a server can fail (no answer, refusal,
no handshake, a close mid-call, an error message, a stall, hostile messages) ending the session with a
reason naming the server, and the pool's capacity and busy answer.

The echo server sends our own Ogg pages back after a fixed delay: that delay and the tone we send are
the truths the lag and the decoded audio are checked against."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sphn")
websockets = pytest.importorskip("websockets")

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE, BackendBusy, BackendError  # noqa: E402
from bridge.backends.moshi_pool import parse_server_urls  # noqa: E402
from bridge.backends.moshi_protocol import Handshake  # noqa: E402
from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig  # noqa: E402

pytestmark = pytest.mark.moshi

Handler = Callable[[ServerConnection], Awaitable[None]]
HANDSHAKE = Handshake(0, 7).serialize()
TONE_HZ = 440.0


@contextlib.asynccontextmanager
async def fake_server(handler: Handler, **kw: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/api/chat"


def backend_for(*urls: str, **kw: Any) -> MoshiServerBackend:
    return MoshiServerBackend(MoshiServerConfig(servers=parse_server_urls(" ".join(urls)), **kw))


def tone(k: int) -> np.ndarray:
    t = (np.arange(FRAME_SAMPLES) + k * FRAME_SAMPLES) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def echo(delay_s: float = 0.0, handshake: bytes = HANDSHAKE) -> Handler:
    """Sends each audio message back `delay_s` after it arrived, with a text piece after each."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(handshake)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def sender() -> None:
            while True:
                at, msg = await queue.get()
                await asyncio.sleep(max(0.0, at + delay_s - time.monotonic()))
                await ws.send(msg)
                await ws.send(b"\x02 hi")

        task = asyncio.create_task(sender())
        try:
            async for msg in ws:
                if isinstance(msg, bytes) and msg[:1] == b"\x01":
                    queue.put_nowait((time.monotonic(), msg))
        finally:
            task.cancel()

    return handler


def then(*messages: bytes | str, after_audio: int = 0, action: str | None = None) -> Handler:
    """Handshake, wait for `after_audio` audio messages, send `messages`, then `action` (or listen)."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(HANDSHAKE)
        seen = 0
        while seen < after_audio:
            if (await ws.recv())[:1] == b"\x01":
                seen += 1
        for msg in messages:
            await ws.send(msg)
        if action == "abort":
            ws.transport.abort()
        elif action == "close":
            await ws.close(1011, "overloaded")
        async for _ in ws:
            pass

    return handler


async def silent(ws: ServerConnection) -> None:
    """Accepts the WebSocket and never says a word (a local_web busy with another client)."""
    await ws.wait_closed()


async def run_until(session: Any, done: Callable[[], bool], limit_s: float = 10.0) -> dict[str, list[Any]]:
    """Push tone frames (a little faster than real time) until `done()` or the session ended."""
    frames: list[np.ndarray] = []
    text: list[str] = []
    deadline = time.monotonic() + limit_s
    k = 0
    while not done() and session.ended is None and time.monotonic() < deadline:
        out = await session.process(tone(k))
        frames += out.frames
        text += out.text
        k += 1
        await asyncio.sleep(0.02)
    return {"frames": frames, "text": text}


# -- a healthy server ----------------------------------------------------------------------------


async def test_audio_and_text_round_trip_through_an_echo_server() -> None:
    delay_s = 0.15
    async with fake_server(echo(delay_s)) as url:
        backend = backend_for(url)
        session = await backend.open_session("c_1", max_seconds=60)
        assert session.handshake == Handshake(0, 7) and session.handshake_ms > 0
        assert backend.servers()[0]["in_use"] == 1 and backend.busy
        got = await run_until(session, lambda: session.frames_received >= 30)
        await session.close()
    assert session.ended is None
    frames = got["frames"]
    assert len(frames) >= 25 and all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.float32 for f in frames)
    # What came back is the tone we sent, through Opus both ways: its spectral peak is at TONE_HZ.
    audio = np.concatenate(frames[5:])
    peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * SAMPLE_RATE / audio.shape[0]
    assert abs(peak_hz - TONE_HZ) < 15
    assert got["text"] and set(got["text"]) == {" hi"}
    stats = session.stats()
    assert stats["first_audio_ms"] is not None and stats["first_audio_ms"] >= delay_s * 1000 - 5
    # The server held every page delay_s: no frame can have come back sooner than that.
    assert stats["lag_frames"] >= 25 and stats["lag_ms_p50"] >= delay_s * 1000 - 5
    assert stats["lag_unpaired_frames"] == 0
    assert stats["encode_ms_p50"] is not None and stats["decode_ms_p50"] is not None
    assert backend.servers()[0] | {"last_error_at": None} == {
        "url": url,
        "capacity": 1,
        "in_use": 0,
        "reachable": True,
        "last_error": None,
        "last_error_at": None,
        "sessions_opened": 1,
        "sessions_failed": 0,
    }
    assert not backend.busy
    await session.close()  # twice is fine


async def test_the_budget_ends_the_session_gracefully() -> None:
    async with fake_server(echo()) as url:
        backend = backend_for(url)
        session = await backend.open_session("c_1", max_seconds=1.0)  # 13 steps, ended 3 before
        await run_until(session, lambda: False)
        await session.close()
    assert session.ended == "budget_exhausted: 10 of 13 steps (1.0 s) used"
    assert session.frames_sent == 10
    assert backend.servers()[0]["last_error"] is None  # not the server's fault


# -- servers that fail before the call is live ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_no_handshake_is_a_backend_error_after_the_timeout_and_frees_the_slot() -> None:
    async with fake_server(silent) as url:
        backend = backend_for(url, handshake_timeout_s=0.3)
        with pytest.raises(BackendError, match=r"sent no handshake within 0.3 s") as info:
            await backend.open_session("c_1", max_seconds=60)
    assert url in str(info.value)
    (server,) = backend.servers()
    assert server["in_use"] == 0 and server["reachable"] is False and server["sessions_failed"] == 1
    assert "no handshake" in str(server["last_error"])
    assert not backend.busy


async def test_a_refused_connection_and_a_server_that_never_answers() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # accepts TCP, never answers the upgrade

    tcp = await asyncio.start_server(mute, "127.0.0.1", 0)
    mute_url = f"ws://127.0.0.1:{tcp.sockets[0].getsockname()[1]}"
    try:
        backend = backend_for(f"ws://127.0.0.1:{closed_port()}", mute_url, connect_timeout_s=0.3)
        with pytest.raises(BackendError) as info:
            await backend.open_session("c_1", max_seconds=60)
    finally:
        tcp.close()
    message = str(info.value)
    assert "no moshi server could take the call" in message
    assert "refused the connection" in message and "did not answer within 0.3 s" in message
    assert [s["reachable"] for s in backend.servers()] == [False, False]
    assert [s["in_use"] for s in backend.servers()] == [0, 0]


async def test_an_http_error_instead_of_a_websocket_is_named() -> None:
    def not_found(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(404, "no such path\n")

    async with fake_server(echo(), process_request=not_found) as url:
        with pytest.raises(BackendError, match="answered HTTP 404"):
            await backend_for(url).open_session("c_1", max_seconds=60)


async def test_an_error_instead_of_the_handshake_is_a_refusal() -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.send(b"\x05no free slot")
        await ws.wait_closed()

    async with fake_server(refuse) as url:
        with pytest.raises(BackendError, match="refused the session: no free slot"):
            await backend_for(url).open_session("c_1", max_seconds=60)


async def test_a_failing_server_is_skipped_for_the_next_one() -> None:
    dead = f"ws://127.0.0.1:{closed_port()}"
    async with fake_server(echo()) as url:
        backend = backend_for(dead, url)
        session = await backend.open_session("c_1", max_seconds=60)
        assert session.url == url
        await session.close()
    assert [s["reachable"] for s in backend.servers()] == [False, True]


# -- servers that fail mid-call ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("abort", "closed the connection mid-call (code 1006)"),
        ("close", "closed the connection mid-call (code 1011: overloaded)"),
    ],
)
async def test_a_close_mid_call_ends_the_session_with_the_code(action: str, reason: str) -> None:
    async with fake_server(then(after_audio=3, action=action)) as url:
        backend = backend_for(url)
        session = await backend.open_session("c_1", max_seconds=60)
        await run_until(session, lambda: False)
        assert session.ended == f"moshi server {url}: {reason}"
        assert (await session.process(tone(0))).frames == []  # nothing more once ended
        await session.close()
    assert backend.servers()[0]["last_error"] == reason and backend.servers()[0]["in_use"] == 0


async def test_an_error_message_ends_the_session_with_its_text_bounded() -> None:
    async with fake_server(then(b"\x05model exploded\x1b[2J" + b"!" * 5000, after_audio=2)) as url:
        session = await backend_for(url).open_session("c_1", max_seconds=60)
        await run_until(session, lambda: False)
        await session.close()
    assert session.ended is not None
    assert session.ended.startswith(f"moshi server {url}: sent an error: model exploded\ufffd[2J!!")
    assert len(session.ended) < 300


async def test_audio_that_is_not_ogg_ends_the_session() -> None:
    async with fake_server(then(b"\x01" + b"NotOggAtAll" * 100, after_audio=1)) as url:
        session = await backend_for(url).open_session("c_1", max_seconds=60)
        await run_until(session, lambda: False)
        await session.close()
    assert session.ended is not None and "sent audio that is not Ogg/Opus" in session.ended


async def test_an_oversized_message_closes_the_socket_with_1009() -> None:
    async with fake_server(then(b"\x02" + b"x" * 10_000, after_audio=1)) as url:
        session = await backend_for(url, max_message_bytes=4096).open_session("c_1", max_seconds=60)
        await run_until(session, lambda: False)
        await session.close()
    assert session.ended == (
        f"moshi server {url}: sent a message over the 4096-byte limit; we closed the connection (code 1009)"
    )


async def test_harmless_garbage_is_ignored_counted_and_bounded() -> None:
    junk = [
        "a text frame",
        b"",
        b"\x63junk",
        b"\x04{}",
        b"\x06",
        b"\x03\x00",
        b"\x00",
        b"\x02" + "é".encode() * 1000,
        *[b"\x02 w" for _ in range(100)],
    ]
    async with fake_server(then(*junk, after_audio=1)) as url:
        session = await backend_for(url, max_text_chars=50, max_text_pieces=20).open_session("c_1", 60)
        await session.process(tone(0))
        deadline = time.monotonic() + 10
        while sum(session.ignored.values()) < 7 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the session's counters have no event to wait on
        await asyncio.sleep(0.2)
        out = await session.process(tone(1))
        await session.close()
    assert session.ended is None
    assert session.ignored == {
        "text frame": 1,
        "empty": 1,
        "kind 99": 1,
        "metadata": 1,
        "ping": 1,
        "control": 1,
        "handshake": 1,
    }
    assert out.text[0] == "é" * 50 and len(out.text) == 20
    assert session.text_dropped == 81


async def test_a_stall_ends_the_session_after_the_first_audio_timeout() -> None:
    now = [1000.0]
    async with fake_server(then()) as url:  # handshakes, reads, never answers
        backend = backend_for(url, first_audio_timeout_s=10.0)
        backend.clock = lambda: now[0]
        session = await backend.open_session("c_1", max_seconds=60)
        await session.process(tone(0))
        now[0] += 9.0
        await session.process(tone(1))
        assert session.ended is None
        now[0] += 2.0
        await session.process(tone(2))
        await session.close()
    assert session.ended == f"moshi server {url}: stalled: no audio yet for 11.0 s while we sent 3 frames"


async def test_a_stall_after_audio_names_the_local_web_step_limit() -> None:
    offset = [0.0]
    async with fake_server(echo(handshake=b"\x00")) as url:  # the bare handshake local_web sends
        backend = backend_for(url, stall_after_s=5.0)
        backend.clock = lambda: time.monotonic() + offset[0]
        session = await backend.open_session("c_1", max_seconds=60)
        assert session.handshake == Handshake(None, None)
        await run_until(session, lambda: session.frames_received >= 3)
        assert session.ended is None
        offset[0] = 6.0  # as if the server had been quiet for 6 s
        await session.process(tone(0))
        await session.close()
    assert session.ended is not None and "stalled: no audio for 6." in session.ended
    assert "local_web stops answering after its --steps limit" in session.ended


async def test_audio_before_our_first_frame_is_another_calls_and_never_played() -> None:
    import sphn

    async def leftovers_then_echo(ws: ServerConnection) -> None:
        await ws.send(HANDSHAKE)
        writer = sphn.OpusStreamWriter(SAMPLE_RATE)
        for k in range(6):  # what local_web still owed its previous client
            await ws.send(b"\x01" + writer.append_pcm(tone(k)))
            await ws.send(b"\x02 old")
        async for msg in ws:
            if isinstance(msg, bytes) and msg[:1] == b"\x01":
                await ws.send(b"\x01" + writer.append_pcm(tone(0)))
                await ws.send(b"\x02 new")

    async with fake_server(leftovers_then_echo) as url:
        session = await backend_for(url).open_session("c_1", max_seconds=60)
        deadline = time.monotonic() + 10
        while session.stale_text < 6 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the session's counters have no event to wait on
        got = await run_until(session, lambda: session.frames_received >= 5)
        await session.close()
    stats = session.stats()
    assert stats["stale_frames_dropped"] == 6 and stats["stale_text_dropped"] == 6
    assert " old" not in got["text"] and " new" in got["text"]
    assert stats["lag_unpaired_frames"] == 0  # every frame played answers one we sent


# -- the pool ------------------------------------------------------------------------------------


async def test_two_servers_of_one_session_each_serve_two_calls_and_refuse_the_third() -> None:
    async with fake_server(echo()) as a, fake_server(echo()) as b:
        backend = backend_for(f"{a}*1", f"{b}*1")
        first = await backend.open_session("c_1", max_seconds=60)
        second = await backend.open_session("c_2", max_seconds=60)
        assert {first.url, second.url} == {a, b}
        assert backend.busy
        with pytest.raises(BackendBusy, match="every moshi server session is in use"):
            await backend.open_session("c_3", max_seconds=60)
        await first.close()
        assert not backend.busy
        third = await backend.open_session("c_3", max_seconds=60)
        assert third.url == first.url
        for s in (second, third):
            await s.close()
    assert [s["sessions_opened"] for s in backend.servers()] in ([2, 1], [1, 2])


async def test_concurrent_opens_cannot_both_take_the_last_slot() -> None:
    async with fake_server(echo()) as url:
        backend = backend_for(url)
        results = await asyncio.gather(
            *(backend.open_session(f"c_{i}", max_seconds=60) for i in range(3)), return_exceptions=True
        )
        sessions = [r for r in results if not isinstance(r, BaseException)]
        assert len(sessions) == 1
        assert all(isinstance(r, BackendBusy) for r in results if isinstance(r, BaseException))
        await backend.aclose()
    assert backend.servers()[0]["in_use"] == 0
