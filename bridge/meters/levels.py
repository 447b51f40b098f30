"""Level meters for 8 kHz int16 telephone audio: RMS, peak, clipping, silence, and speech onset/offset.

Conventions (DESIGN.md, "Measurements"):
- dBFS is relative to 32768 (a full-scale square wave is 0 dBFS, a full-scale sine −3 dBFS);
  digital silence reads `-inf` and is reported as `SILENCE_FLOOR_DBFS` (−120) so numbers stay finite.
- A sample clips when |x| >= 32124, the largest value μ-law decodes to (configurable).
- Silence ratio: the share of 10 ms windows whose RMS is below −50 dBFS.
- Speech onset: 10 ms RMS windows above the speech threshold for at least 50 ms (five back-to-back
  windows). The threshold is −40 dBFS, or `NOISE_MARGIN_DB` above a noisier line's floor (the 10th
  percentile of its 10 ms window levels, digital silence left out, and near-silence too where the line
  has steady noise: `floor_of_levels`): 10 ms windows of line noise stay
  within ~2 dB of its RMS, so 9 dB above it noise never makes five loud windows in a row, while speech
  (−15 to −25 dBFS on a phone line) still clears it; capped at −30 dBFS (a "floor" above −39 dBFS is
  speech without pauses, not noise). The
  windows slide sample by sample, so the first such window is located to the sample, and the onset is
  then the first sample inside it whose |x| exceeds −46 dBFS (164), where the speech actually starts
  rather than where the window happens to begin. The offset (end of speech) is the mirror image in time.
- Boundaries on a noisy line: the raised threshold finds speech without noise passing for it, but cuts
  off its quiet edges (at −40 dBFS noise a fading word's last 90 ms and a soft onset's first 50 ms). So a
  segment found that way is widened, by the same 50 ms rule, to where the line's level is the power sum
  of −40 dBFS and the noise floor (`boundary_threshold_dbfs`, kept ≥ 3 dB above the floor): where the
  speech alone would cross −40 dBFS, the clean line's threshold. Widening only ever continues a segment
  already found, so noise can move an edge, never make speech.

Pure functions over arrays: no I/O, no clocks, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "SILENCE_FLOOR_DBFS",
    "ULAW_MAX",
    "Levels",
    "boundary_threshold_dbfs",
    "dbfs",
    "floor_of_levels",
    "loud_stretches",
    "measure_levels",
    "noise_floor_dbfs",
    "speech_offset",
    "speech_onset",
    "speech_segments",
    "speech_threshold_dbfs",
    "widen_segment",
    "window_dbfs",
]

ULAW_MAX = 32124
SILENCE_FLOOR_DBFS = -120.0
_FULL_SCALE = 32768.0
ONSET_DBFS = -40.0
NOISE_MARGIN_DB = 9.0
#: Window levels under this are no line's noise (see `floor_of_levels`).
QUIETEST_NOISE_DBFS = -70.0
#: A line has steady noise when this share of its audible windows lies within the span of their floor.
STEADY_NOISE_SHARE = 0.3
STEADY_NOISE_SPAN_DB = 3.0
_MAX_THRESHOLD_DBFS = -30.0
#: A boundary threshold stays this far above the floor: 10 ms windows of noise reach ~2 dB above its
#: RMS, and five such windows in a row next to speech would move an edge.
BOUNDARY_HEADROOM_DB = 3.0


@dataclass(frozen=True, slots=True)
class Levels:
    rms_dbfs: float
    peak: int  # largest |x|
    clip_ratio: float  # share of samples with |x| >= clip threshold
    silence_ratio: float  # share of 10 ms windows below the silence threshold
    samples: int


def dbfs(mean_square: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Mean square of int16-scaled samples → dBFS, floored at SILENCE_FLOOR_DBFS."""
    ms = np.asarray(mean_square, dtype=np.float64) / (_FULL_SCALE * _FULL_SCALE)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(ms)
    return np.maximum(out, SILENCE_FLOOR_DBFS)


def window_dbfs(
    pcm: npt.NDArray[np.int16], rate: int = 8000, win_ms: float = 10.0
) -> npt.NDArray[np.float64]:
    """RMS dBFS of consecutive non-overlapping windows from sample 0 (a trailing partial window is dropped)."""
    win = round(rate * win_ms / 1000.0)
    n = len(pcm) // win
    if n == 0:
        return np.empty(0)
    x = np.asarray(pcm[: n * win], dtype=np.float64).reshape(n, win)
    return dbfs(np.einsum("ij,ij->i", x, x) / win)


def noise_floor_dbfs(pcm: npt.NDArray[np.int16], rate: int = 8000, win_ms: float = 10.0) -> float:
    """The line's noise floor from its window levels (`floor_of_levels`)."""
    return floor_of_levels(window_dbfs(pcm, rate, win_ms))


