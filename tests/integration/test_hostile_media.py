"""Hostile media frames end their own stream through the normal end-of-stream path, nothing else.

A far-future `media.timestamp` once asked gap repair for gigabytes of silence: the server froze for tens
of seconds, or MemoryError escaped the read loop and the call stayed `streaming` with the model slot
taken. Now it is a protocol error on that stream: recorded, the socket closed, the session finished
(evidence analysed, backend slot released), while /healthz keeps answering.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType
from twilio.request_validator import RequestValidator

from bridge.backends.base import BackendBusy, BackendSession, SpeechBackend, StepOutput
from bridge.backends.echo import EchoSession
from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.twiml import media_url
from orchestrator.web.app import STATE, create_app
from tests.conftest import AUTH_TOKEN, PUBLIC_URL

STREAM_SID = "MZ" + "5" * 32
CALL_SID = "CA" + "6" * 32


class OneSlotBackend(SpeechBackend):
    """Echo, one call at a time, like the moshi backend: a slot not given back blocks the next call."""

    name = "one-slot"

    def __init__(self) -> None:
        self.open = 0
        self.opened = 0  # sessions ever opened

    @property
    def busy(self) -> bool:
        return self.open > 0

    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        if self.open:
            raise BackendBusy("one call at a time")
        self.open += 1
        self.opened += 1
        return _Slot(self)


class _Slot(BackendSession):
    def __init__(self, owner: OneSlotBackend) -> None:
        self.owner, self.inner, self.closed = owner, EchoSession(0.0), False

    async def process(self, frame: np.ndarray) -> StepOutput:
        return await self.inner.process(frame)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.open -= 1


def start_frame(call_id: str, token: str, call_sid: str = CALL_SID) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": STREAM_SID,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": STREAM_SID,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"call_id": call_id, "token": token},
            },
        }
    )


def media_frame(seq: int, timestamp: int | str, chunk: int | str | None = None) -> str:
    payload = base64.b64encode(b"\xff" * 160).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": STREAM_SID,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1 if chunk is None else chunk),
                "timestamp": str(timestamp),
                "payload": payload,
            },
        }
    )


def signed_headers() -> dict[str, str]:
    return {"x-twilio-signature": RequestValidator(AUTH_TOKEN).compute_signature(media_url(PUBLIC_URL), {})}


def new_call(settings: Settings, state: str = "in-progress", call_sid: str = CALL_SID) -> dict[str, Any]:
    store = Store(settings.db)
    try:
        call = store.create_call(
            direction="outbound-api", to_number="+14155550100", from_number="+15005550006"
        )
        store.update_call(call["id"], state=state, call_sid=call_sid)
        return store.get_call(call["id"])
    finally:
        store.close()


async def wait_for(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def call_row_and_events(
    settings: Settings, call_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    store = Store(settings.db)
    try:
        row = store.get_call(call_id)
        return row, store.events_for(row), store.analysis_for(call_id) is not None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("hostile", "why"),
    [
        (media_frame(5, 10**7), "jumped"),  # 46 s frozen and +1.3 GB before
        (media_frame(5, 10**17), "jumped"),  # within the parser's 18 digits; MemoryError before
    ],
)
async def test_a_far_future_timestamp_ends_only_its_stream_and_the_server_keeps_answering(
    aiohttp_client: Any, settings: Settings, hostile: str, why: str
) -> None:
    backend = OneSlotBackend()
    client = await aiohttp_client(create_app(settings, backend=backend))
    await asyncio.wait_for(client.server.app[STATE].warmed.wait(), 60)  # scipy's import is not what we time
    call = new_call(settings)
    ws = await client.ws_connect("/media", headers=signed_headers())
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send_str(start_frame(call["id"], call["token"]))
    for i in range(3):
        await ws.send_str(media_frame(2 + i, 20 * i))
    assert await wait_for(lambda: backend.busy)
    await ws.send_str(hostile)
    closed = await asyncio.wait_for(ws.receive(), 10)
    while closed.type not in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):  # echoed audio first
        closed = await asyncio.wait_for(ws.receive(), 10)
    assert ws.close_code == 1008

    # the server answers at once (a generous bound: before, it froze for 46 s or died)
    t = time.monotonic()
    health = await (await client.get("/healthz")).json()
    assert time.monotonic() - t < 2.0
    assert await wait_for(lambda: not backend.busy)  # the one model slot is free again
    assert await wait_for(lambda: call_row_and_events(settings, call["id"])[2])  # evidence analysed
    row, events, _ = call_row_and_events(settings, call["id"])
    assert health["ok"]
    assert client.server.app[STATE].sessions == {}
    assert row["state"] == "streaming"  # forward only: the stream stopped, the carrier ends the call
    kinds = {(e["source"], e["type"]): e for e in events}
    problem = json.loads(kinds[("media", "protocol_error")]["payload"])["reason"]
    assert why in problem
    assert json.loads(kinds[("media", "ws_closed")]["payload"])["end"] == "protocol_errors"

    # and the next call gets the slot
    other = new_call(settings, call_sid="CA" + "7" * 32)
    ws2 = await client.ws_connect("/media", headers=signed_headers())
    await ws2.send_str(start_frame(other["id"], other["token"], call_sid="CA" + "7" * 32))
    assert await wait_for(lambda: backend.busy)
    await ws2.close()
    assert await wait_for(lambda: not backend.busy)


async def test_an_exception_in_the_read_path_ends_the_stream_the_normal_way(
    aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = OneSlotBackend()
    app = create_app(settings, backend=backend)
    client = await aiohttp_client(app)
    call = new_call(settings)
    ws = await client.ws_connect("/media", headers=signed_headers())
    await ws.send_str(start_frame(call["id"], call["token"]))
    await ws.send_str(media_frame(2, 0))
    assert await wait_for(lambda: app[STATE].sessions)
    live = app[STATE].sessions[call["id"]]

    def broken(*_: Any) -> None:
        raise MemoryError("simulated")

    monkeypatch.setattr(live.session, "on_mark", broken)
    await ws.send_str(
        json.dumps({"event": "mark", "sequenceNumber": "3", "streamSid": STREAM_SID, "mark": {"name": "m1"}})
    )
    assert await wait_for(lambda: not backend.busy)
    assert await wait_for(lambda: call_row_and_events(settings, call["id"])[2])
    row, events, _ = call_row_and_events(settings, call["id"])
    assert row["state"] == "streaming" and app[STATE].sessions == {}  # stopped, not stepped back
    errors = [e for e in events if e["type"] == "media_error"]
    assert errors and "MemoryError" in (errors[0]["reason"] or json.loads(errors[0]["payload"])["reason"])
    ended = next(e for e in events if e["type"] == "ws_closed")
    assert json.loads(ended["payload"])["end"] == "internal_error"


async def test_a_dead_direction_ends_the_whole_session() -> None:
    from bridge.protocol import Media, MediaStream, Start
    from bridge.session import MediaSession, SessionConfig

    stream = MediaStream()
    stream.receive_text(Start(1, STREAM_SID, "AC" + "0" * 32, CALL_SID).serialize())
    stream.events_received()

    async def send(texts: list[str]) -> None:
        raise ConnectionResetError("peer went away")

    session = MediaSession(
        call_id="c",
        stream=stream,
        backend=EchoSession(0.0),
        send=send,
        config=SessionConfig(jitter_buffer_s=0.0, max_media_ahead_s=5.0),
    )
    session.start()
    loop = asyncio.get_running_loop()
    for i in range(8):
        session.on_media(Media(i + 2, STREAM_SID, "inbound", i + 1, 20 * i, b"\x10" * 160), loop.time())
    await asyncio.wait_for(session.done.wait(), 5)
    assert session.failure is not None and "ConnectionResetError" in session.failure
    await session.finish("test")
    assert session.end_reason == session.failure

    # a timestamp ahead of the wall clock by more than the limit is refused before any gap repair
    from bridge.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):  # a gap under MAX_GAP_MS, but 5.05 s ahead at 0.1 s
        session.on_media(Media(20, STREAM_SID, "inbound", 19, 5_150, b"\x10" * 160), session.t0 + 0.1)
    assert len(session.inbound_codes) < 8000


@pytest.mark.parametrize("ended", ["busy", "completed", "no-answer", "failed", "canceled"])
async def test_a_start_for_a_call_that_has_ended_is_refused(
    aiohttp_client: Any, settings: Settings, ended: str
) -> None:
    backend = OneSlotBackend()
    app = create_app(settings, backend=backend)
    client = await aiohttp_client(app)
    call = new_call(settings, state=ended)
    ws = await client.ws_connect("/media", headers=signed_headers())
    await ws.send_str(start_frame(call["id"], call["token"]))
    for i in range(3):
        await ws.send_str(media_frame(2 + i, 20 * i))
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 1008
    assert backend.opened == 0 and app[STATE].sessions == {}  # no backend session was ever opened
    row, events, analysed = call_row_and_events(settings, call["id"])
    assert row["state"] == ended and row["stream_sid"] is None and not analysed
    media = [(e["type"], e["accepted"], e["reason"]) for e in events if e["source"] == "media"]
    assert media == [("start_rejected", 0, f"call already {ended}: no stream for a call that has ended")]
