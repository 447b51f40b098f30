"""The scripted caller's microphone and keypad, step by step (`steps.Step`), as a pure state machine.

`StepPlayer.next_frame(heard_onset)` is called once per 20 ms tick of the phone's clock with the onset
sample of the speech the phone is hearing now (None when it hears none; the phone's own `SpeechDetector`
on what it played); it returns the microphone's frame. `take_dtmf()` then gives the digits to send at
this tick. Positions are samples since the stream started, on the phone's clock, the same clock as the
heard audio (frame k is heard and captured over samples [160k, 160k + 160)).

Rules:
- `Say` plays its audio from where the previous step ended, to the sample; `Silence` is zeros.
- `WaitForReply` waits (silent) until the phone has heard speech and then none (the detector closes a
  segment 300 ms after it ends), or `timeout_s`; it is decided once per frame.
- `BargeIn` waits (silent) for heard speech, up to `timeout_s`; it then speaks from the heard onset +
  `after_s` (never earlier than now: the onset is known 50 ms after it). On a timeout it speaks at once
  and says so (`timed_out`).
- `Dtmf` starts on a frame boundary (a key press is sent with a tick); digit i goes at the first tick
  at or after start + i * gap_s; the step lasts len(digits) * gap_s, rounded up to whole frames.
- `Hangup` marks the script as hung up; the media client then ends the stream as `hangup_after_turns`
  does. Frames after the last step are silence.

What each step did is appended to `log` (ms on the phone's clock); the media client completes it with
the speech found in the signals and writes it into the ground truth. No I/O, no clock reads, no sleeps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from orchestrator.emulator.audio import FRAME, RATE, Pcm, Turn
from orchestrator.emulator.steps import (
    BargeIn,
    Dtmf,
    Hangup,
    Say,
    Silence,
    Step,
    WaitForReply,
    check_step,
    step_name,
)


def _ms(pos: int) -> float:
    return pos * 1000.0 / RATE


@functools.lru_cache(maxsize=64)
def _speech(text: str | None, wav: str | None) -> Pcm:
    pcm = Turn(text=text, wav=wav).render()
    pcm.setflags(write=False)  # shared between calls
    return pcm


def render_steps(steps: Sequence[Step]) -> list[tuple[Step, Pcm | None]]:
    """Each step with its audio (Say and BargeIn; None for the others). I/O: espeak-ng or the WAV; cached."""
    for step in steps:
        check_step(step)
    return [(s, _speech(s.text, s.wav) if isinstance(s, Say | BargeIn) else None) for s in steps]


class StepPlayer:
    """Plays rendered steps (see the module docstring). `done`: every step played; `hung_up`: a Hangup ran."""

    def __init__(self, steps: Sequence[tuple[Step, Pcm | None]], start_after_s: float = 0.5) -> None:
        self._steps = list(steps)
        self._pos = 0  # first sample of the frame being made
        self._index = 0
        self._begin = int(round(start_after_s * RATE))  # silence before the first step
        self._entry: dict[str, Any] | None = None  # log entry of the current step (None: not entered)
        self._offset = 0  # samples of the current step's audio played
        self._until = 0  # a deadline or an end, per step kind (samples)
        self._speak_at: int | None = None  # BargeIn: where its speech starts (None: still waiting)
        self._heard = False  # WaitForReply: speech heard since the step began
        self._due: list[tuple[str, int]] = []  # Dtmf: digits not sent yet, with their positions
        self._dtmf_now: list[tuple[str, int]] = []
        self.hung_up = False
        self.log: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return self.hung_up or (self._index >= len(self._steps) and self._pos >= self._begin)

    def take_dtmf(self) -> list[tuple[str, int]]:
        """Digits to send at this tick, each with its position (samples): read once after `next_frame`."""
        out, self._dtmf_now = self._dtmf_now, []
        return out

    def next_frame(self, heard_onset: int | None) -> npt.NDArray[np.float32]:
        out = np.zeros(FRAME, dtype=np.float32)
        filled = 0
        while filled < FRAME and not self.hung_up and self._index < len(self._steps):
            at = self._pos + filled
            if at < self._begin:
                filled += min(FRAME - filled, self._begin - at)
                continue
            step, pcm = self._steps[self._index]
            if self._entry is None:
                if isinstance(step, Dtmf) and filled:  # a key press goes with a tick: wait for the next
                    break
                self._enter(step, at)
            filled = self._advance(step, pcm, out, filled, heard_onset)
        self._pos += FRAME
        return out

    # -- one step ------------------------------------------------------------------------------------

    def _enter(self, step: Step, at: int) -> None:
        entry: dict[str, Any] = {"step": step_name(step), "index": self._index, "start_ms": _ms(at)}
        self._entry, self._offset = entry, 0
        if isinstance(step, Silence):
            self._until = at + int(round(step.seconds * RATE))
        elif isinstance(step, WaitForReply):
            self._until, self._heard = at + int(round(step.timeout_s * RATE)), False
        elif isinstance(step, BargeIn):
            self._until, self._speak_at = at + int(round(step.timeout_s * RATE)), None
        elif isinstance(step, Dtmf):
            gap = step.gap_s * RATE
            self._due = [(d, at + _frames_up(i * gap)) for i, d in enumerate(step.digits)]
            self._until = at + _frames_up(len(step.digits) * gap)
            entry["digits"] = []

    def _finish_step(self, at: int, **extra: Any) -> None:
        assert self._entry is not None
        self._entry.update(end_ms=_ms(at), **extra)
        self.log.append(self._entry)
        self._entry = None
        self._index += 1

    def _advance(
        self, step: Step, pcm: Pcm | None, out: npt.NDArray[np.float32], filled: int, heard: int | None
    ) -> int:
        """Play the current step into out[filled:]; return how much of the frame is now filled."""
        at = self._pos + filled
        if isinstance(step, Say):
            assert pcm is not None
            return self._speak(pcm, out, filled)
        if isinstance(step, Silence | Dtmf):
            if isinstance(step, Dtmf):
                self._send_due(at)
            if at >= self._until:
                self._finish_step(at)
                return filled
            return filled + min(FRAME - filled, self._until - at)
        if isinstance(step, WaitForReply):
            self._heard = self._heard or heard is not None
            if self._heard and heard is None:
                self._finish_step(at, reply_heard=True, timed_out=False)
                return filled
            if at >= self._until:
                self._finish_step(at, reply_heard=self._heard, timed_out=True)
                return filled
            return FRAME
        if isinstance(step, BargeIn):
            return self._barge_in(step, pcm, out, filled, heard)
        assert isinstance(step, Hangup)
        self._finish_step(at)
        self.hung_up = True
        return FRAME

    def _speak(self, pcm: Pcm, out: npt.NDArray[np.float32], filled: int) -> int:
        at = self._pos + filled
        assert self._entry is not None
        if self._offset == 0:
            self._entry["audio_start_ms"] = _ms(at)
        n = min(FRAME - filled, len(pcm) - self._offset)
        out[filled : filled + n] = pcm[self._offset : self._offset + n]
        self._offset += n
        if self._offset >= len(pcm):
            self._finish_step(at + n)
        return filled + n

    def _barge_in(
        self, step: BargeIn, pcm: Pcm | None, out: npt.NDArray[np.float32], filled: int, heard: int | None
    ) -> int:
        at = self._pos + filled
        entry = self._entry
        assert entry is not None and pcm is not None
        if self._speak_at is None:
            if heard is not None:
                self._speak_at = max(at, heard + int(round(step.after_s * RATE)))
                entry.update(model_onset_ms=_ms(heard), timed_out=False)
            elif at >= self._until:
                self._speak_at = at
                entry.update(model_onset_ms=None, timed_out=True)
            else:
                return FRAME
        if at < self._speak_at:
            return filled + min(FRAME - filled, self._speak_at - at)
        return self._speak(pcm, out, filled)

    def _send_due(self, at: int) -> None:
        assert self._entry is not None
        while self._due and self._due[0][1] <= at:
            digit, _ = self._due.pop(0)
            self._dtmf_now.append((digit, at))
            self._entry["digits"].append({"digit": digit, "at_ms": _ms(at)})


def _frames_up(samples: float) -> int:
    """Samples rounded up to whole 20 ms frames (a hair of float slack kept from rounding a frame up)."""
    return int(math.ceil(samples / FRAME - 1e-9)) * FRAME
