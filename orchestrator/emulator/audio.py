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

    def __init__(self, threshold_dbfs: float = _ONSET_DBFS) -> None:
        self._loud_sumsq = dbfs_to_rms(threshold_dbfs) ** 2 * _WINDOW
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
        loud_flags = (np.add.reduce(w * w, axis=1) > self._loud_sumsq).tolist()
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


# Ground truth, located to the sample. This is the emulator's own reading of DESIGN's convention, written
# apart from the product's meters (a truth made with the code it judges proves nothing): 10 ms windows
# sliding sample by sample, speech where five back-to-back windows are above the threshold; the onset is
# the first sample above threshold - 6 dB in the first such window, the end the last one in the last;
# a pause under 300 ms (one stretch's end to the next one's onset) stays inside the segment.
NOISE_MARGIN_DB = 9.0  # threshold above a noisy line's floor: 10 ms noise windows stay within ~2 dB of it
_MAX_THRESHOLD_DBFS = -30.0  # a "floor" louder than -39 dBFS is speech without pauses, not line noise
_PAUSE = 2400  # samples: a silence this long (end to next onset) separates two segments


def noise_floor_dbfs(pcm: npt.NDArray[np.generic]) -> float:
    """The 10th percentile of 10 ms window levels, digital silence left out (-120 when all silent).

    On a line with steady noise (at least 30 % of the windows above -70 dBFS within 3 dB of their own
    10th percentile), the windows under -70 dBFS are left out too: they are a synthetic voice's pauses at
    mu-law's smallest steps, not the line's noise, and a tenth of them would put the percentile between
    the two, where the 10 ms windows' phase alone moves it by 6 dB.
    """
    x = np.asarray(pcm, dtype=np.float64)
    n = len(x) // _WINDOW
    if n == 0:
        return -120.0
    ms = np.mean(x[: n * _WINDOW].reshape(n, _WINDOW) ** 2, axis=1)
    live = ms[ms > dbfs_to_rms(-100.0) ** 2]
    if live.size == 0:
        return -120.0
    db = 10.0 * np.log10(live / 32768.0**2)
    above = db[db > -70.0]
    if above.size:
        tenth = float(np.percentile(above, 10))
        if np.count_nonzero(np.abs(above - tenth) <= 3.0) >= 0.3 * above.size:
            return tenth
    return float(np.percentile(db, 10))


def threshold_over_floor(floor_dbfs: float) -> float:
    """-40 dBFS, or NOISE_MARGIN_DB above a noisier line's floor (capped at -30 dBFS)."""
    return min(max(_ONSET_DBFS, floor_dbfs + NOISE_MARGIN_DB), _MAX_THRESHOLD_DBFS)


def speech_threshold_dbfs(pcm: npt.NDArray[np.generic]) -> float:
    """The speech threshold for this signal, from its own noise floor."""
    return threshold_over_floor(noise_floor_dbfs(pcm))


def find_speech(pcm: npt.NDArray[np.generic], threshold_dbfs: float | None = None) -> list[SpeechSegment]:
    """Speech segments [onset, end) in samples, to the sample (see the convention above)."""
    x = np.asarray(pcm, dtype=np.float64)
    span = _WINDOW * _ONSET_WINDOWS
    if len(x) < span:
        return []
    thr = speech_threshold_dbfs(x) if threshold_dbfs is None else threshold_dbfs
    energy = np.convolve(x * x, np.ones(_WINDOW), mode="valid")  # energy[i]: window [i, i + 80)
    loud = energy > dbfs_to_rms(thr) ** 2 * _WINDOW
    m = len(loud) - (_ONSET_WINDOWS - 1) * _WINDOW
    run = np.ones(m, dtype=bool)
    for j in range(_ONSET_WINDOWS):
        run &= loud[j * _WINDOW : j * _WINDOW + m]
    starts = np.flatnonzero(run)
    if starts.size == 0:
        return []
    level = dbfs_to_rms(thr - 6.0)
    out: list[SpeechSegment] = []
    # stretches of samples covered by loud runs: a run starting at i covers [i, i + span)
    cuts = np.flatnonzero(np.diff(starts) > span)
    for first, last in zip(np.r_[starts[0], starts[cuts + 1]], np.r_[starts[cuts], starts[-1]], strict=True):
        head = np.flatnonzero(np.abs(x[first : first + _WINDOW]) > level)
        tail_at = int(last) + span - _WINDOW
        tail = np.flatnonzero(np.abs(x[tail_at : tail_at + _WINDOW]) > level)
        onset = int(first) + (int(head[0]) if head.size else 0)
        end = tail_at + (int(tail[-1]) + 1 if tail.size else _WINDOW)
        if out and onset - out[-1].end < _PAUSE:
            out[-1] = SpeechSegment(out[-1].onset, end)
        else:
            out.append(SpeechSegment(onset, end))
    return out


