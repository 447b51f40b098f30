"""The echo backend: gives the caller's own audio back, so the phone path is proven both ways.

Two modes:

* ``delay``: everything the caller sends comes back ``delay_ms`` later, sample for sample. A
  correlation between what went in and what came out measures the whole bridge.
* ``turns``: a parrot that takes turns like a conversational model. It optionally speaks a greeting
  first, collects each caller utterance, and repeats it once the caller has been quiet for
  ``hangover_ms``. Response latency, turns and "interactive" then mean what they mean with Moshi, with
  a known endpointing delay. With ``yield_ms`` > 0 it also yields like a conversational model: when
  the caller has talked over its speech for ``yield_ms`` (whole 80 ms frames above -40 dBFS in a row,
  rounded up), it drops the rest of what it was saying and asks the session to `clear` the phone's
  buffer (``StepOutput.clear``). 0 (the default) never yields.
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
        self,
        greeting: Audio | None,
        hangover_ms: float = 400.0,
        min_speech_ms: float = 200.0,
        yield_ms: float = 0.0,
    ) -> None:
        frame_ms = 1000 * FRAME_SAMPLES / SAMPLE_RATE
        self.hang_frames = max(1, round(hangover_ms / frame_ms))
        self.min_frames = max(1, round(min_speech_ms / frame_ms))
        # frames of talk-over before yielding (0: never); ceil, so it never yields sooner than asked
        self.yield_frames = int(np.ceil(yield_ms / frame_ms - 1e-9)) if yield_ms > 0 else 0
        self._talked_over = 0
        self.yields = 0  # times it stopped its own speech for the caller
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
        # talk-over counts only while it still has speech of its own to say
        self._talked_over = self._talked_over + 1 if loud and self._play else 0
        if self.yield_frames and self._talked_over >= self.yield_frames:
            self._play.clear()
            self._talked_over = 0
            self.yields += 1
            return StepOutput(frames=[self._silence], clear=True)
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
        yield_ms: float = 0.0,
    ) -> None:
        if delay_ms < 0:
            raise ValueError("echo delay must be >= 0 ms")
        if not yield_ms >= 0:
            raise ValueError(f"echo yield must be >= 0 ms (0: never yields), got {yield_ms!r}")
        if mode not in MODES:
            raise ValueError(f"echo mode {mode!r}: choose delay or turns")
        self.delay_ms, self.mode, self.greeting, self.hangover_ms = delay_ms, mode, greeting, hangover_ms
        self.yield_ms = yield_ms
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
            return TurnEchoSession(self._greeting_audio, hangover_ms=self.hangover_ms, yield_ms=self.yield_ms)
        return EchoSession(self.delay_ms)
