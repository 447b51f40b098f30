"""Fault specifications for emulated calls, and the seeded plans that decide them frame by frame.

Everything here is pure: value types and deterministic plans built from a seed. No I/O, no clock
reads, no sleeps — the call playback (`calls.py`) and the media client (`media.py`) apply the plans
and record what they did in the ground truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# Callback statuses a fault may name (the CallStatus values the emulator fires).
CALL_STATUSES = (
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
)


@dataclass(frozen=True, slots=True)
class EchoSpec:
    """An acoustic echo path at the phone: what the phone heard comes back in what it sends.

    `delay_ms` is the bulk delay from a sample being played to the phone until it is captured again
    (handset, codec and hybrid; by inbound timestamps, exactly the echo delay a meter should find on a
    pure path); `loss_db` is the echo return loss of the whole path (for a room: over the whole
    response's energy). `room=True` puts a room after the bulk delay (`audio.room_impulse_response`):
    reverberation time `rt60_s`, loudspeaker-to-microphone distance `distance_m`; the first arrival is
    then `delay_ms` + distance / c, which is what the truth's `direct_delay_ms` says.
    """

    delay_ms: float = 120.0
    loss_db: float = 20.0
    room: bool = False
    rt60_s: float = 0.25
    distance_m: float = 0.5


@dataclass(frozen=True, slots=True)
class CallbackFaults:
    """Faults in status-callback delivery.

    - `shuffle`: hold the callbacks fired before the call is answered (or ends) and deliver them
      together, in a seeded order that differs from the fired order.
    - `duplicate`: CallStatus values (or "*") delivered twice at once, with the same
      `I-Twilio-Idempotency-Token`.
    - `retry`: CallStatus values (or "*") delivered again `retry_after_s` later as a retry (same token).
    - `bad_signature`: a CallStatus value; one extra, forged callback claiming it is sent
      `bad_signature_after_s` after the answer (or after the first callback when never answered),
      signed with the wrong key. A server must reject it and leave the call alone.
    """

    shuffle: bool = False
    duplicate: tuple[str, ...] = ()
    retry: tuple[str, ...] = ()
    retry_after_s: float = 0.5
    bad_signature: str | None = None
    bad_signature_after_s: float = 0.3

    def duplicates(self, status: str) -> bool:
        return "*" in self.duplicate or status in self.duplicate

    def retries(self, status: str) -> bool:
        return "*" in self.retry or status in self.retry


@dataclass(frozen=True, slots=True)
class Faults:
    """Everything the emulator can do wrong on purpose, per call.

    Frame numbers in `lost_frames` count audio frames from 1 (frame n carries timestamp
    (n-1)*20 ms); a lost frame is never sent, so the next `media` keeps the consecutive `chunk`
    number and its `timestamp` jumps by 20 ms per lost frame, as on Twilio. `loss_rate` loses
    frames at random (seeded). `jitter_ms` delays each frame's send by a random 0..jitter_ms
    (seeded; order kept, timestamps unchanged). `noise_dbfs` adds white noise at that RMS level.
    Hang-ups are measured from the answer or from the stream's `start`.
    """

    jitter_ms: float = 0.0
    lost_frames: tuple[int, ...] = ()
    loss_rate: float = 0.0
    echo: EchoSpec | None = None
    noise_dbfs: float | None = None
    hangup_after_answer_s: float | None = None
    hangup_after_stream_s: float | None = None
    callbacks: CallbackFaults = field(default_factory=CallbackFaults)
    seed: int = 0


@dataclass(frozen=True, slots=True)
class FrameFate:
    """What happens to one inbound audio frame: lost, or sent `delay_s` after its deadline."""

    lost: bool
    delay_s: float


class FramePlan:
    """Seeded, deterministic fate of each inbound frame (call `fate` with frames in order)."""

    def __init__(self, faults: Faults) -> None:
        self._lost = frozenset(faults.lost_frames)
        self._rate = faults.loss_rate
        self._jitter_s = faults.jitter_ms / 1000.0
        # Separate streams so that adding jitter never changes which frames are lost.
        self._loss_rng = random.Random(f"loss:{faults.seed}")
        self._jitter_rng = random.Random(f"jitter:{faults.seed}")

    def fate(self, frame: int) -> FrameFate:
        """Fate of frame number `frame` (from 1)."""
        random_loss = self._loss_rng.random() < self._rate if self._rate > 0 else False
        delay = self._jitter_rng.uniform(0.0, self._jitter_s) if self._jitter_s > 0 else 0.0
        return FrameFate(lost=frame in self._lost or random_loss, delay_s=delay)


def shuffled(items: list[T], seed: int) -> list[T]:
    """A seeded permutation of `items` that differs from their order whenever that is possible."""
    out = list(items)
    if len(out) < 2:
        return out
    random.Random(f"shuffle:{seed}").shuffle(out)
    if out == items:
        out.reverse()
    return out
