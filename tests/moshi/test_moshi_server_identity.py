"""The moshi-server path against a server whose model is the identity (tests/moshi/identity_server.py):
what comes back is what we sent, two codec passes later, and it is handed over as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from bridge.backends.base import FRAME_SAMPLES
from bridge.backends.moshi_pool import parse_server_urls
from bridge.backends.moshi_protocol import codec_delay_ms
from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig
from tests.moshi.identity_server import IdentityServer, start_identity_server


@pytest.fixture
def identity() -> Iterator[IdentityServer]:
    server = start_identity_server()
    try:
        yield server
    finally:
        server.kill()


async def test_the_audio_comes_back_two_codec_passes_late_and_between_our_frames(
    identity: IdentityServer,
) -> None:
    rng = np.random.default_rng(5)
    clicks = [k * FRAME_SAMPLES + int(rng.integers(200, 1500)) for k in range(20)]
    audio = np.zeros(20 * FRAME_SAMPLES, np.float32)
    for at in clicks:
        audio[at : at + 12] = 0.5
    backend = MoshiServerBackend(MoshiServerConfig(servers=parse_server_urls(identity.url)))
    session = await backend.open_session("c_0123456789abcdef", max_seconds=60)
    back: list[np.ndarray] = []
    between = 0
    try:
        for k in range(20):
            back += (await session.process(audio[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])).frames
            try:  # the answer to this frame arrives before the next one is due
                await asyncio.wait_for(session.frames_ready.wait(), 0.07)
                out = session.take_ready().frames
                between += len(out)
                back += out
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        back += session.take_ready().frames
    finally:
        await session.close()
    assert session.ended is None
    got = np.abs(np.concatenate(back))
    assert got.shape[0] >= 19 * FRAME_SAMPLES
    # clicks are >= 620 samples apart: a 600-sample window after each holds its own echo alone
    delays = [int(np.argmax(got[at : at + 600])) for at in clicks[:-2]]
    expected = 2 * codec_delay_ms() * 24  # samples: our encoder + its decoder, its encoder + our decoder
    assert all(abs(d - expected) <= 3 for d in delays), (delays, expected)
    assert between >= 10, "answers were only handed over at the next process() call"
    assert session.stats()["ping_ms_p50"] is not None
