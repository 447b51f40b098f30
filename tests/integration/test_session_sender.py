"""The media session's sender: paced bursts handed to the socket writer in one call, clears that go out alone."""

from __future__ import annotations

import asyncio
import json

from bridge.backends.echo import EchoSession
from bridge.protocol import Media, MediaStream, Start
from bridge.session import MediaSession, SessionConfig

SID = "MZ" + "1" * 32


def started_stream() -> MediaStream:
    stream = MediaStream()
    stream.receive_text(Start(1, SID, "AC" + "0" * 32, "CA" + "0" * 32).serialize())
    assert stream.events_received()
    return stream


async def test_bursts_carry_every_chunk_and_mark_in_order_and_a_clear_goes_out_alone() -> None:
    sends: list[list[str]] = []

    async def send(texts: list[str]) -> None:
        sends.append(list(texts))

    stream = started_stream()
    config = SessionConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=5)
    session = MediaSession(call_id="c", stream=stream, backend=EchoSession(0.0), send=send, config=config)
    session.start()
    loop = asyncio.get_running_loop()
    for i in range(20):  # 400 ms of caller audio, at real-time pace, each 20 ms frame a distinct byte
        session.on_media(Media(i + 2, SID, "inbound", i + 1, 20 * i, bytes([i + 1]) * 160), loop.time())
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    messages = [json.loads(t) for batch in sends for t in batch]
    media = [m for m in messages if m["event"] == "media"]
    marks = [m["mark"]["name"] for m in messages if m["event"] == "mark"]
    assert len(media) == 20 and len(media) == len(session.sent_codes) // 160
    assert marks == ["m1", "m2", "m3", "m4"]  # one after every 5th chunk, in order
    # every mark follows exactly the chunks before it: chunk, chunk, ..., mark
    kinds = [m["event"] for m in messages]
    assert [i for i, k in enumerate(kinds) if k == "mark"] == [5, 11, 17, 23]
    # chunks of a model frame leave together: fewer socket writes than messages
    assert len(sends) < len(messages) and max(len(b) for b in sends) >= 4
    assert all(batch for batch in sends)  # nothing empty handed to the writer

    n = len(sends)
    session.clear()  # barge-in with nothing left to send: the clear must still go out now
    await asyncio.sleep(0.05)
    assert [json.loads(t)["event"] for t in sends[n]] == ["clear"]
    await session.finish("test")
