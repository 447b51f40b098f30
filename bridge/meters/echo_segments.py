"""Per-second echo evidence: GCC-PHAT between what we played and what came back, one segment at a time.

Each second of played audio that is active (>= 30 % of its 10 ms windows above -40 dBFS) is
cross-correlated with the inbound audio up to 600 ms later, whitened (GCC-PHAT, Knapp & Carter 1976)
so that a voice's own spectrum does not smear the peak. Per segment: the lag (sub-sample, by a
parabola through the peak), the normalised peak height, the least-squares gain and the correlation
coefficient at that lag. The whole-call echo path (`bridge.meters.echo`) keeps these as evidence and,
when several seconds agree on one lag, starts its double-talk weighting from it (`segment_seed`).
Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from bridge.meters.levels import window_dbfs

__all__ = ["SegmentEcho", "parabolic", "segment_echo", "segment_seed"]


@dataclass(frozen=True, slots=True)
class SegmentEcho:
    """Per-segment figures (arrays of equal length, one entry per segment used)."""

    start: npt.NDArray[np.int64]  # first sample of the segment
    lag: npt.NDArray[np.float64]  # samples, sub-sample refined
    peak: npt.NDArray[np.float64]  # normalised GCC-PHAT peak
    gain: npt.NDArray[np.float64]  # least-squares gain at the lag
    rho: npt.NDArray[np.float64]  # correlation coefficient at the lag


def _active_starts(
    played: npt.NDArray[np.int16], rate: int, seg: int, min_active: float
) -> npt.NDArray[np.int64]:
    n_seg = len(played) // seg
    if n_seg == 0:
        return np.empty(0, dtype=np.int64)
    win_db = window_dbfs(played[: n_seg * seg], rate)
    per_seg = win_db.reshape(n_seg, -1)
    active = np.mean(per_seg > -40.0, axis=1) >= min_active
    return np.flatnonzero(active).astype(np.int64) * seg


def parabolic(
    v: npt.NDArray[np.float64], i: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vertex offset in (-0.5, 0.5) and height of the parabola through v[i-1], v[i], v[i+1] per row."""
    rows = np.arange(v.shape[0])
    inner = (i > 0) & (i < v.shape[1] - 1)
    ic = np.clip(i, 1, v.shape[1] - 2)
    a, b, c = v[rows, ic - 1], v[rows, ic], v[rows, ic + 1]
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(inner & (den < 0), 0.5 * (a - c) / den, 0.0)
    off = np.clip(off, -0.5, 0.5)
    height = np.where(inner, b - 0.25 * (a - c) * off, v[rows, i])
    return off, height


def segment_echo(
    played: npt.NDArray[np.int16],
    inbound: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    max_lag_ms: float = 600.0,
    segment_s: float = 1.0,
    min_active: float = 0.3,
    batch: int = 64,
) -> SegmentEcho:
    seg = round(segment_s * rate)
    max_lag = round(max_lag_ms * rate / 1000)
    starts = _active_starts(np.asarray(played), rate, seg, min_active)
    n = sfft.next_fast_len(seg + max_lag + 1, real=True)
    # Pad so every inbound window [start, start + seg + max_lag) exists.
    y_all = np.zeros(max(len(inbound), len(played)) + seg + max_lag, dtype=np.float64)
    y_all[: len(inbound)] = inbound
    x_all = np.asarray(played, dtype=np.float64)
    out: dict[str, list[npt.NDArray[np.float64]]] = {k: [] for k in ("lag", "peak", "gain", "rho")}
    for b in range(0, len(starts), batch):
        st = starts[b : b + batch]
        x = x_all[st[:, None] + np.arange(seg)]
        y = y_all[st[:, None] + np.arange(seg + max_lag)]
        cross = sfft.rfft(y, n=n, axis=1) * np.conj(sfft.rfft(x, n=n, axis=1))
        mag = np.abs(cross)
        # Bins with no energy in either signal carry only rounding noise; a tiny floor avoids 0/0.
        phat = sfft.irfft(cross / (mag + 1e-9 * mag.max(axis=1, keepdims=True) + 1e-30), n=n, axis=1)
        cc = sfft.irfft(cross, n=n, axis=1)[:, : max_lag + 1]
        phat = phat[:, : max_lag + 1]
        best = np.argmax(np.abs(phat), axis=1)
        off, height = parabolic(np.abs(phat), best)
        rows = np.arange(len(st))
        _, cc_peak = parabolic(cc * np.sign(cc[rows, best])[:, None], best)
        cc_peak *= np.sign(cc[rows, best])
        xx = np.einsum("ij,ij->i", x, x)
        # Energy of y[lag : lag + seg] from a running sum of squares.
        csum = np.concatenate([np.zeros((len(st), 1)), np.cumsum(y * y, axis=1)], axis=1)
        yy = csum[rows, best + seg] - csum[rows, best]
        out["lag"].append(best + off)
        out["peak"].append(height)
        out["gain"].append(cc_peak / np.maximum(xx, 1e-12))
        out["rho"].append(cc[rows, best] / np.sqrt(np.maximum(xx * yy, 1e-12)))
    cat = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in out.items()}
    return SegmentEcho(starts, cat["lag"], cat["peak"], cat["gain"], cat["rho"])


def segment_seed(s: SegmentEcho, rate: int, min_segments: int = 3) -> tuple[int, float] | None:
    """(lag, gain) that at least `min_segments` one-second GCC-PHAT peaks agree on (within 1 ms), if any."""
    over = s.peak >= 0.1
    if np.count_nonzero(over) < min_segments:
        return None
    ref = float(np.median(s.lag[over]))
    agree = over & (np.abs(s.lag - ref) <= 1e-3 * rate)
    if np.count_nonzero(agree) < min_segments:
        return None
    return round(float(np.median(s.lag[agree]))), float(np.median(s.gain[agree]))
