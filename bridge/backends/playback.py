"""The playback backend: plays a WAV file or a spoken prompt, then listens (returns silence).

Useful to check that a caller hears the far end, and as a stand-in "assistant" greeting. The prompt is
spoken with espeak-ng when no WAV is given; audio is resampled once with soxr (one-shot work).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import soxr

from bridge.backends.base import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Audio,
    BackendError,
    BackendSession,
    SpeechBackend,
    StepOutput,
)
from bridge.speech import SpeechUnavailable, read_wav_mono, synthesize

DEFAULT_PROMPT = "Hello, this is the playback backend. I can hear you. Goodbye for now."


def read_wav_float(path: Path) -> tuple[Audio, int]:
    """The WAV as mono float32 in [-1, 1], and its rate."""
    try:
        samples, rate = read_wav_mono(path)
    except ValueError as exc:
        raise BackendError(str(exc)) from exc
    return samples / 32768.0, rate


def speak(text: str, rate: int = SAMPLE_RATE) -> Audio:
    """Text to float32 speech at `rate` with espeak-ng (blocking: call it off the event loop)."""
    try:
        pcm = synthesize(text, rate)
    except SpeechUnavailable as exc:
        raise BackendError(f"{exc} (or give a WAV file)") from exc
    return pcm.astype(np.float32) / 32768.0


class PlaybackSession(BackendSession):
    def __init__(self, audio: Audio) -> None:
        pad = (-len(audio)) % FRAME_SAMPLES
        self._audio = np.concatenate([audio, np.zeros(pad, dtype=np.float32)]).astype(np.float32)
        self._pos = 0
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)

    async def process(self, frame: Audio) -> StepOutput:
        if self._pos >= len(self._audio):
            return StepOutput(frames=[self._silence])
        out = self._audio[self._pos : self._pos + FRAME_SAMPLES]
        self._pos += FRAME_SAMPLES
        return StepOutput(frames=[out])

    async def close(self) -> None:
        return None


class PlaybackBackend(SpeechBackend):
    name = "playback"

    def __init__(
        self, wav: Path | None = None, prompt: str = DEFAULT_PROMPT, lead_silence_s: float = 0.5
    ) -> None:
        self.wav = wav
        self.prompt = prompt
        self.lead_silence_s = lead_silence_s
        self._audio: Audio | None = None

    async def load(self) -> None:
        if self.wav is not None:
            data, rate = await asyncio.to_thread(read_wav_float, self.wav)
            audio = soxr.resample(data, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else data
        else:
            audio = await asyncio.to_thread(speak, self.prompt)
        lead = np.zeros(int(self.lead_silence_s * SAMPLE_RATE), dtype=np.float32)
        self._audio = np.concatenate([lead, audio])

    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        if self._audio is None:
            await self.load()
        assert self._audio is not None
        return PlaybackSession(self._audio)
