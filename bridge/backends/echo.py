"""The echo backend: returns the caller's own audio after a fixed delay.

It proves the phone path both ways without a model: what the caller says comes back `delay_ms` later,
so a correlation between what went in and what came out measures the whole bridge.
"""

from __future__ import annotations

import numpy as np

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE, BackendSession, SpeechBackend, StepOutput


class EchoSession(BackendSession):
    def __init__(self, delay_ms: float) -> None:
        self.delay = int(round(delay_ms * SAMPLE_RATE / 1000))
        # a ring of past audio: delay samples of silence first
        self._line = np.zeros(self.delay + FRAME_SAMPLES, dtype=np.float32)
        self._filled = self.delay

    async def process(self, frame: np.ndarray) -> StepOutput:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"echo backend expects ({FRAME_SAMPLES},) frames, got {frame.shape}")
        line = self._line
        line[self._filled : self._filled + FRAME_SAMPLES] = frame
        out = line[:FRAME_SAMPLES].copy()
        line[: self.delay] = line[FRAME_SAMPLES : FRAME_SAMPLES + self.delay]
        return StepOutput(frames=[out])

    async def close(self) -> None:
        return None


class EchoBackend(SpeechBackend):
    name = "echo"

    def __init__(self, delay_ms: float = 400.0) -> None:
        if delay_ms < 0:
            raise ValueError("echo delay must be >= 0 ms")
        self.delay_ms = delay_ms

    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        return EchoSession(self.delay_ms)
