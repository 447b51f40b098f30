"""The moshi-server backend against the real Kyutai server: `python -m moshi_mlx.local_web` with the
tiny generated weights (tests/moshi/conftest.py) on 127.0.0.1. A backend session, a whole call
through the bridge and the carrier emulator, a server killed mid-call, and local_web's own step
limit (`--steps`, counted over every client since it started) showing up as a stall.

Each server runs in its own process group and is killed with it in teardown
(tests/moshi/local_web_server.py starts and kills them)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE
from bridge.backends.moshi_pool import parse_server_urls
from bridge.backends.moshi_protocol import Handshake
from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig
from tests.moshi.conftest import TinyRepo, started_local_web
from tests.moshi.local_web_server import LocalWeb

pytestmark = [pytest.mark.moshi, pytest.mark.slow]


@pytest.fixture
def fresh_local_web(tiny_repo: TinyRepo, tmp_path: Path) -> Iterator[Any]:
    """A server of the test's own (to kill, or to run out of steps), killed in teardown whatever happens."""
    started: list[LocalWeb] = []

    def start(*extra: str) -> LocalWeb:
        started.append(started_local_web(tiny_repo, tmp_path / f"lw{len(started)}", *extra))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def speechlike(k: int) -> np.ndarray:
    """A voiced-sounding frame: a 150 Hz pulse train's harmonics, amplitude-modulated at 4 Hz."""
    t = (np.arange(FRAME_SAMPLES) + k * FRAME_SAMPLES) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 8))
    return (0.2 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


async def push(session: Any, seconds: float) -> tuple[list[np.ndarray], list[str]]:
    frames: list[np.ndarray] = []
    text: list[str] = []
    for k in range(int(seconds * 12.5)):
        if session.ended is not None:
            break
        out = await session.process(speechlike(k))
        frames += out.frames
        text += out.text
        await asyncio.sleep(0.08)  # about real time: local_web's queues are unbounded
    return frames, text


async def test_a_session_gets_the_handshake_then_audio_and_text_back(local_web: LocalWeb) -> None:
    backend = MoshiServerBackend(MoshiServerConfig(servers=parse_server_urls(local_web.url)))
    session = await backend.open_session("c_0123456789abcdef", max_seconds=60)
    try:
        assert session.handshake == Handshake(None, None)  # local_web sends the kind byte alone
        frames, text = await push(session, 4.0)
    finally:
        await session.close()
    assert session.ended is None, f"{session.ended}\n{local_web.log_tail()}"
    assert len(frames) >= 20 and all(f.shape == (FRAME_SAMPLES,) for f in frames)
    assert all(np.isfinite(f).all() for f in frames) and max(float(np.abs(f).max()) for f in frames) > 0
    assert text, "local_web sends the model's text pieces"
    stats = session.stats()
    assert stats["first_audio_ms"] is not None and stats["lag_frames"] >= 20
    # local_web's web layer answers our ping: the path's share of first audio is one codec pass + half of it
    assert stats["ping_ms_p50"] is not None and stats["ping_ms_p50"] > 0
    assert stats["path_added_ms"] == pytest.approx(stats["opus_delay_ms"] + stats["ping_ms_p50"] / 2)
    assert backend.servers()[0]["in_use"] == 0 and backend.servers()[0]["reachable"] is True


async def test_local_web_sends_the_last_callers_leftovers_to_the_next_and_we_drop_them(
    local_web: LocalWeb,
) -> None:
    backend = MoshiServerBackend(MoshiServerConfig(servers=parse_server_urls(local_web.url)))
    first = await backend.open_session("c_1111111111111111", max_seconds=60)
    for k in range(25):  # 2 s of audio at once, then hang up before the answers come back
        await first.process(speechlike(k))
    await asyncio.sleep(0.3)  # let the writer put it on the wire
    await first.close()
    second = await backend.open_session("c_2222222222222222", max_seconds=60)
    try:
        await asyncio.sleep(3.0)  # send nothing: whatever comes now is the first caller's
        stale = second.stale_samples
        frames, _ = await push(second, 2.0)
    finally:
        await second.close()
    assert stale >= FRAME_SAMPLES, f"local_web sent no leftovers this time\n{local_web.log_tail()}"
    assert frames and second.ended is None


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_a_whole_call_through_local_web_completes_with_first_audio(
    local_web: LocalWeb, tmp_path: Path
) -> None:
    from orchestrator.emulator import CallOptions, Faults, Turn
    from orchestrator.rig import LocalRig, rig_settings

    settings = rig_settings(
        tmp_path, backend="moshi-server", moshi_server_urls=local_web.url, greeting="", max_call_seconds=4.0
    )
    far = CallOptions(
        ring_s=0.1,
        caller_start_s=0.3,
        turns=(Turn(text="Hello Moshi, can you hear me?", wait_for_answer=False),),
        faults=Faults(hangup_after_stream_s=15.0),
    )  # the budget must end it first
    async with LocalRig(settings, tmp_path / "truth") as rig:  # the backend built from the settings
        row = await rig.place(far)
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=40)
        doc = await rig.settled(row["id"])
    assert doc["call"]["state"] == "completed", local_web.log_tail()
    assert doc["call"]["end_reason"].startswith("budget_exhausted"), doc["call"]["end_reason"]
    assert any(e["type"] == "backend_ended" for e in doc["events"])
    m = doc["metrics"]
    assert m["frames_to_model"] >= 20
    assert m.get("first_audio_ms") is not None and m["first_audio_ms"] > 0
    assert truth.stream["frames_sent"] > 0 and m["marks_played"] > 0  # the phone got the model's audio
    assert doc["transcript"], "the model's text pieces are stored per call"
    assert m["backend_path_added_ms"] >= m["opus_delay_ms"] > 0 and m["backend_ping_ms_p50"] > 0
    evidence = {c["criterion"]: c["evidence"] for c in doc["checks"] if c["decided_by"] == "auto"}
    if "first audio heard" in evidence["no_latency_echo_issues"]:
        assert "the remote model's path" in evidence["no_latency_echo_issues"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_a_server_killed_mid_call_ends_the_call_with_the_reason(
    fresh_local_web: Any, tmp_path: Path
) -> None:
    from orchestrator.emulator import CallOptions, Faults, Turn
    from orchestrator.rig import LocalRig, rig_settings
    from orchestrator.web.state import STATE

    server = fresh_local_web()
    settings = rig_settings(
        tmp_path, backend="moshi-server", moshi_server_urls=server.url, greeting="", max_call_seconds=60.0
    )
    far = CallOptions(
        ring_s=0.1,
        caller_start_s=0.3,
        turns=(Turn(text="Hello Moshi, are you there?", wait_for_answer=False),),
        faults=Faults(hangup_after_stream_s=40.0),
    )
    async with LocalRig(settings, tmp_path / "truth") as rig:
        backend = rig.server.app[STATE].backend
        row = await rig.place(far)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # mid-call: the session is live and audio has come back
            sessions = list(getattr(backend, "_sessions", ()))
            if sessions and sessions[0].frames_received >= 5:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the call never got audio from local_web:\n{server.log_tail()}")
        server.kill()
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=30)
        doc = await rig.settled(row["id"])
    reason = doc["call"]["end_reason"]
    assert reason == f"moshi server {server.url}: closed the connection mid-call (code 1006)", reason
    ended = [e for e in doc["events"] if e["type"] == "backend_ended"]
    assert ended and reason in json.dumps(ended[0])
    assert truth.stream["ended"]["reason"] != "hangup"  # our side ended it, not the caller
    assert backend.servers()[0]["last_error"] == "closed the connection mid-call (code 1006)"
    assert not backend.busy


async def test_local_web_stops_answering_after_its_steps_and_the_stall_says_why(
    fresh_local_web: Any,
) -> None:
    # --steps 30: its generator has room for 35 steps, 4 of them spent on its own warm-up.
    server = fresh_local_web("--steps", "30")
    config = MoshiServerConfig(servers=parse_server_urls(server.url), stall_after_s=3.0)
    backend = MoshiServerBackend(config)
    session = await backend.open_session("c_0123456789abcdef", max_seconds=60)
    try:
        frames, _ = await push(session, 15.0)
    finally:
        await session.close()
    assert frames, "it answered until the limit"
    assert session.ended is not None and "stalled: no audio for" in session.ended, session.ended
    assert "--steps" in session.ended
    assert session.frames_received <= 35
    assert "reached max-steps" in server.log_tail(20_000)  # the model process died; the socket did not
