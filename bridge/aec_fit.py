"""A least-squares start for the echo canceller's filter, once the bulk delay is known.

Pure: numpy only; no I/O. `History` keeps the last seconds of the reference and the microphone in the
time domain; `fit_taps` solves the normal equations for a short FIR (`taps` samples, starting `before`
samples ahead of the found lag) over the newest `n` microphone samples. A pure echo (a delay and a gain,
maybe a few early reflections) is then cancelled to the μ-law floor from the block the lag is found,
instead of after seconds of NLMS; the adaptive filter only refines it and learns a room's tail.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["History", "fit_taps"]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]


class History:
    """The newest `size` samples of a stream, oldest first (`buf[-1]` is the latest sample).

    Kept in a buffer twice the size that is slid back only when full, so a push writes one block
    instead of moving the whole history every time.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._a: _F32 = np.zeros(2 * size, np.float32)
        self._end = size

    @property
    def buf(self) -> _F32:
        return self._a[self._end - self.size : self._end]

    def push(self, block: npt.NDArray[np.generic]) -> _F32:
        """Append `block` (cast to float32); returns the stored copy, valid until the next push."""
        b, n = len(block), self.size
        if b > n:
            block, b = block[-n:], n
        if self._end + b > len(self._a):
            self._a[: n - b] = self._a[self._end - n + b : self._end]
            self._end = n - b
        new = self._a[self._end : self._end + b]
        new[:] = block
        self._end += b
        return new


def fit_taps(ref: _F32, mic: _F32, lag: int, before: int, taps: int, n: int) -> tuple[_F64, float]:
    """FIR h (h[i] is the tap at lag - before + i) minimising |mic - h * ref| over the newest `n` samples,
    and the residual's share of the microphone's energy (1.0: it explains nothing).

    `ref` and `mic` end at the same sample; mic[t] is modelled as sum_i h[i] ref[t - lag + before - i].
    The normal equations come from correlations and a recursion along their diagonals (the windows of
    neighbouring taps differ by one sample at each end), not from the n x taps data matrix.
    """
    k0 = lag - before
    s = ref[len(ref) - n - k0 - taps + 1 : len(ref) - k0].astype(np.float64)
    d = mic[-n:].astype(np.float64)
    ed = float(d @ d)
    # g[p, q] = sum_t s[t + p] s[t + q]; the data matrix is a[t, i] = s[t + taps - 1 - i]
    g = np.empty((taps, taps))
    g[0] = np.correlate(s, s[:n], "valid")
    for p in range(1, taps):
        g[p, p:] = (
            g[p - 1, p - 1 : -1] + s[n + p - 1] * s[n + p - 1 : n + taps - 1] - s[p - 1] * s[p - 1 : taps - 1]
        )
    r = (np.triu(g) + np.triu(g, 1).T)[::-1, ::-1].copy()
    tr = float(np.trace(r))
    if ed <= 0.0 or tr <= 0.0:
        return np.zeros(taps), 1.0
    r.flat[:: taps + 1] += 1e-5 * tr / taps
    h: _F64 = np.asarray(np.linalg.solve(r, np.correlate(s, d, "valid")[::-1]), np.float64)
    e = d - np.correlate(s, h[::-1], "valid")
    return h, float(e @ e) / ed
