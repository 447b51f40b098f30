"""Echo estimate: does what we played come back in the inbound audio, how late and how loud?

Theory of operation. `played` is the outbound audio placed on the playout clock (what the phone is
known to have played, when) and `inbound` is the caller's audio mapped to the same clock (sample i of
both = the same instant). An echo is a linear, causal path from one to the other: a bulk delay, then a
direct arrival and, in a room, reflections and a decaying tail spread over hundreds of milliseconds.

1. The path. A least-squares FIR from played to inbound over the whole call (Wiener-Hopf normal
   equations, Toeplitz, solved by Levinson-Durbin), lags -64 ms .. +1000 ms and 64 ms beyond (those
   last taps soak up correlation from outside the window and are never read). A whole-call fit uses
   every millisecond of single talk, where per-second correlation peaks each see only a second, and it
   keeps a room's energy spread over its taps instead of asking one tap to carry it. The fit reads
   played audio only up to a second before the record ends: the normal equations count each played
   sample's whole echo, and the echo of audio cut by the hang-up was never recorded.
2. Double talk. The caller talking over the echo is noise of much higher power. Blocks of 20 ms whose
   residual is louder than the predicted echo plus the line's noise are down-weighted (iteratively
   reweighted least squares, weight = min(1, 2 (E + N) / P)); lost frames weigh 0. When the plain fit
   sees nothing but several one-second GCC-PHAT peaks (Knapp & Carter 1976) agree on a lag, the
   weighting starts from that single-tap path. Of the plain and reweighted fits the one that stands
   out of its own noise the most is kept.
3. The yardstick. The non-causal taps hold only the estimate's noise; so, nearly, do the causal ones
   (a path is sparse). Noise sigma = the larger of their robust spreads (MAD). z = tap / sigma.
4. The delay is the first arrival, not the strongest tap: the earliest local maximum within 40 ms
   before the strongest that reaches 40 % of it and 6 sigma, refined by a parabola (sub-sample).
5. The loss: the response runs from the first arrival to where its 10 ms envelope first spends 20 ms
   under 3 sigma^2; ERL = 10 log10(played energy / predicted echo energy), both over the played audio
   whose whole response lies inside the record, the echo's energy less the energy
   the estimate's noise alone adds over that many taps (measured through the same signal on the
   non-causal taps).
6. Detected when z >= 9 and ERL <= 55 dB (a quieter path is reported but not flagged: it is inaudible
   and at mu-law's smallest steps), and the echo is where the path puts it: of the 20 ms blocks where
   its predicted echo stands out of the line's noise, at most a quarter may hold less than half that
   energy (an echo hides under the caller's voice, never under a quieter line). Per-second GCC-PHAT
   figures are kept as evidence (segments used, segments agreeing with the found lag).

Where it stops (benchmarks/fidelity.py, benchmarks/echo_detection.py): pure delays 20-500 ms at
0-35 dB and rooms (RT60 0.2-0.6 s, 0.3-1.5 m) are found with the first arrival within a fraction of a
millisecond and the loss within tenths of a dB when the caller talks in turns. When the caller talks
over much of the played audio, few single-talk seconds remain: the loss can read up to ~3 dB off
(in the rig, under load, 0.6-2.6 dB high with the caller over half of it: the fit's neighbouring taps
take some of the arrival's energy) and a room at 30 dB can be missed. Line noise above the echo hides it (as it hides it from the ear).
`cancel_echo` subtracts the found path's prediction (for the caller's own speech detection). Pure
numpy/scipy: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy.linalg import solve_toeplitz
from scipy.signal import oaconvolve

from bridge.meters.echo_segments import parabolic, segment_echo, segment_seed

__all__ = ["EchoEstimate", "cancel_echo", "echo_path", "estimate_echo"]


@dataclass(frozen=True, slots=True)
class EchoEstimate:
    detected: bool
    delay_ms: float | None  # played → heard inbound; None when no segment was flagged
    erl_db: float | None  # echo return loss = −20·log10|g|
    peak: float  # median normalised GCC-PHAT peak over flagged segments (over used ones if none)
    segments_used: int
    segments_flagged: int
    gain: float = 0.0  # signed echo gain of the first arrival
    confidence: float = 0.0  # 0: what estimation noise alone reaches, 1: far beyond the detection bar
    path_z: float = 0.0  # the first arrival's tap over the estimate's noise (robust sigma)
    response: npt.NDArray[np.float64] | None = field(default=None, repr=False)  # the path, lag 0 first
    absent_ratio: float = 0.0  # blocks where the path's echo would stand out yet the line was quieter


def echo_path(
    played: npt.NDArray[np.generic],
    inbound: npt.NDArray[np.generic],
    *,
    taps: int,
    pre: int,
    weights: npt.NDArray[np.float64] | None = None,
    align: int = 0,
    regularisation: float = 1e-3,
) -> tuple[npt.NDArray[np.float64], float]:
    """Least-squares echo path from `played` to `inbound` over the whole call, lags -pre .. taps-1.

    Solves the normal equations R h = p (Wiener-Hopf) with R the Toeplitz autocorrelation of what was
    played and p its cross-correlation with what came back, both over the whole call by FFT, R's
    diagonal loaded by `regularisation` x its power (speech leaves parts of the band nearly empty,
    where the system is ill-conditioned). Levinson-Durbin solves it in O(taps^2).

    `weights` (per inbound sample) make it a weighted least squares: inbound sample t counts w[t]
    (the caller talking over the echo is noise of much higher power there: weighting by the inverse
    power is the maximum-likelihood estimate). R is then approximated as Toeplitz with the weights
    read at the path's main lag `align` (exact for a pure delay, close for a room whose energy sits
    near its first arrival).

    Returns (h, weighted power of `played` over the call); h[pre + k] is the echo gain at lag k. The
    `pre` non-causal taps carry no echo: what they hold is the estimate's own noise.
    """
    x = np.asarray(played, dtype=np.float64)
    y = np.asarray(inbound, dtype=np.float64)
    xw = x
    if weights is not None:
        y = y * weights
        aligned = np.ones(len(x))
        aligned[: len(x) - align] = weights[align : len(x)]
        xw = x * aligned
    m = pre + taps
    nfft = sfft.next_fast_len(len(x) + m, real=True)
    spec_x = sfft.rfft(x, nfft)
    spec_xw = spec_x if xw is x else sfft.rfft(xw, nfft)
    auto = sfft.irfft(spec_xw * np.conj(spec_x), nfft)[:m]
    cross = sfft.irfft(sfft.rfft(y, nfft) * np.conj(spec_x), nfft)  # cross[k] = sum_t y[t] x[t - k]
    p = np.concatenate([cross[nfft - pre :], cross[:taps]]) if pre else cross[:taps]
    column = auto.copy()
    column[0] *= 1.0 + regularisation
    return solve_toeplitz(column, p), float(auto[0])


def _block_weights(
    residual: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64], block: int
) -> npt.NDArray[np.float64]:
    """Per sample: 1 where the residual is no louder than the echo plus the line's noise, less where the
    caller (or a burst of noise) is louder: (2 (E + N)) / P, with P the residual's power in the block,
    E the predicted echo's and N the line's noise (the residual's 30th percentile over the call).
    Weights never exceed 1, so a call without double-talk keeps the plain least squares.
    """
    n = len(residual) // block * block
    if n == 0:
        return np.ones(len(residual))
    power = np.mean(residual[:n].reshape(-1, block) ** 2, axis=1)
    echo = np.mean(predicted[:n].reshape(-1, block) ** 2, axis=1)
    ref = 2.0 * (echo + max(float(np.percentile(power, 30)), 1.0))
    w = np.minimum(1.0, ref / np.maximum(power, 1e-12))
    out = np.ones(len(residual))
    out[:n] = np.repeat(w, block)
    return out


def _first_arrival(mag: npt.NDArray[np.float64], noise: float, rate: int) -> int:
    """Index of the first arrival: the earliest local maximum, within 40 ms before the strongest tap,
    that reaches 40 % of it and stands well out of the noise."""
    peak = int(np.argmax(mag))
    floor = max(0.4 * mag[peak], _FIRST_ARRIVAL_Z * noise)
    lo = max(0, peak - int(0.040 * rate))
    above = np.flatnonzero(mag[lo : peak + 1] >= floor)
    i = lo + int(above[0]) if above.size else peak
    while i + 1 < len(mag) and mag[i + 1] > mag[i]:  # climb to the arrival's own maximum
        i += 1
    return i


def estimate_echo(
    played: npt.NDArray[np.int16],
    inbound: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    max_lag_ms: float = 1000.0,
    pre_ms: float = 64.0,
    detect_z: float = 9.0,
    max_erl_db: float = 55.0,
    received: npt.NDArray[np.bool_] | None = None,
) -> EchoEstimate:
    """Echo of `played` in `inbound` (both int16 on the same clock); see the module docstring."""
    x = np.asarray(played, dtype=np.float64)
    y = np.asarray(inbound, dtype=np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    s = segment_echo(played[:n], inbound[:n], rate)
    used = len(s.start)
    search, pre = round(max_lag_ms * rate / 1000) + 1, round(pre_ms * rate / 1000)
    # The fit reaches `pre` past the searched lags too: its last taps soak up whatever correlates from
    # beyond the window (the same voice a second later), so they are never read as the echo.
    taps = search + pre
    if used == 0 or n < taps:
        return EchoEstimate(False, None, None, 0.0, used, 0)
    block = round(_BLOCK_S * rate)
    lost = received[:n] if received is not None else np.ones(n)
    # The fit sees played audio only where its echo, at every searched lag, lies inside the record:
    # the normal equations count each played sample's whole echo, so audio played in the last second
    # (a reply cut by the hang-up) would be taken as having made none, and read a far echo's gain low
    # by the share of energy it held (1.2 dB at 300 ms in a 9 s call). Prediction uses all of it.
    fit_x = x.copy()
    fit_x[n - min(search, n // 2) :] = 0.0

    h, _ = echo_path(fit_x, y, taps=taps, pre=pre)
    fits = [h]
    seed = segment_seed(s, rate)
    if seed is not None and _path_z(h, pre, search) < _SEED_Z:
        # The plain fit sees nothing, yet seconds of single talk agree on a lag (the caller talked over
        # the rest): start the weighting from that single-tap path instead.
        lag, gain = seed
        predicted: npt.NDArray[np.float64] = np.zeros(n)
        predicted[lag:] = gain * x[: n - lag]
        weights = _block_weights(y - predicted, predicted, block) * lost
        h, _ = echo_path(fit_x, y, taps=taps, pre=pre, weights=weights, align=lag)
        fits.append(h)
    for _ in range(_REWEIGHTS):
        # Down-weight what the path does not explain (the caller talking, bursts of noise), then refit.
        # The weights are aligned on the current main lag; with no echo they only reshuffle the noise.
        align = int(np.argmax(np.abs(h[pre : pre + search])))
        predicted = _apply(x, h[pre:])
        weights = _block_weights(y - predicted, predicted, block) * lost
        h, _ = echo_path(fit_x, y, taps=taps, pre=pre, weights=weights, align=align)
        fits.append(h)
    # The weighted fits read the played track's autocorrelation at the main lag only (see echo_path):
    # under heavy double-talk one pass can come out much noisier than the one before it. Keep the fit
    # that stands out of its own noise the most; the choice among a handful barely raises what noise
    # alone reaches (_NOISE_Z), far under the detection bar.
    h = max(fits, key=lambda f: _path_z(f, pre, search))
    causal = h[pre : pre + search]
    noise = _path_noise(h, pre, search)
    mag = np.abs(causal)
    first = _first_arrival(mag, noise, rate)
    # Nothing arrives before the direct sound: the 100 ms before the first arrival hold only noise. A
    # cluster of correlation that no echo explains (the caller's own words replayed later, one voice's
    # long-range likeness) has no quiet lead-in, so it cannot stand out of its neighbours there.
    lead = h[max(0, pre + first - round(_LEAD_IN_S * rate)) : pre + first - round(0.001 * rate)]
    z = float(mag[first] / max(noise, _noise_sigma(lead)))
    off, _ = parabolic(mag[None, :], np.array([first]))
    delay_ms = float((first + off[0]) * 1000.0 / rate)
    # The response: from just before the first arrival to where its 10 ms envelope sinks into the noise.
    env = np.convolve(causal * causal, np.ones(round(0.01 * rate)) / round(0.01 * rate), mode="same")
    start = max(0, first - round(0.002 * rate))
    # (It ends at the first 20 ms the envelope spends below 3x the noise power, not at the last noise
    # excursion: far lags of a weighted fit are noisier than the non-causal yardstick.)
    quiet = env[first:] <= _TAIL_NOISE_FACTOR * noise * noise
    gap = round(0.02 * rate)
    runs = np.convolve(quiet, np.ones(gap, dtype=int), mode="valid") >= gap
    end = first + (int(np.argmax(runs)) if runs.any() else len(quiet))
    end = max(end, first + 1)
    region = np.zeros_like(causal)
    region[start:end] = causal[start:end]
    # The loss compares what was played with the echo it made, so only played audio whose whole echo
    # lies inside the record counts: the echo of the last `end` samples (a reply cut by the hang-up)
    # would have come after the inbound audio ended, and counting them read a far echo ~1.5 dB quiet.
    whole = x.copy()
    whole[max(0, n - end) :] = 0.0
    power = float(np.dot(whole, whole))
    predicted = _apply(whole, region)
    # The estimate's own noise adds energy of its own to the region; the non-causal taps, which hold
    # nothing else, say how much per tap through this very signal (coloured as the region's noise is).
    through_noise = _apply(whole, h[:pre])
    echo_energy = (
        float(np.dot(predicted, predicted))
        - float(np.dot(through_noise, through_noise)) * (end - start) / pre
    )
    if echo_energy <= 0:  # the noise correction cannot exceed the region's energy: take it uncorrected
        echo_energy = float(np.dot(predicted, predicted))
    erl = 10.0 * np.log10(power / echo_energy) if echo_energy > 0 and power > 0 else None
    lag_tol = 1e-3 * rate
    flagged = int(np.count_nonzero((s.peak >= 0.1) & (np.abs(s.lag - (first + off[0])) <= lag_tol)))
    absent = _absent_ratio(_apply(x, region), y, lost > 0, block)
    detected = z >= detect_z and erl is not None and erl <= max_erl_db and absent <= _MAX_ABSENT
    peak = float(np.median(s.peak)) if used else 0.0
    return EchoEstimate(
        detected,
        delay_ms,
        erl,
        peak,
        used,
        flagged,
        float(causal[first]),
        confidence=float(np.clip((z - _NOISE_Z) / (detect_z + 3.0 - _NOISE_Z), 0.0, 1.0)),
        path_z=z,
        response=region,
        absent_ratio=absent,
    )


_MAX_ABSENT = 0.25
_MIN_EVIDENT_BLOCKS = 10


def _absent_ratio(
    predicted: npt.NDArray[np.float64],
    inbound: npt.NDArray[np.float64],
    received: npt.NDArray[np.bool_],
    block: int,
) -> float:
    """Share of the blocks where the path says its echo stands out of the line's noise (predicted
    energy >= 2x the noise) whose inbound audio holds less than half that energy: an echo can hide
    under the caller's voice, but it cannot be missing from a quieter line. A path read off one voice's
    likeness to itself (the caller's words over our replay of earlier ones) predicts echo where the line
    held only noise: about 0.6 of such blocks, against at most 0.01 for echoes found in the rig.
    0 when fewer than 10 blocks say anything.
    """
    n = min(len(predicted), len(inbound)) // block * block
    if n == 0:
        return 0.0
    p = np.mean(predicted[:n].reshape(-1, block) ** 2, axis=1)
    y = np.mean(inbound[:n].reshape(-1, block) ** 2, axis=1)
    whole = received[:n].reshape(-1, block).all(axis=1)
    if not whole.any():
        return 0.0
    noise = max(float(np.percentile(y[whole], 30)), 1.0)
    evident = whole & (p >= 2.0 * noise)
    count = int(np.count_nonzero(evident))
    if count < _MIN_EVIDENT_BLOCKS:
        return 0.0
    return float(np.count_nonzero(evident & (y < 0.5 * p))) / count


_REWEIGHTS = 2
_SEED_Z = 6.0


def _path_noise(h: npt.NDArray[np.float64], pre: int, search: int) -> float:
    """The estimate's noise: the robust spread of the non-causal taps (they hold nothing else) or of
    the searched causal taps, whichever is larger. An echo path is sparse, so it barely moves the
    causal taps' median; what does move it is structure no echo explains (two utterances of one voice,
    a weighted fit's approximation), and that must not stand out as a path."""
    return max(_noise_sigma(h[:pre]), _noise_sigma(h[pre : pre + search]))


def _path_z(h: npt.NDArray[np.float64], pre: int, search: int) -> float:
    """The strongest searched tap over the estimate's noise."""
    return float(np.max(np.abs(h[pre : pre + search])) / _path_noise(h, pre, search))


def _noise_sigma(taps: npt.NDArray[np.float64]) -> float:
    """Robust standard deviation (median absolute deviation) of taps that hold only noise."""
    return float(1.4826 * np.median(np.abs(taps))) + 1e-12


_BLOCK_S = 0.02
_LEAD_IN_S = 0.1
_FIRST_ARRIVAL_Z = 6.0
_NOISE_Z = 4.0  # what the largest of a thousand noise taps reaches
_TAIL_NOISE_FACTOR = 3.0


def _apply(x: npt.NDArray[np.float64], h: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """x through the causal filter h, cut to len(x)."""
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return np.zeros_like(x)
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    out = np.zeros_like(x)
    out[lo:] = oaconvolve(x, h[lo:hi])[: len(x) - lo]
    return out


def cancel_echo(
    played: npt.NDArray[np.int16], inbound: npt.NDArray[np.int16], est: EchoEstimate
) -> npt.NDArray[np.int16]:
    """`inbound` less the echo the estimated path predicts from `played` (unchanged when none was found).

    Subtraction only: a room's tail below the estimate's noise stays in (issue 17 builds the canceller).
    """
    if not est.detected or est.response is None:
        return np.asarray(inbound, dtype=np.int16)
    n = len(inbound)
    x = np.zeros(n)
    m = min(n, len(played))
    x[:m] = played[:m]
    out = np.asarray(inbound, dtype=np.float64) - _apply(x, est.response)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
