"""The ground truth of a scripted call's steps and of its double talk, from the emulator's own signals.

Inputs are the step player's log (where each step went on the phone's clock), the caller's clean voice
(before echo and noise) and the speech the phone heard, both found with `audio.find_speech` — the
emulator's own reading of DESIGN's onset convention, never the product's meters. Pure: no I/O.

Definitions (all on the phone's clock, ms since the stream started):
- a Say's or BargeIn's `speech_onset_ms` / `speech_end_ms`: the speech found in its own stretch of the
  caller's voice (its audio alone, so an earlier step's speech cannot merge with it);
- a BargeIn's `model_speech_onset_ms` / `model_stop_ms`: the onset and end of the heard speech segment
  the caller's onset fell into (what the phone really played, cut short by a `clear` or not),
  `stop_ms` = that end - the caller's onset; None (and `over_model` false) when the phone heard no
  speech at the caller's onset. (`model_onset_ms`, from the player, is the onset its own ear acted on.)
- `overlap_ms`: the time both the caller's voice and the heard audio are speech; an interruption by the
  caller is a caller segment whose onset falls inside a heard segment, one by the model the reverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from orchestrator.emulator.audio import RATE, SpeechSegment, find_speech


def _ms(pos: int) -> float:
    return pos * 1000.0 / RATE


def _pos(ms: float) -> int:
    return int(round(ms * RATE / 1000.0))


def _inside(at: int, segs: list[SpeechSegment]) -> SpeechSegment | None:
    return next((s for s in segs if s.onset <= at < s.end), None)


def steps_truth(
    log: list[dict[str, Any]], voice: npt.NDArray[np.generic], heard: list[SpeechSegment]
) -> list[dict[str, Any]]:
    """The step log completed with the speech each spoken step made and, for a BargeIn, the model's stop."""
    out = []
    for entry in log:
        e = dict(entry)
        if e["step"] in ("say", "barge_in") and "audio_start_ms" in e:
            a, b = _pos(e["audio_start_ms"]), _pos(e["end_ms"])
            found = find_speech(voice[a:b], -40.0)
            e["speech_onset_ms"] = _ms(a + found[0].onset) if found else None
            e["speech_end_ms"] = _ms(a + found[-1].end) if found else None
        if e["step"] == "barge_in":
            onset = e.get("speech_onset_ms")
            seg = _inside(_pos(onset), heard) if onset is not None else None
            e["over_model"] = seg is not None
            e["model_speech_onset_ms"] = _ms(seg.onset) if seg is not None else None
            e["model_stop_ms"] = _ms(seg.end) if seg is not None else None
            e["stop_ms"] = _ms(seg.end) - onset if seg is not None and onset is not None else None
        out.append(e)
    return out


def overlap_truth(caller: list[SpeechSegment], heard: list[SpeechSegment]) -> dict[str, float]:
    """Double talk and interruptions by side (see the module docstring)."""
    both = 0
    for c in caller:
        for h in heard:
            both += max(0, min(c.end, h.end) - max(c.onset, h.onset))
    by_caller = sum(1 for c in caller if any(h.onset < c.onset < h.end for h in heard))
    by_model = sum(1 for h in heard if any(c.onset < h.onset < c.end for c in caller))
    return {
        "overlap_ms": _ms(both),
        "interruptions_by_caller": float(by_caller),
        "interruptions_by_model": float(by_model),
    }
