"""Echo estimate: does what we played come back in the inbound audio, how late and how loud?

Theory of operation. `played` is the outbound audio placed on the playout clock and `inbound` is the
caller's audio mapped to the same clock (sample i of both = the same instant). The call is cut into
segments (1 s) in which enough was played (≥ 30 % of 10 ms windows above −40 dBFS). For each segment
GCC-PHAT (Knapp & Carter 1976) between the played segment x and the inbound y (the segment plus the
600 ms search range) gives the lag of the strongest correlation and its normalised peak (1.0 = y is x
delayed and scaled, ~0.03 = unrelated audio); the lag is refined with parabolic interpolation. At that lag
the least-squares gain g = <y_lag, x>/<x, x> and the correlation coefficient ρ are computed.

Decision: a segment is flagged when its peak ≥ `peak_threshold` and its lag agrees (±1 ms) with the
median lag of the other flagged segments; echo is `detected` when at least `min_flagged` segments (and
`min_flagged_ratio` of those used) are flagged and the ERL is at most `max_erl_db` (55 dB). Double-talk (the caller talking over the played audio)
lowers the peak and biases g, so ERL = −20·log10|g| is the median gain over the flagged segments with
the highest ρ (the half least disturbed by the caller) rather than over all of them.

Where it stops (benchmarks/echo_detection.py): the peak falls with the echo-to-(noise + caller) ratio.
Under −50 dBFS line noise a 40 dB echo (≈ −61 dBFS for speech at −21 dBFS) is still found, a 45 dB one
is not: it is 15 dB under the noise, inaudible, and its peak is that of unrelated audio. On a noiseless
line GCC-PHAT still finds the path at 70 dB, but such an echo (≈ −75 dBFS and below) is down at μ-law's
smallest steps: inaudible, and μ-law's quantisation biases its measured ERL low by > 2 dB from ~60 dB.
Hence the `max_erl_db` gate: an echo path that quiet is reported in the estimate but not flagged.
Pure numpy: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from bridge.meters.levels import window_dbfs

__all__ = ["EchoEstimate", "SegmentEcho", "estimate_echo", "segment_echo"]


@dataclass(frozen=True, slots=True)
class EchoEstimate:
    detected: bool
    delay_ms: float | None  # played → heard inbound; None when no segment was flagged
    erl_db: float | None  # echo return loss = −20·log10|g|
    peak: float  # median normalised GCC-PHAT peak over flagged segments (over used ones if none)
    segments_used: int
    segments_flagged: int
    gain: float = 0.0  # signed least-squares echo gain at the lag (to subtract the echo)


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


def _parabolic(
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
        off, height = _parabolic(np.abs(phat), best)
        rows = np.arange(len(st))
        _, cc_peak = _parabolic(cc * np.sign(cc[rows, best])[:, None], best)
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


def estimate_echo(
    played: npt.NDArray[np.int16],
    inbound: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    max_lag_ms: float = 600.0,
    segment_s: float = 1.0,
    peak_threshold: float = 0.1,
    lag_tolerance_ms: float = 1.0,
    min_flagged: int = 3,
    min_flagged_ratio: float = 0.1,
    max_erl_db: float = 55.0,
) -> EchoEstimate:
    """Echo of `played` in `inbound` (both int16 on the same clock); see the module docstring."""
    s = segment_echo(played, inbound, rate, max_lag_ms=max_lag_ms, segment_s=segment_s)
    used = len(s.start)
    if used == 0:
        return EchoEstimate(False, None, None, 0.0, 0, 0)
    over = s.peak >= peak_threshold
    if not over.any():
        return EchoEstimate(False, None, None, float(np.median(s.peak)), used, 0)
    ref = np.median(s.lag[over])
    flagged = over & (np.abs(s.lag - ref) <= lag_tolerance_ms * rate / 1000)
    k = int(flagged.sum())
    delay_ms = float(np.median(s.lag[flagged]) * 1000 / rate)
    rho = s.rho[flagged]
    best = np.argsort(-rho)[: max(1, (k + 1) // 2)]
    gains = s.gain[flagged][best]
    g = float(np.median(np.abs(gains)))
    erl = float(-20 * np.log10(g)) if g > 0 else None
    detected = k >= min_flagged and k >= min_flagged_ratio * used and erl is not None and erl <= max_erl_db
    signed = g if np.count_nonzero(gains > 0) * 2 >= gains.size else -g
    return EchoEstimate(detected, delay_ms, erl, float(np.median(s.peak[flagged])), used, k, signed)
