"""The phone's side of the audio: caller speech (WAV or espeak-ng), scripted turns, echo path, noise.

Signals here are int16 or float32 numpy arrays at 8 kHz, processed in 20 ms (160-sample) frames on the
phone's clock. `load_wav`, `synthesize` and `write_wav` do file/process I/O; everything else is pure
(no I/O, no clock reads, no sleeps): streaming objects fed one frame at a time.
"""

from __future__ import annotations

import functools
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from bridge.speech import read_wav_mono
from bridge.speech import synthesize as speech_synthesize

RATE = 8000
FRAME = 160  # samples per 20 ms media frame
_WINDOW = 80  # 10 ms onset windows (DESIGN: speech onset convention)
_ONSET_DBFS = -40.0
_ONSET_WINDOWS = 5  # >= 50 ms above threshold
_END_WINDOWS = 30  # a speech segment ends after 300 ms below threshold

Pcm = npt.NDArray[np.int16]


def load_wav(path: str | Path) -> Pcm:
    """Read a PCM WAV file as mono int16 at 8 kHz (channels averaged, resampled one-shot with soxr)."""
    samples, rate = read_wav_mono(path)
    return _to_8k(samples, rate)


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 165) -> Pcm:
    """Speak `text` with espeak-ng and return it as int16 at 8 kHz."""
    return speech_synthesize(text, RATE, voice=voice, words_per_minute=words_per_minute)


def write_wav(path: str | Path, pcm: Pcm, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def _to_8k(samples: npt.NDArray[np.float32], rate: int) -> Pcm:
    if rate != RATE:
        samples = soxr.resample(samples, rate, RATE, quality="HQ")
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)


def dbfs_to_rms(dbfs: float) -> float:
    return float(32768.0 * 10.0 ** (dbfs / 20.0))


_LOUD_SUMSQ = dbfs_to_rms(_ONSET_DBFS) ** 2 * _WINDOW  # a window is loud above this sum of squares


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """Speech found in a stream, in samples on that stream's clock ([onset, end))."""

    onset: int
    end: int


class SpeechDetector:
    """Streaming speech onset/offset by the DESIGN convention.

    10 ms RMS windows above -40 dBFS for at least 50 ms make speech; the onset is the first sample of
    the first such window. A segment ends after 300 ms below threshold, at the end of its last loud
    window. Feed frames in order with `feed`; read `segments` (closed) and `current_onset`.
    """

    def __init__(self) -> None:
        self._pos = 0
        self._pending: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._run_start: int | None = None  # first sample of the current run of loud windows
        self._run_len = 0
        self._quiet = 0
        self._last_loud_end = 0
        self.current_onset: int | None = None
        self.segments: list[SpeechSegment] = []

    def feed(self, frame: npt.NDArray[np.generic]) -> int | None:
        """Consume samples; return the onset sample index if a segment started in them."""
        x = np.asarray(frame, dtype=np.float32)
        if len(self._pending):
            x = np.concatenate((self._pending, x))
        whole = len(x) - len(x) % _WINDOW
        self._pending = x[whole:]
        if not whole:
            return None
        # Every complete window's energy in one reduction (the caller feeds 2 windows per 20 ms frame;
        # np.mean per window was a fifth of an emulated caller's CPU). Compared as sums of squares:
        # RMS > threshold  <=>  sum(x^2) > threshold^2 * window.
        w = x[:whole].reshape(-1, _WINDOW)
        loud_flags = (np.add.reduce(w * w, axis=1) > _LOUD_SUMSQ).tolist()
        started = None
        for loud in loud_flags:
            start, self._pos = self._pos, self._pos + _WINDOW
            if loud:
                self._quiet = 0
                self._last_loud_end = self._pos
                if self._run_len == 0:
                    self._run_start = start
                self._run_len += 1
                if self.current_onset is None and self._run_len >= _ONSET_WINDOWS:
                    assert self._run_start is not None
                    self.current_onset = started = self._run_start
            else:
                self._run_len = 0
                self._quiet += 1
                if self.current_onset is not None and self._quiet >= _END_WINDOWS:
                    self.segments.append(SpeechSegment(self.current_onset, self._last_loud_end))
                    self.current_onset = None
        return started

    def feed_quiet(self, n: int) -> int | None:
        """Consume `n` samples of digital silence: `feed(np.zeros(n))` without the arithmetic.

        Half of a call is silence in each direction, and the emulated phone feeds 50 frames a second per
        call: this skips numpy entirely for them (same state afterwards as `feed`, checked by the tests).
        """
        if len(self._pending) or n % _WINDOW:  # a partial window could still turn loud: the long way
            return self.feed(np.zeros(n, np.float32))
        windows = n // _WINDOW
        self._pos += n
        self._run_len = 0
        if self.current_onset is not None and self._quiet + windows >= _END_WINDOWS:
            self.segments.append(SpeechSegment(self.current_onset, self._last_loud_end))
            self.current_onset = None
        self._quiet += windows
        return None

    def finish(self) -> list[SpeechSegment]:
        """Close an open segment at the end of the stream and return all segments."""
        if self.current_onset is not None:
            self.segments.append(SpeechSegment(self.current_onset, self._last_loud_end))
            self.current_onset = None
        return self.segments


def room_impulse_response(
    rt60_s: float, seed: int = 0, length_s: float | None = None
) -> npt.NDArray[np.float32]:
    """A simple synthetic room: a unit direct path, then exponentially decaying noise (-60 dB at rt60)."""
    n = int(RATE * (length_s if length_s is not None else min(rt60_s, 0.5)))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60_s) * 0.3
    tail[:16] = 0.0  # the first reflections arrive a couple of ms after the direct path
    tail[0] = 1.0
    return tail.astype(np.float32)


