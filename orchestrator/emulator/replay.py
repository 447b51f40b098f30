"""A recorded caller played again: the frames of a media trace, sent when they arrived the first time.

`orchestrator replay` reads a call's trace (bridge.trace) and gives the emulator a `ReplayCaller`
instead of a scripted one. Each phone tick hands over the frames whose recorded arrival falls in it,
with their recorded timestamp and payload, to be sent at their recorded time after `start` (see `of`
for which clock that is): the line's
loss, jitter, order and echo are in the recording, so no fault, echo path or noise is added to them.
The model's new answers are still played, heard and marked by the emulated phone as on any call.

Pure: no I/O, no clock reads; the media client calls `due(until_s)` once per 20 ms tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ReplayCaller", "ReplayCursor", "ReplayFrame"]

FRAME_S = 0.02


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    at_s: float  # when to send it, s after `start`: its recorded arrival, on the phone's clock
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True, eq=False)
class ReplayCaller:
    """The frames of one recorded stream, in order of their recorded arrival (immutable: a number set to
    replay can be dialled twice; each stream reads it through its own `cursor()`)."""

    frames: tuple[ReplayFrame, ...]
    ended_s: float | None = None  # when the recorded stream ended, on the same clock as the frames

    @classmethod
    def of(cls, frames: Iterable[tuple[float, int, bytes]], ended_s: float | None = None) -> ReplayCaller:
        """From a trace's (arrival s after the server's `start`, timestamp ms, payload) frames.

        The recorded arrivals count from when the *server* read `start`, which came some unknown time
        after the phone sent it (23 ms on a busy server); replayed as they are, they would land that
        much earlier on the new stream's media clock. So all are shifted by one constant: the least
        delayed frame leaves exactly when its last sample exists (a line is causal), and every other
        keeps its recorded delay over that one: the line's jitter, bursts and order, as recorded."""
        got = [(float(at), int(ts), bytes(p)) for at, ts, p in frames]
        if not got:
            return cls(())
        shift = min(at - (ts + len(p) / 8.0) / 1000.0 for at, ts, p in got)
        end = None if ended_s is None or not math.isfinite(ended_s) else ended_s - shift
        return cls(tuple(ReplayFrame(at - shift, ts, p) for at, ts, p in got), end)

    @property
    def end_s(self) -> float:
        """When the replayed caller hangs up: when the recorded stream ended, or else one tick after its
        last frame (never before the last frame is out)."""
        last = self.frames[-1].at_s if self.frames else 0.0
        return max(last, self.ended_s) if self.ended_s is not None else last + FRAME_S

    def cursor(self) -> ReplayCursor:
        return ReplayCursor(self.frames)


class ReplayCursor:
    """One stream's place in a ReplayCaller."""

    def __init__(self, frames: tuple[ReplayFrame, ...]) -> None:
        self.frames = frames
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self.frames)

    def due(self, until_s: float) -> list[ReplayFrame]:
        """Frames that arrived before `until_s` (s after `start`) and were not handed out yet."""
        out = []
        frames, i = self.frames, self._next
        while i < len(frames) and frames[i].at_s < until_s:
            out.append(frames[i])
            i += 1
        self._next = i
        return out
