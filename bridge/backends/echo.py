"""The echo backend: gives the caller's own audio back, so the phone path is proven both ways.

Two modes:

* ``delay``: everything the caller sends comes back ``delay_ms`` later, sample for sample. A
  correlation between what went in and what came out measures the whole bridge.
* ``turns``: a parrot that takes turns like a conversational model. It optionally speaks a greeting
  first, collects each caller utterance, and repeats it once the caller has been quiet for
  ``hangover_ms``. Response latency, turns and "interactive" then mean what they mean with Moshi, with
  a known endpointing delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import numpy as np

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE, Audio, BackendSession, SpeechBackend, StepOutput

log = logging.getLogger(__name__)
MODES = ("delay", "turns")
_SPEECH_DBFS = -40.0


class EchoSession(BackendSession):
    def __init__(self, delay_ms: float) -> None:
        self.delay = int(round(delay_ms * SAMPLE_RATE / 1000))
        # a line of past audio: `delay` samples of silence first
        self._line = np.zeros(self.delay + FRAME_SAMPLES, dtype=np.float32)

    async def process(self, frame: Audio) -> StepOutput:
        _check(frame)
        line = self._line
        line[self.delay : self.delay + FRAME_SAMPLES] = frame
        out = line[:FRAME_SAMPLES].copy()
        line[: self.delay] = line[FRAME_SAMPLES : FRAME_SAMPLES + self.delay]
        return StepOutput(frames=[out])

    async def close(self) -> None:
        return None


class TurnEchoSession(BackendSession):
    """Repeats each utterance after the caller pauses; speaks `greeting` (24 kHz float32) first."""

    def __init__(
        self, greeting: Audio | None, hangover_ms: float = 400.0, min_speech_ms: float = 200.0
    ) -> None:
        frame_ms = 1000 * FRAME_SAMPLES / SAMPLE_RATE
        self.hang_frames = max(1, round(hangover_ms / frame_ms))
        self.min_frames = max(1, round(min_speech_ms / frame_ms))
        self._play: deque[Audio] = deque()
        if greeting is not None and len(greeting):
            pad = (-len(greeting)) % FRAME_SAMPLES
            audio = np.concatenate([greeting, np.zeros(pad, np.float32)]).astype(np.float32)
            self._play.extend(audio.reshape(-1, FRAME_SAMPLES))
        self._utterance: list[Audio] = []
        self._loud = 0
        self._quiet = 0
        self._previous: Audio | None = None
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)

    async def process(self, frame: Audio) -> StepOutput:
        _check(frame)
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
        loud = 20 * np.log10(max(rms, 1e-9)) > _SPEECH_DBFS
        if loud:
            if not self._utterance and self._previous is not None:
                self._utterance.append(self._previous)  # one frame of pre-roll keeps the onset
            self._utterance.append(frame.copy())
            self._loud += 1
            self._quiet = 0
        elif self._utterance:
            self._utterance.append(frame.copy())
            self._quiet += 1
            if self._quiet >= self.hang_frames:
                if self._loud >= self.min_frames:
                    self._play.extend(self._utterance[: len(self._utterance) - self._quiet + 1])
                self._utterance, self._loud, self._quiet = [], 0, 0
        self._previous = frame.copy()
        return StepOutput(frames=[self._play.popleft() if self._play else self._silence])

    async def close(self) -> None:
        return None


def _check(frame: Audio) -> None:
    if frame.shape != (FRAME_SAMPLES,):
        raise ValueError(f"echo backend expects ({FRAME_SAMPLES},) frames, got {frame.shape}")


class EchoBackend(SpeechBackend):
    name = "echo"

    def __init__(
        self,
        delay_ms: float = 400.0,
        mode: str = "delay",
        greeting: str | None = None,
        hangover_ms: float = 400.0,
    ) -> None:
        if delay_ms < 0:
            raise ValueError("echo delay must be >= 0 ms")
        if mode not in MODES:
            raise ValueError(f"echo mode {mode!r}: choose delay or turns")
        self.delay_ms, self.mode, self.greeting, self.hangover_ms = delay_ms, mode, greeting, hangover_ms
        self._greeting_audio: Audio | None = None

    async def load(self) -> None:
        if self.mode == "turns" and self.greeting:
            from bridge.backends.playback import speak

            try:
                self._greeting_audio = await asyncio.to_thread(speak, self.greeting)
            except Exception as exc:
                log.warning("echo backend: no greeting (%s)", exc)

    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        if self.mode == "turns":
            return TurnEchoSession(self._greeting_audio, hangover_ms=self.hangover_ms)
        return EchoSession(self.delay_ms)