class EchoPath:
    """What the phone heard, delayed and attenuated (optionally through a room), back into its microphone.

    Feed each heard frame with `feed`, then `take` the echo for the frame being captured at the same
    sample positions: a heard sample at position n reappears at position n + delay.
    """

    def __init__(self, delay_ms: float, loss_db: float, rir: npt.NDArray[np.float32] | None = None) -> None:
        self.delay = round(delay_ms * RATE / 1000)
        self.gain = float(10.0 ** (-loss_db / 20.0))
        self._rir = rir if rir is not None else np.ones(1, dtype=np.float32)
        # History long enough for delay + filter tail; starts as silence (nothing played yet).
        self._hist: npt.NDArray[np.float32] = np.zeros(self.delay + len(self._rir) + FRAME, dtype=np.float32)

    def feed(self, heard: npt.NDArray[np.generic]) -> None:
        n = len(heard)
        self._hist = np.concatenate([self._hist[n:], np.asarray(heard, dtype=np.float32)])

    def take(self, n: int = FRAME) -> npt.NDArray[np.float32]:
        """Echo samples for the `n` newest positions (the frame just fed)."""
        taps = len(self._rir)
        end = len(self._hist) - self.delay
        src = self._hist[end - n - taps + 1 : end]
        return (np.convolve(src, self._rir, mode="valid") * self.gain).astype(np.float32)


class NoiseSource:
    """Seeded white noise at an RMS level in dBFS."""

    def __init__(self, dbfs: float, seed: int = 0) -> None:
        self._rms = dbfs_to_rms(dbfs)
        self._rng = np.random.default_rng(seed)

    def take(self, n: int = FRAME) -> npt.NDArray[np.float32]:
        return (self._rng.standard_normal(n) * self._rms).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Turn:
    """One caller turn: text (spoken by espeak-ng) or a WAV file, then optionally wait for the answer.

    With `wait_for_answer`, the next turn starts once the phone has heard the model speak and then
    fall silent (or after `answer_timeout_s`), plus `pause_s`; without it, `pause_s` after this turn.
    """

    text: str | None = None
    wav: str | None = None
    wait_for_answer: bool = True
    answer_timeout_s: float = 8.0
    pause_s: float = 0.4

    def render(self) -> Pcm:
        """The turn's audio at 8 kHz (I/O: reads the WAV or runs espeak-ng)."""
        if self.wav is not None:
            return load_wav(self.wav)
        if self.text is not None:
            return synthesize(self.text)
        raise ValueError("a Turn needs text or wav")


@functools.lru_cache(maxsize=64)
def _render_cached(turn: Turn) -> Pcm:
    pcm = turn.render()
    pcm.setflags(write=False)  # shared between calls
    return pcm


def render_turns(turns: Sequence[Turn]) -> list[tuple[Turn, Pcm]]:
    """Each turn with its audio (I/O; cached, so concurrent calls speak the same text once)."""
    return [(t, _render_cached(t)) for t in turns]


@dataclass(frozen=True, slots=True)
class TurnPlayed:
    """Where a turn's audio went on the phone's clock (samples since stream start)."""

    index: int
    start: int
    end: int


class CallerScript:
    """The caller's microphone signal, frame by frame, following scripted turns (pure state machine).

    Call `next_frame(heard_speaking)` once per 20 ms tick, with whether the phone is hearing speech now
    (from a `SpeechDetector` on the heard audio). Before the first turn and between turns it yields
    silence (zeros); `played` lists where each turn went; `done` is true after the last turn's wait.
    """

    def __init__(self, turns: Sequence[tuple[Turn, Pcm]], start_after_s: float = 0.5) -> None:
        self._turns = list(turns)
        self._pos = 0
        self._index = 0
        self._offset = 0
        self._wait_until = int(start_after_s * RATE)  # silence until this position
        self._waiting_answer = False
        self._answer_heard = False
        self._turn_start = 0
        self.played: list[TurnPlayed] = []

    @property
    def done(self) -> bool:
        return self._index >= len(self._turns) and not self._waiting_answer and self._pos >= self._wait_until

    def next_frame(self, heard_speaking: bool) -> npt.NDArray[np.float32]:
        out = np.zeros(FRAME, dtype=np.float32)
        filled = 0
        while filled < FRAME:
            if self._waiting_answer:
                turn = self._turns[self._index - 1][0]
                self._answer_heard = self._answer_heard or heard_speaking
                timed_out = self._pos >= self._wait_until
                if (self._answer_heard and not heard_speaking) or timed_out:
                    self._waiting_answer = False
                    self._wait_until = self._pos + int(turn.pause_s * RATE)
                else:
                    break
            if self._pos + filled < self._wait_until or self._index >= len(self._turns):
                gap = (
                    FRAME - filled
                    if self._index >= len(self._turns)
                    else self._wait_until - self._pos - filled
                )
                filled += min(gap, FRAME - filled)
                continue
            turn, pcm = self._turns[self._index]
            if self._offset == 0:
                self._turn_start = self._pos + filled
            n = min(FRAME - filled, len(pcm) - self._offset)
            out[filled : filled + n] = pcm[self._offset : self._offset + n]
            filled += n
            self._offset += n
            if self._offset >= len(pcm):
                self.played.append(TurnPlayed(self._index, self._turn_start, self._pos + filled))
                self._index += 1
                self._offset = 0
                end = self._pos + filled
                if turn.wait_for_answer:
                    self._waiting_answer, self._answer_heard = True, False
                    self._wait_until = end + int(turn.answer_timeout_s * RATE)
                else:
                    self._wait_until = end + int(turn.pause_s * RATE)
        self._pos += FRAME
        return out
