"""Level meters for 8 kHz int16 telephone audio: RMS, peak, clipping, silence, and speech onset/offset.

Conventions (DESIGN.md, "Measurements"):
- dBFS is relative to 32768 (a full-scale square wave is 0 dBFS, a full-scale sine −3 dBFS);
  digital silence reads `-inf` and is reported as `SILENCE_FLOOR_DBFS` (−120) so numbers stay finite.
- A sample clips when |x| >= 32124, the largest value μ-law decodes to (configurable).
- Silence ratio: the share of 10 ms windows whose RMS is below −50 dBFS.
- Speech onset: 10 ms RMS windows (on a grid from sample 0) above −40 dBFS for at least 50 ms; the onset
  is the first sample of the first such window, refined to the sample: the first sample at or after the
  start of the window before it whose |x| exceeds −46 dBFS (164), so an onset that starts mid-window is
  not rounded up to the grid. The offset (end of speech) is the mirror image.

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
    "dbfs",
    "measure_levels",
    "speech_offset",
    "speech_onset",
    "window_dbfs",
]

ULAW_MAX = 32124
SILENCE_FLOOR_DBFS = -120.0
_FULL_SCALE = 32768.0


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


def window_dbfs(pcm: npt.NDArray[np.int16], rate: int = 8000, win_ms: float = 10.0) -> npt.NDArray[np.float64]:
    """RMS dBFS of consecutive non-overlapping windows from sample 0 (a trailing partial window is dropped)."""
    win = int(round(rate * win_ms / 1000.0))
    n = len(pcm) // win
    if n == 0:
        return np.empty(0)
    x = np.asarray(pcm[: n * win], dtype=np.float64).reshape(n, win)
    return dbfs(np.einsum("ij,ij->i", x, x) / win)


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


def _speech_runs(
    pcm: npt.NDArray[np.int16], rate: int, threshold_dbfs: float, min_ms: float, win_ms: float
) -> tuple[npt.NDArray[np.bool_], int, int]:
    """Per-window flag: window belongs to a run of >= min_ms of windows above threshold."""
    win = int(round(rate * win_ms / 1000.0))
    k = max(1, int(round(min_ms / win_ms)))
    loud = window_dbfs(pcm, rate, win_ms) > threshold_dbfs
    if loud.size < k:
        return np.zeros(loud.size, dtype=bool), win, k
    # starts[i]: windows i..i+k-1 are all loud; dilate back so every window of such a run is flagged.
    starts = np.convolve(loud.astype(np.int32), np.ones(k, dtype=np.int32), mode="valid") == k
    in_run = np.convolve(starts.astype(np.int32), np.ones(k, dtype=np.int32), mode="full")[: loud.size] > 0
    return in_run, win, k


def _refine_level(threshold_dbfs: float) -> float:
    return _FULL_SCALE * 10.0 ** ((threshold_dbfs - 6.0) / 20.0)


def speech_onset(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    threshold_dbfs: float = -40.0,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
) -> int | None:
    """Index of the first speech sample (DESIGN's onset convention), or None if there is no speech."""
    in_run, win, _ = _speech_runs(pcm, rate, threshold_dbfs, min_ms, win_ms)
    hits = np.flatnonzero(in_run)
    if hits.size == 0:
        return None
    first = int(hits[0]) * win
    lo = max(0, first - win)
    above = np.flatnonzero(np.abs(np.asarray(pcm[lo : first + win], dtype=np.int32)) > _refine_level(threshold_dbfs))
    return lo + int(above[0]) if above.size else first


def speech_offset(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    threshold_dbfs: float = -40.0,
    min_ms: float = 50.0,
    win_ms: float = 10.0,
) -> int | None:
    """Index one past the last speech sample (mirror of `speech_onset`), or None if there is no speech."""
    in_run, win, _ = _speech_runs(pcm, rate, threshold_dbfs, min_ms, win_ms)
    hits = np.flatnonzero(in_run)
    if hits.size == 0:
        return None
    end = (int(hits[-1]) + 1) * win
    hi = min(len(pcm), end + win)
    above = np.flatnonzero(np.abs(np.asarray(pcm[end - win : hi], dtype=np.int32)) > _refine_level(threshold_dbfs))
    return end - win + int(above[-1]) + 1 if above.size else end
