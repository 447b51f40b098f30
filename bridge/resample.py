"""Streaming 8 kHz <-> 24 kHz resampling for a live call: a short linear-phase polyphase FIR.

Why not soxr: at 20 ms chunks its streaming presets withhold 42-84 ms per direction (block buffering),
and its QQ preset / ``audioop.ratecv`` do not filter at all (reference/resampling.md). Here one 61-tap
equiripple low-pass at 24 kHz serves both directions:

- 8k -> 24k: zero-stuff by 3 and filter, done as 3 polyphase branches of 21 taps (gain 3);
- 24k -> 8k: filter and keep every 3rd sample, computing only the kept outputs.

Each ``process`` call prepends the carried input history and evaluates every output at once with one
BLAS matrix product over a strided sliding-window view of that history (a polyphase "im2col"; no
per-sample Python). Measured on the 2-core dev box: 6 µs per 160-sample call up, 6 µs per 480-sample
call down (14 µs per 1920-sample frame); for 8k->24k, scipy's ``upfirdn`` over the same history took
26 µs, three ``np.convolve`` branches 28 µs and ``lfilter`` with carried ``zi`` per branch 150 µs.

Design: ``scipy.signal.remez``, 61 taps, pass 0-3400 Hz, stop 4600-12000 Hz, stop weight 3, normalised
to unit DC gain. Design-grid figures: 0.048 dB ripple over 300-3400 Hz, 60 dB stopband. Group delay
(N-1)/2 = 30 samples at 24 kHz = 10 samples at 8 kHz = 1.25 ms per direction, with nothing withheld:
every call returns exactly ``len(x) * out_rate / in_rate`` samples. Measured through the streaming
path in 20 ms chunks (tests/unit/test_resample.py, benchmarks/resampler.py): delay 1.25 ms both ways
(impulse and chirp cross-correlation), ripple 0.048 dB over 300-3400 Hz, 24k->8k aliases of 4.6-11.9 kHz
>= 60 dB below a 1 kHz tone (4.2 kHz, which folds to 3.8 kHz outside the band: 15 dB), 8k->24k images at
4.6-12 kHz >= 57 dB below the tone. (The reference's 91-tap filter: 1.9 ms, >= 46 dB.)

This module does no I/O and keeps no clock: it sees only samples.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["FILTER_TAPS", "NUM_TAPS", "StreamResampler"]

_RATE_HI = 24_000
_RATE_LO = 8_000
_FACTOR = 3
NUM_TAPS = 61
_PASS_HZ, _STOP_HZ = 3400.0, 4600.0


def _design() -> npt.NDArray[np.float64]:
    """The design, for reference and the tests: its result is the literal below, bit for bit."""
    from scipy import signal

    h = signal.remez(NUM_TAPS, [0, _PASS_HZ, _STOP_HZ, _RATE_HI / 2], [1, 0], weight=[1, 3], fs=_RATE_HI)
    return np.asarray(h / h.sum(), dtype=np.float64)


#: The low-pass at 24 kHz both directions share (float64, unit DC gain, symmetric).
# Written out rather than designed at import: importing scipy.signal costs ~0.6 s of server startup.
FILTER_TAPS = np.array(
    [
        -0.0005678412399180849,
        -0.0015507340403371457,
        -0.0008401500861745268,
        0.0005564352126201142,
        0.0021927132283419653,
        0.0017794175877832922,
        -0.0009315483109027504,
        -0.0037383783723182727,
        -0.003237725782814824,
        0.0012801737843751658,
        0.0059973362669398745,
        0.005420119153241718,
        -0.0016440343192015718,
        -0.009187894488470433,
        -0.008632042168789052,
        0.002008463851590011,
        0.013714746068566881,
        0.013402201667098705,
        -0.002351346042314769,
        -0.020413320651209012,
        -0.020860021280367597,
        0.002650384983106172,
        0.03137896662773165,
        0.03405667900374478,
        -0.002880644909801804,
        -0.05381884718860409,
        -0.06524501260405621,
        0.003027657097320682,
        0.13854664342070766,
        0.274295855953016,
        0.3311834951581909,
        0.274295855953016,
        0.13854664342070766,
        0.003027657097320682,
        -0.06524501260405621,
        -0.05381884718860409,
        -0.002880644909801804,
        0.03405667900374478,
        0.03137896662773165,
        0.002650384983106172,
        -0.020860021280367597,
        -0.020413320651209012,
        -0.002351346042314769,
        0.013402201667098705,
        0.013714746068566881,
        0.002008463851590011,
        -0.008632042168789052,
        -0.009187894488470433,
        -0.0016440343192015718,
        0.005420119153241718,
        0.0059973362669398745,
        0.0012801737843751658,
        -0.003237725782814824,
        -0.0037383783723182727,
        -0.0009315483109027504,
        0.0017794175877832922,
        0.0021927132283419653,
        0.0005564352126201142,
        -0.0008401500861745268,
        -0.0015507340403371457,
        -0.0005678412399180849,
    ]
)
FILTER_TAPS.setflags(write=False)
_DELAY_24K = (NUM_TAPS - 1) // 2  # samples at 24 kHz; a multiple of 3, so whole samples at 8 kHz too
_BRANCH_TAPS = -(-NUM_TAPS // _FACTOR)  # 21


def _up_matrix(gain: float) -> npt.NDArray[np.float32]:
    # y[3n + p] = 3 * sum_k h[3k + p] * x[n - k]. Over xx = history(K-1) + x, with the window
    # W[n, j] = xx[n + j], this is W @ G with G[j, p] = 3 * h[3 * (K-1-j) + p]; the (n, 3) result,
    # read row-major, is the interleaved 24 kHz output.
    padded = np.zeros(_BRANCH_TAPS * _FACTOR)
    padded[:NUM_TAPS] = FILTER_TAPS * (_FACTOR * gain)
    return np.ascontiguousarray(padded.reshape(_BRANCH_TAPS, _FACTOR)[::-1], dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _block_matrices(up: bool, gain: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    # The same filter as two dense (B, B * out/in) matrices over non-overlapping rows of B input samples,
    # B being the history length (20 samples up, 60 down): output row j is prev @ P + cur @ C, where
    # cur = row j of the chunk and prev = the row before it (the history for the first). Two BLAS
    # products over contiguous rows, no sliding-window copy: 2-3x less CPU than the window view per
    # call, and any split into whole rows gives bit-identical output.
    if up:
        b, outs = _BRANCH_TAPS - 1, _FACTOR
        taps = [
            (3 * k + p, k, p) for k in range(_BRANCH_TAPS) for p in range(_FACTOR) if 3 * k + p < NUM_TAPS
        ]
        h = FILTER_TAPS * (_FACTOR * gain)
        width = b * outs
        prev, cur = np.zeros((b, width)), np.zeros((b, width))
        for r in range(b):  # y[3n + p] = 3 * sum_k h[3k + p] * x[n - k]
            for t, k, p in taps:
                idx = b + r - k
                (cur if idx >= b else prev)[idx % b, outs * r + p] += h[t]
    else:
        b = NUM_TAPS - 1
        width = b // _FACTOR
        h = FILTER_TAPS * gain
        prev, cur = np.zeros((b, width)), np.zeros((b, width))
        for r in range(width):  # y[m] = sum_k h[k] * x[3m - k]
            for k in range(NUM_TAPS):
                idx = b + _FACTOR * r - k
                (cur if idx >= b else prev)[idx % b, r] += h[k]
    # built once per (direction, gain) and shared read-only by every call's resampler
    prev32, cur32 = prev.astype(np.float32), cur.astype(np.float32)
    prev32.setflags(write=False)
    cur32.setflags(write=False)
    return prev32, cur32


@functools.lru_cache(maxsize=16)
def _stacked_matrix(up: bool, gain: float) -> npt.NDArray[np.float32]:
    """[prev; cur] as one (2B, width) matrix, shared read-only like the blocks."""
    prev, cur = _block_matrices(up, gain)
    stacked = np.ascontiguousarray(np.vstack((prev, cur)), dtype=np.float32)
    stacked.setflags(write=False)
    return stacked


def _down_vector(gain: float) -> npt.NDArray[np.float32]:
    # y[m] = sum_k h[k] * x[3m - k]. Over xx = history(N-1) + x, with W[m, j] = xx[3m + j], this is
    # W @ h[::-1].
    return np.ascontiguousarray(FILTER_TAPS[::-1] * gain, dtype=np.float32)


class StreamResampler:
    """One direction of one call: 8000 -> 24000 or 24000 -> 8000 Hz, with state carried across calls.

    ``process(x)`` takes float32 samples (in [-1, 1] by convention; nothing is clipped here), or int16
    samples that it converts exactly on the way in (pair them with ``gain=1/32768``), and returns
    exactly ``len(x) * out_rate / in_rate`` float32 samples, delayed by ``delay_ms``. For 24k -> 8k,
    ``len(x)`` must be a multiple of 3. Chunking does not change the result: any split of a signal
    gives the same samples, to float32 rounding, as one call on the whole.

    ``gain`` scales the output; the pipelines use it to fold int16 scaling into the filter for free.
    """

    __slots__ = ("_coef", "_hist", "_hist_len", "_stacked", "_up", "gain", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, *, gain: float = 1.0) -> None:
        if (in_rate, out_rate) == (_RATE_LO, _RATE_HI):
            self._up = True
            self._coef = _up_matrix(gain)
            self._hist_len = _BRANCH_TAPS - 1
        elif (in_rate, out_rate) == (_RATE_HI, _RATE_LO):
            self._up = False
            self._coef = _down_vector(gain)
            self._hist_len = NUM_TAPS - 1
        else:
            raise ValueError(f"only 8000 <-> 24000 Hz is supported, not {in_rate} -> {out_rate}")
        self._stacked = _stacked_matrix(self._up, gain)
        self.in_rate, self.out_rate, self.gain = in_rate, out_rate, gain
        self._hist: npt.NDArray[np.float32] = np.zeros(self._hist_len, np.float32)

    @property
    def delay_ms(self) -> float:
        """Group delay this resampler adds, in ms (the content offset; no samples are withheld)."""
        return 1000.0 * _DELAY_24K / _RATE_HI

    def reset(self) -> None:
        """Forget the carried history, as if freshly constructed (e.g. after a stream restarts)."""
        self._hist = np.zeros(self._hist_len, np.float32)

    def process(self, x: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        """Resample the next chunk of the stream; see the class docstring for the contract."""
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.float32)
        # One allocation holds history + chunk (and converts int16 or float64 input): it must be float32
        # and contiguous for the strided view.
        xx = np.concatenate((self._hist, x), dtype=np.float32)
        self._hist = xx[n:]
        out: npt.NDArray[np.float32]
        b = self._hist_len
        if n % b == 0:  # whole rows (every 20 ms chunk and 80 ms frame): the block form
            # row j of the output = [row j-1 | row j] @ [prev; cur]: one BLAS product over an
            # overlapping (m, 2b) view of the buffer
            win2: npt.NDArray[np.float32] = np.ndarray((n // b, 2 * b), np.float32, xx, 0, (4 * b, 4))
            out = np.dot(win2, self._stacked)
            return out.reshape(-1)
        if self._up:
            win: npt.NDArray[np.float32] = np.ndarray((n, _BRANCH_TAPS), np.float32, xx, 0, (4, 4))
            out = np.dot(win, self._coef).reshape(-1)
            return out
        if n % _FACTOR:
            raise ValueError(f"24 kHz -> 8 kHz needs a multiple of 3 samples per call, got {n}")
        win = np.ndarray((n // _FACTOR, NUM_TAPS), np.float32, xx, 0, (4 * _FACTOR, 4))
        out = np.dot(win, self._coef)
        return out
