"""Double talk on a call: overlap, interruptions by side, and barge-ins with how soon the model stopped.

Inputs are speech segments on one clock: the caller's (VAD on the inbound track) and the model's as the
phone heard it (the played track, placed by the playout clock, flushed audio left out), so "the model
stopped" means its audio stopped *at the phone*, not that we stopped sending.

Definitions:
- `overlap_ms`: total time both sides are speech at once.
- an interruption by the caller is a caller segment starting strictly inside a model segment; one by
  the model, a model segment starting strictly inside a caller segment (Twilio's Voice Insights counts
  interruptions by customer and by agent the same way).
- a barge-in is an interruption by the caller; its stop time is the model segment's end - the caller's
  onset. A stop later than `max_stop_s` counts as unstopped: the model talked on over the caller.

Pure: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.meters.vad import Segment

__all__ = ["BargeIn", "DoubleTalk", "double_talk"]

MAX_STOP_S = 3.0


@dataclass(frozen=True, slots=True)
class BargeIn:
    caller_onset_s: float
    model_end_s: float  # end of the model's audio at the phone
    stopped: bool  # within max_stop_s

    @property
    def stop_ms(self) -> float:
        return (self.model_end_s - self.caller_onset_s) * 1000.0


@dataclass(frozen=True, slots=True)
class DoubleTalk:
    overlap_ms: float
    interruptions_by_caller: int
    interruptions_by_model: int
    barge_ins: tuple[BargeIn, ...]

    def metrics(self) -> dict[str, float]:
        """As call metrics: counts always, `barge_in_stop_ms` (median of the stopped ones) when any."""
        stopped = [b.stop_ms for b in self.barge_ins if b.stopped]
        out = {
            "overlap_ms": self.overlap_ms,
            "interruptions_by_caller": float(self.interruptions_by_caller),
            "interruptions_by_model": float(self.interruptions_by_model),
            "barge_ins": float(len(self.barge_ins)),
            "barge_in_unstopped": float(len(self.barge_ins) - len(stopped)),
        }
        if stopped:
            out["barge_in_stop_ms"] = float(np.median(stopped))
        return out


def double_talk(caller: list[Segment], model: list[Segment], max_stop_s: float = MAX_STOP_S) -> DoubleTalk:
    both = sum(max(0.0, min(c.end_s, m.end_s) - max(c.start_s, m.start_s)) for c in caller for m in model)
    barge: list[BargeIn] = []
    for c in caller:
        over = next((m for m in model if m.start_s < c.start_s < m.end_s), None)
        if over is not None:
            barge.append(BargeIn(c.start_s, over.end_s, over.end_s - c.start_s <= max_stop_s))
    by_model = sum(1 for m in model if any(c.start_s < m.start_s < c.end_s for c in caller))
    return DoubleTalk(both * 1000.0, len(barge), by_model, tuple(barge))
