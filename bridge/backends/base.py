"""The speech-backend interface: what the media session talks to.

A backend turns the caller's audio into the model's audio. The media session owns the clock: it
pushes one 80 ms frame (1920 float32 samples at 24 kHz, range [-1, 1]) each time one has arrived from
the phone, and sends on whatever frames the backend has ready. One frame in is one step; a step may
return zero or more output frames (a pipelined model returns nothing for its first few steps).

Rules every implementation keeps:
- `process()` never blocks the event loop: model compute runs in a worker thread or process.
- Every wait inside a backend has a timeout; a backend that can no longer produce audio sets
  `ended` to a reason instead of hanging, and the session ends the call with that reason.
- One `SpeechBackend` may refuse a second concurrent session with `BackendBusy` (Moshi serves one
  call at a time); `busy` tells a caller before it dials.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# re-exported: backends and their callers import them from here
from bridge.errors import BackendBusy as BackendBusy
from bridge.errors import BackendError as BackendError

SAMPLE_RATE = 24_000
FRAME_SAMPLES = 1920  # 80 ms at 24 kHz: one Mimi / Moshi step


Audio = npt.NDArray[np.float32]  # mono float32 samples (24 kHz frames of 1920 inside the bridge)


def frame_pcm(frame: Audio, call_id: str) -> Audio:
    """One frame as the backends take it: contiguous float32 of exactly FRAME_SAMPLES, else ValueError."""
    pcm = np.ascontiguousarray(frame, dtype=np.float32).reshape(-1)
    if pcm.shape != (FRAME_SAMPLES,):
        raise ValueError(f"call {call_id}: frame must be ({FRAME_SAMPLES},) samples, got {frame.shape}")
    return pcm


@dataclass(slots=True)
class StepOutput:
    """What one `process()` step produced."""

    frames: list[Audio] = field(default_factory=list)  # each (1920,) float32 at 24 kHz
    text: list[str] = field(default_factory=list)  # text pieces the model emitted, in order
    step_ms: float | None = None  # model compute time of this step, when the backend measures it
    # the backend stopped its own speech mid-way (it yielded to the caller): drop what is still buffered
    # at the phone (the session sends Twilio a `clear`) before these frames play
    clear: bool = False


class BackendSession(abc.ABC):
    """One call's conversation with a backend."""

    #: Why this session can no longer produce audio (budget spent, worker died); None while healthy.
    ended: str | None = None

    @abc.abstractmethod
    async def process(self, frame: Audio) -> StepOutput:
        """Push one (1920,) float32 frame of caller audio; return what is ready to play."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release per-call state. Safe to call twice."""

    @property
    def frames_ready(self) -> asyncio.Event | None:
        """For a backend whose answers arrive on their own clock (a remote server): an event it sets when
        frames are ready between two `process()` calls; the bridge then takes them with `take_ready()`
        at once instead of at the next inbound frame. None (the default): answers come from `process()`."""
        return None

    def take_ready(self) -> StepOutput:
        """What is ready to play now, without pushing a frame (only called when `frames_ready` is set)."""
        return StepOutput()

    def evidence(self) -> dict[str, float]:
        """What this session measured that the media session cannot see (a remote server's handshake and
        round trip, say), as call metrics: name -> value, times in ms (names end `_ms` or `_ms_pNN`),
        other figures counts. Read once, after `close()`; empty by default."""
        return {}


class SpeechBackend(abc.ABC):
    """A kind of speech backend, loaded once per server process."""

    name: str = "abstract"
    #: Seconds from load start to ready (warm-up included), once `load()` has run.
    load_seconds: float | None = None

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights and warm up. Backends with nothing to load keep this as is."""

    @property
    def busy(self) -> bool:
        """True when `open_session` would raise BackendBusy right now."""
        return False

    @property
    def capacity(self) -> int | None:
        """Calls this backend can hold at once; None: no limit of its own (a worker then says how many)."""
        return None

    def servers(self) -> list[dict[str, object]]:
        """The model servers behind this backend, each a dict with at least `url`, `capacity`, `in_use`,
        `reachable` (None: not tried yet) and `last_error`; empty when the model runs in this process."""
        return []

    @abc.abstractmethod
    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        """Start a conversation for one call, with fresh state and a budget of max_seconds of audio."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the backend (worker threads, model memory)."""