SPEED_OF_SOUND_M_S = 343.0


def room_impulse_response(
    rt60_s: float, distance_m: float = 1.0, seed: int = 0, volume_m3: float = 60.0
) -> tuple[npt.NDArray[np.float32], int]:
    """A loudspeaker-to-microphone room response, normalised to unit energy, and its direct-path tap.

    Statistical room acoustics (Sabine): the direct sound arrives after distance / c with amplitude
    1/r; the diffuse field's energy relative to it is (r / r_c)^2, with the critical distance
    r_c = 0.057 * sqrt(V / RT60) (so the direct-to-reverberant ratio is 20*log10(r_c / r)). Six early
    reflections (seeded, 1.5-20 ms after the direct sound, 0.2-0.6 of it) stand for the table, walls and
    handset body; the diffuse tail is seeded noise decaying by 60 dB over RT60, starting 5 ms after the
    direct sound. The response lasts RT60 (the tail is 60 dB down there). Normalised to unit energy,
    so an `EchoPath`'s loss is the whole response's echo return loss for a white signal.
    """
    rng = np.random.default_rng(seed)
    direct = round(distance_m / SPEED_OF_SOUND_M_S * RATE)
    n = direct + max(int(RATE * rt60_s), 64)
    h = np.zeros(n, dtype=np.float64)
    h[direct] = 1.0
    for _ in range(6):
        at = direct + int(rng.uniform(0.0015, 0.020) * RATE)
        h[at] += rng.uniform(0.2, 0.6) * rng.choice((-1.0, 1.0))
    critical_m = 0.057 * np.sqrt(volume_m3 / rt60_s)
    t = np.arange(n - direct - 40) / RATE  # the diffuse tail from 5 ms after the direct sound
    tail = rng.standard_normal(t.size) * 10.0 ** (-3.0 * t / rt60_s)
    tail *= np.sqrt((distance_m / critical_m) ** 2 / np.sum(tail * tail))
    h[direct + 40 :] += tail
    h /= np.sqrt(np.sum(h * h))
    return h.astype(np.float32), direct


class EchoPath:
    """What the phone heard, delayed and attenuated (optionally through a room), back into its microphone.

    Feed each heard frame with `feed`, then `take` the echo for the frame being captured at the same
    sample positions: a heard sample at position n reappears at position n + delay (+ the room's taps).
    The loss applies to the whole response's energy (a room response is normalised to unit energy).
    """

    def __init__(self, delay_ms: float, loss_db: float, rir: npt.NDArray[np.float32] | None = None) -> None:
        self.delay = round(delay_ms * RATE / 1000)
        self.gain = float(10.0 ** (-loss_db / 20.0))
        self._rir = rir if rir is not None else np.ones(1, dtype=np.float32)
        # History long enough for delay + filter tail; starts as silence (nothing played yet).
        self._hist: npt.NDArray[np.float32] = np.zeros(self.delay + len(self._rir) + FRAME, dtype=np.float32)

    @property
    def response(self) -> npt.NDArray[np.float64]:
        """The whole path, heard -> microphone, as an impulse response from lag 0."""
        h = np.zeros(self.delay + len(self._rir))
        h[self.delay :] = self._rir * self.gain
        return h

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
