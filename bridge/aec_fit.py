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
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["History", "fit_taps"]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]


class History:
    """The newest `size` samples of a stream, oldest first (`buf[-1]` is the latest sample)."""

    def __init__(self, size: int) -> None:
        self.buf: _F32 = np.zeros(size, np.float32)

    def push(self, block: _F32) -> None:
        b = len(block)
        self.buf[:-b] = self.buf[b:]
        self.buf[-b:] = block


def fit_taps(ref: _F32, mic: _F32, lag: int, before: int, taps: int, n: int) -> tuple[_F64, float]:
    """FIR h (h[i] is the tap at lag - before + i) minimising |mic - h * ref| over the newest `n` samples,
    and the residual's share of the microphone's energy (1.0: it explains nothing).

    `ref` and `mic` end at the same sample; mic[t] is modelled as sum_i h[i] ref[t - lag + before - i].
    """
    k0 = lag - before
    seg = ref[len(ref) - n - k0 - taps + 1 : len(ref) - k0]
    d = mic[-n:].astype(np.float64)
    ed = float(d @ d)
    a = np.ascontiguousarray(sliding_window_view(seg, taps)[:, ::-1], np.float64)  # a[t, i] = ref[t-k0-i]
    r = a.T @ a
    tr = float(np.trace(r))
    if ed <= 0.0 or tr <= 0.0:
        return np.zeros(taps), 1.0
    r.flat[:: taps + 1] += 1e-5 * tr / taps
    h: _F64 = np.asarray(np.linalg.solve(r, a.T @ d), np.float64)
    e = d - a @ h
    return h, float(e @ e) / ed
