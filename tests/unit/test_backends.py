"""The echo and playback backends: exact outputs for known inputs."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE
from bridge.backends.echo import EchoBackend
from bridge.backends.playback import PlaybackBackend


def frames_of(x: np.ndarray) -> list[np.ndarray]:
    return list(x.astype(np.float32).reshape(-1, FRAME_SAMPLES))


async def test_echo_delay_mode_returns_the_input_exactly_delay_later() -> None:
    backend = EchoBackend(delay_ms=250.0)
    session = await backend.open_session("c", 60)
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, FRAME_SAMPLES * 10)
    out = np.concatenate([(await session.process(f)).frames[0] for f in frames_of(x)])
    d = int(0.25 * SAMPLE_RATE)
    assert np.array_equal(out[:d], np.zeros(d, np.float32))
    assert np.array_equal(out[d:], x[: len(x) - d].astype(np.float32))


async def test_echo_turns_mode_repeats_an_utterance_after_the_pause() -> None:
    backend = EchoBackend(mode="turns", hangover_ms=400.0)
    session = await backend.open_session("c", 60)
    t = np.arange(FRAME_SAMPLES * 8) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)  # 640 ms "utterance"
    silence = np.zeros(FRAME_SAMPLES * 20, np.float32)
    outs = [(await session.process(f)).frames[0] for f in frames_of(np.concatenate([speech, silence]))]
    loud = [k for k, f in enumerate(outs) if np.sqrt(np.mean(f**2)) > 0.01]
    assert loud, "the utterance was repeated"
    # it starts on the step that completes 400 ms (5 frames) of quiet after the 8 speech frames
    assert loud[0] == 8 + 5 - 1
    assert len(loud) == 8
    assert np.allclose(np.concatenate([outs[k] for k in loud]), speech, atol=1e-6)


async def test_playback_plays_the_wav_then_listens(tmp_path: Path) -> None:
    wav = tmp_path / "prompt.wav"
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE)).astype("<i2")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(tone.tobytes())
    backend = PlaybackBackend(wav=wav, lead_silence_s=0.0)
    await backend.load()
    session = await backend.open_session("c", 60)
    silence = np.zeros(FRAME_SAMPLES, np.float32)
    outs = np.concatenate([(await session.process(silence)).frames[0] for _ in range(10)])
    played = outs[: len(tone)]
    assert np.allclose(played, tone / 32768.0, atol=1e-4)
    assert not outs[-FRAME_SAMPLES:].any()  # then silence: it listens


def test_echo_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        EchoBackend(delay_ms=-1)
    with pytest.raises(ValueError):
        EchoBackend(mode="parrot")


def test_backend_errors_sit_in_the_bridge_hierarchy() -> None:
    # One except BridgeError catches everything the media path raises, a backend's refusal included;
    # the names backends have always imported still work.
    from bridge.backends import base
    from bridge.errors import BackendBusy, BackendError, BridgeError

    assert base.BackendError is BackendError and base.BackendBusy is BackendBusy
    assert issubclass(BackendBusy, BackendError) and issubclass(BackendError, BridgeError)