def floor_of_levels(levels: npt.NDArray[np.float64]) -> float:
    """The noise floor of a track from its window levels (dBFS); SILENCE_FLOOR_DBFS when all silent.

    Digital silence (lost frames, zero padding, nothing played) is left out. Where the line has steady
    noise, the floor is the 10th percentile of the windows above QUIETEST_NOISE_DBFS, when at least
    STEADY_NOISE_SHARE of them lie within STEADY_NOISE_SPAN_DB of it (noise windows cluster within ~2 dB
    of their level; speech spreads over tens of dB). Quieter windows are no line's noise: a synthetic
    voice's pauses at mu-law's smallest steps (-72 dBFS). Counted in, a noisy track with ~10 % of them
    put the percentile between the two clusters, -43 to -49 dBFS by the windows' phase alone, and product
    and truth read model onsets 13-35 ms apart. Without steady noise (a clean line: speech, its quiet
    tails and silence) the floor is the 10th percentile of every window left, as quiet as the line is.
    """
    live = levels[levels > SILENCE_FLOOR_DBFS + 20]
    if live.size == 0:
        return SILENCE_FLOOR_DBFS
    audible = live[live > QUIETEST_NOISE_DBFS]
    if audible.size:
        noise = float(np.percentile(audible, 10))
        steady = np.count_nonzero(np.abs(audible - noise) <= STEADY_NOISE_SPAN_DB)
        if steady >= STEADY_NOISE_SHARE * audible.size:
            return noise
    return float(np.percentile(live, 10))


def speech_threshold_dbfs(noise_floor: float) -> float:
    """The speech threshold on a line with this noise floor (see the module docstring)."""
    return min(max(ONSET_DBFS, noise_floor + NOISE_MARGIN_DB), _MAX_THRESHOLD_DBFS)


def boundary_threshold_dbfs(noise_floor: float) -> float:
    """Where speech found on a line with this floor starts and ends (see the module docstring): the
    level of −40 dBFS of speech plus the noise, at least BOUNDARY_HEADROOM_DB above the floor."""
    summed = 10.0 * np.log10(10.0 ** (ONSET_DBFS / 10.0) + 10.0 ** (noise_floor / 10.0))
    return float(max(summed, noise_floor + BOUNDARY_HEADROOM_DB))


def measure_levels(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    clip_threshold: int = ULAW_MAX,
    silence_dbfs: float = -50.0,
) -> Levels:
    x = np.asarray(pcm)
    if x.size == 0:
        return Levels(SILENCE_FLOOR_DBFS, 0, 0.0, 1.0, 0)
    xf = x.astype(np.float64)
    mag = np.abs(x.astype(np.int32))
    win = window_dbfs(x, rate)
    return Levels(
        rms_dbfs=float(dbfs(np.dot(xf, xf) / x.size)),
        peak=int(mag.max()),
        clip_ratio=float(np.count_nonzero(mag >= clip_threshold) / x.size),
        silence_ratio=float(np.mean(win < silence_dbfs)) if win.size else 1.0,
        samples=int(x.size),
    )


def _run_windows(
    pcm: npt.NDArray[np.int16], rate: int, threshold_dbfs: float, min_ms: float, win_ms: float
) -> tuple[npt.NDArray[np.int64], int]:
    """Start samples i of runs: the 10 ms windows at i, i+win, ..., covering min_ms, are all loud.

    Windows slide sample by sample (a running sum of squares), so the answer does not depend on where
    a window grid happens to fall relative to the speech.
    """
    win = round(rate * win_ms / 1000.0)
    k = max(1, round(min_ms / win_ms))
    x = np.asarray(pcm, dtype=np.int64)
    if len(x) < k * win:
        return np.empty(0, dtype=np.int64), win
    csum = np.concatenate(([0], np.cumsum(x * x)))
    energy = csum[win:] - csum[:-win]  # energy of the window starting at each sample
    loud = energy > (10.0 ** (threshold_dbfs / 10.0)) * _FULL_SCALE * _FULL_SCALE * win
    m = len(loud) - (k - 1) * win
    ok = loud[:m].copy()
    for j in range(1, k):
        ok &= loud[j * win : j * win + m]
    return np.flatnonzero(ok), win


def loud_stretches(
    pcm: npt.NDArray[np.int16],
    rate: int,
    threshold_dbfs: float,
    *,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
) -> list[tuple[int, int]]:
    """Sample ranges [first, end) covered by runs of `min_ms` of windows above the threshold (the
    window edges, not refined to the sample)."""
    starts, win = _run_windows(pcm, rate, threshold_dbfs, min_ms, win_ms)
    if starts.size == 0:
        return []
    span = win * max(1, round(min_ms / win_ms))
    breaks = np.flatnonzero(np.diff(starts) > span)
    firsts = np.r_[starts[0], starts[breaks + 1]]
    lasts = np.r_[starts[breaks], starts[-1]] + span
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def _first_above(x: npt.NDArray[np.int16], level: float) -> int | None:
    above = np.flatnonzero(np.abs(np.asarray(x, dtype=np.int32)) > level)
    return int(above[0]) if above.size else None


def _last_above(x: npt.NDArray[np.int16], level: float) -> int | None:
    above = np.flatnonzero(np.abs(np.asarray(x, dtype=np.int32)) > level)
    return int(above[-1]) if above.size else None


