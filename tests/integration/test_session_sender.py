"""The media session's sender: paced bursts handed to the socket writer in one call, clears that go out alone."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from bridge.backends.base import Audio, StepOutput
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


class LateAnswers(EchoSession):
    """A remote-like session: nothing comes back from process(); answers are handed over later, between
    two inbound frames, through `frames_ready` (as the moshi-server session does when its server replies)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.ready = asyncio.Event()
        self.waiting: list[StepOutput] = []
        self.taken = 0

    async def process(self, frame: Audio) -> StepOutput:
        await super().process(frame)
        return StepOutput()

    @property
    def frames_ready(self) -> asyncio.Event:
        return self.ready

    def take_ready(self) -> StepOutput:
        self.taken += 1
        return self.waiting.pop() if self.waiting else StepOutput()

    def answer(self, out: StepOutput) -> None:
        self.waiting.append(out)
        self.ready.set()


async def test_an_answer_between_two_inbound_frames_is_sent_without_waiting_for_the_next_one() -> None:
    sends: list[list[str]] = []

    async def send(texts: list[str]) -> None:
        sends.append(list(texts))

    backend = LateAnswers()
    config = SessionConfig(jitter_buffer_s=0.0)
    session = MediaSession(call_id="c", stream=started_stream(), backend=backend, send=send, config=config)
    session.start()
    loop = asyncio.get_running_loop()
    for i in range(4):  # one 80 ms model frame of caller audio, then the caller's stream stops
        session.on_media(Media(i + 2, SID, "inbound", i + 1, 20 * i, b"\xff" * 160), loop.time())
    await asyncio.sleep(0.05)
    assert not sends  # process() answered nothing
    backend.answer(StepOutput(frames=[np.full(1920, 0.25, np.float32)]))
    await asyncio.sleep(0.05)  # no inbound frame in between: only the drain can have sent it
    media = [json.loads(t) for batch in sends for t in batch if json.loads(t)["event"] == "media"]
    assert backend.taken == 1 and len(media) >= 1
    backend.ended = "moshi server gone"  # an end noticed between frames ends the session too
    backend.ready.set()
    await asyncio.wait_for(session.done.wait(), 1.0)
    assert session.end_reason == "moshi server gone"
    await session.finish("test")
