"""Caller audio on the media clock: bounded gap repair, arrival record, frames for the model.

Pure: no I/O, no clock reads. The caller passes each inbound `media` message's timestamp and payload with
its arrival time (seconds since `start` was received) and gets the 80 ms model frames it completed.

Rules (conventions in DESIGN.md, "Measurements"):

- `media.timestamp` is the time of the frame's first sample; lost audio shows as a jump in it. A jump is
  filled with silence, so the model's clock keeps running, and recorded in `gaps`; one of
  `LONG_GAP_MS` or more is also reported to the caller (`Received.long_gap`).
- Audio for a slot already filled (late or repeated) is counted in `out_of_order` and dropped.
- A timestamp that cannot be real raises `RemoteProtocolError` before anything is recorded: a jump past
  `MAX_GAP_MS` (the repair is bounded), or, when `max_ahead_s` is set, audio from further in the future
  than the time since `start` allows (a line is causal).
- `codes` holds the caller's mu-law at its place on the media clock (timestamp ms * 8), 0xFF in gaps;
  `offset` maps the media clock to ours (local s - media s), taken from the first frame, which left the
  phone after its last sample.
- With a `canceller` (bridge.cancel), the model gets the caller's audio with our own echo taken out;
  `codes` keep what the line sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bridge.cancel import InboundCanceller
from bridge.errors import RemoteProtocolError
from bridge.framing import InboundPipeline
from bridge.protocol import MAX_GAP_MS

RATE = 8000
LONG_GAP_MS = 500


class Received(NamedTuple):
    """What one inbound message produced."""

    frames: Sequence[npt.NDArray[np.float32]] = ()  # complete model frames, in order
    long_gap: tuple[int, int] | None = None  # (timestamp ms, missing ms) of a gap >= LONG_GAP_MS


_NOTHING = Received()


class InboundTrack:
    """One call's inbound audio; see the module docstring."""

    def __init__(
        self, *, max_ahead_s: float | None = None, canceller: InboundCanceller | None = None
    ) -> None:
        self.max_ahead_s = max_ahead_s
        self.canceller = canceller
        self.pipeline = InboundPipeline(canceller=canceller)
        self.codes = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (arrival s since start, timestamp ms)
        self.sizes: list[int] = []  # payload bytes of each arrival (the media trace keeps them)
        self.gaps: list[tuple[int, int]] = []  # (timestamp ms, missing ms)
        self.out_of_order = 0
        self.offset: float | None = None  # local s - media s
        self._next_ts: int | None = None

    def receive(self, timestamp_ms: int, payload: bytes, rel: float) -> Received:
        """Take one message that arrived `rel` seconds after `start`; see the module docstring."""
        ts = timestamp_ms
        ahead = self.max_ahead_s
        if ahead is not None and ts > (rel + ahead) * 1000.0:
            raise RemoteProtocolError(
                f"media.timestamp {ts} ms is {ts - rel * 1000.0:.0f} ms ahead of the "
                f"time since start (limit {ahead * 1000.0:.0f} ms)",
                field="media.timestamp",
            )
        if (
            ts - (self._next_ts or 0) > MAX_GAP_MS
        ):  # MediaStream refuses these first; a guard for other feeders
            raise RemoteProtocolError(
                f"media.timestamp jumped past the limit of {MAX_GAP_MS} ms", field="media.timestamp"
            )
        self.arrivals.append((rel, ts))
        self.sizes.append(len(payload))
        next_ts = self._next_ts
        if next_ts is not None and ts < next_ts:
            self.out_of_order += 1  # late or repeated audio: its slot was already filled
            return _NOTHING
        silence: list[npt.NDArray[np.float32]] = []
        long_gap = None
        if next_ts is not None and ts > next_ts:
            missing = ts - next_ts
            self.gaps.append((next_ts, missing))
            silence = self.pipeline.push_silence(missing * RATE // 1000)
            if missing >= LONG_GAP_MS:
                long_gap = (next_ts, missing)
        pos = ts * RATE // 1000
        codes = self.codes
        if len(codes) < pos:
            codes.extend(b"\xff" * (pos - len(codes)))
        codes[pos : pos + len(payload)] = payload
        self._next_ts = ts + len(payload) * 1000 // RATE
        if self.offset is None:
            self.offset = rel - ts / 1000 - len(payload) / RATE  # sent after its last sample
            if self.canceller is not None:
                self.canceller.offset = self.offset
        frames = self.pipeline.push(payload)
        if silence:
            frames = silence + frames
        return Received(frames, long_gap) if frames or long_gap else _NOTHING
