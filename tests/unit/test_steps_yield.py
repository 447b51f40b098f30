"""A backend that yields mid-speech (the echo backend's ECHO_YIELD_MS) makes the media session send Twilio
a `clear`; what it says after that is silence.

Truth is the schedule the test feeds: quiet caller frames while the greeting plays, then a caller who
talks over it; the yield must come after the talk-over it was set to, and the clear on the wire with it.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from bridge.backends.echo import TurnEchoSession
from bridge.g711 import ulaw_decode
from bridge.protocol import Media, MediaStream, Start
from bridge.session import MediaSession, SessionConfig

SID = "MZ" + "2" * 32
QUIET, LOUD = b"\xff" * 160, b"\x20" * 160  # mu-law silence; a loud constant level


async def test_a_yield_sends_a_clear_and_cuts_the_playout() -> None:
    sends: list[list[str]] = []

    async def send(texts: list[str]) -> None:
        sends.append(list(texts))

    stream = MediaStream()
    stream.receive_text(Start(1, SID, "AC" + "0" * 32, "CA" + "0" * 32).serialize())
    stream.events_received()
    greeting = np.full(1920 * 30, 0.1, np.float32)  # 2.4 s of the backend's own "speech"
    backend = TurnEchoSession(greeting, yield_ms=160.0)
    config = SessionConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=5)
    session = MediaSession(call_id="y", stream=stream, backend=backend, send=send, config=config)
    session.start()
    loop = asyncio.get_running_loop()
    talk_from = 20  # frames: 400 ms quiet, then the caller talks over the greeting
    for i in range(40):
        session.on_media(
            Media(i + 2, SID, "inbound", i + 1, 20 * i, QUIET if i < talk_from else LOUD), loop.time()
        )
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    messages = [json.loads(t) for batch in sends for t in batch]
    kinds = [m["event"] for m in messages]
    assert kinds.count("clear") == 1 and backend.yields == 1
    media_before = kinds[: kinds.index("clear")].count("media")
    # it yielded on its 7th step, the second with 80 ms of talk-over: six greeting frames (24 chunks) came
    # before, of which the pacer may still have held up to its lead (100 ms = 5 chunks) when it cleared
    assert 24 - 6 <= media_before <= 24
    # the clock plays nothing of the greeting after the clear: no chunk before it ends past the last one sent
    chunks = session.playout.chunks[:media_before]
    assert max(c.playout_end for c in chunks) <= chunks[-1].send_time + 0.1 + 1e-6
    after = ulaw_decode(bytes(session.sent_codes)[media_before * 160 :]).astype(np.float64)
    # nothing but silence after the clear (past the resampler's few samples of filter tail)
    assert after.size > 1600 and np.max(np.abs(after[80:])) == 0
    assert len(session.evidence().sends) == len(session.playout.chunks)  # the evidence still reads
    await session.finish("test")