def widen_segment(
    pcm: npt.NDArray[np.int16],
    rate: int,
    onset: int,
    end: int,
    threshold_dbfs: float,
    *,
    refine_dbfs: float,
    reach_ms: float = 200.0,
    win_ms: float = 10.0,
) -> tuple[int, int]:
    """Speech [onset, end) continued outward, up to `reach_ms` each way, while runs of windows above the
    (lower) `threshold_dbfs` go on without a break; each new edge refined to the sample above
    `refine_dbfs` in its outermost window. Never narrows."""
    win = round(rate * win_ms / 1000.0)
    reach = round(rate * reach_ms / 1000.0)
    lo, hi = max(0, onset - reach), min(len(pcm), end + reach)
    level = _refine_level(threshold_dbfs, refine_dbfs)
    x = np.asarray(pcm)
    new_onset, new_end = onset, end
    for a, b in loud_stretches(x[lo:hi], rate, threshold_dbfs, win_ms=win_ms):
        a, b = a + lo, b + lo
        if a < onset < b:
            head = _first_above(x[a : a + win], level)
            new_onset = min(onset, a + (head if head is not None else 0))
        if a < end < b:
            tail = _last_above(x[b - win : b], level)
            new_end = max(end, b - win + (tail + 1 if tail is not None else win))
    return new_onset, new_end


def _refine_level(threshold_dbfs: float, refine_dbfs: float | None) -> float:
    level_dbfs = threshold_dbfs - 6.0 if refine_dbfs is None else refine_dbfs
    return float(_FULL_SCALE * 10.0 ** (level_dbfs / 20.0))


def speech_onset(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    threshold_dbfs: float | None = None,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
    refine_dbfs: float | None = None,
) -> int | None:
    """Index of the first speech sample (DESIGN's onset convention), or None if there is no speech.

    The first window of the first qualifying run is located to the sample; within it the onset is the
    first sample whose |x| exceeds `refine_dbfs` (default threshold − 6 dB), where the speech starts.
    Without `threshold_dbfs`, the threshold comes from `pcm`'s own noise floor; pass it when `pcm` is
    an excerpt of a longer track, whose floor it is.
    """
    if threshold_dbfs is None:
        threshold_dbfs = speech_threshold_dbfs(noise_floor_dbfs(pcm, rate, win_ms))
    starts, win = _run_windows(pcm, rate, threshold_dbfs, min_ms, win_ms)
    if starts.size == 0:
        return None
    first = int(starts[0])
    level = _refine_level(threshold_dbfs, refine_dbfs)
    above = np.flatnonzero(np.abs(np.asarray(pcm[first : first + win], dtype=np.int32)) > level)
    return first + int(above[0]) if above.size else first


#: Two bursts of speech closer than this are one utterance (pauses between words), farther apart two.
SEGMENT_GAP_MS = 300.0


def speech_segments(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    threshold_dbfs: float | None = None,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
    gap_ms: float = SEGMENT_GAP_MS,
) -> list[tuple[int, int]]:
    """Speech segments [onset, end) in samples by the onset convention alone (no VAD model).

    Speech is wherever a run of `min_ms` of loud 10 ms windows lies; each stretch covered by runs has
    its onset and end located to the sample as `speech_onset` / `speech_offset` do; stretches whose
    silence between (end to next onset) is under `gap_ms` are one segment. For audio we produced
    (the played track), where nothing but our own output can be loud, this is exact; the caller's
    line, with noise and echo, goes through `vad.detect_speech`.
    """
    if threshold_dbfs is None:
        threshold_dbfs = speech_threshold_dbfs(noise_floor_dbfs(pcm, rate, win_ms))
    win = round(rate * win_ms / 1000.0)
    level = _refine_level(threshold_dbfs, None)
    out: list[tuple[int, int]] = []
    for first, stop in loud_stretches(pcm, rate, threshold_dbfs, min_ms=min_ms, win_ms=win_ms):
        head = _first_above(pcm[first : first + win], level)
        tail = _last_above(pcm[stop - win : stop], level)
        onset = first + (head if head is not None else 0)
        end = stop - win + (tail + 1 if tail is not None else win)
        if out and onset - out[-1][1] < gap_ms * rate / 1000.0:
            out[-1] = (out[-1][0], end)
        else:
            out.append((onset, end))
    return out


def speech_offset(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    threshold_dbfs: float | None = None,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
    refine_dbfs: float | None = None,
) -> int | None:
    """Index one past the last speech sample (mirror of `speech_onset`), or None if there is no speech."""
    if threshold_dbfs is None:
        threshold_dbfs = speech_threshold_dbfs(noise_floor_dbfs(pcm, rate, win_ms))
    starts, win = _run_windows(np.asarray(pcm)[::-1], rate, threshold_dbfs, min_ms, win_ms)
    if starts.size == 0:
        return None
    # On the reversed signal the first run window ends where the speech ends in forward time.
    end = len(pcm) - int(starts[0])
    level = _refine_level(threshold_dbfs, refine_dbfs)
    above = np.flatnonzero(np.abs(np.asarray(pcm[end - win : end], dtype=np.int32)) > level)
    return end - win + int(above[-1]) + 1 if above.size else end
