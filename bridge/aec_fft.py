"""Real FFTs along the last axis for the echo canceller, at the cost of the transform and little else.

Pure: numpy/scipy only; no I/O. At the canceller's sizes (1280 points, 1-4 rows) the public
`scipy.fft.rfft/irfft` spend ~3.5 us per call in Python (backend dispatch, argument checks) on top of
~4 us of transform; the canceller makes 3-5 calls per 80 ms block. So this calls the pocketfft binding
under scipy.fft directly when it is there (same code, same results), and the public functions when a
scipy release moves it. Inputs must be float32 / complex64; `irfft` scales by 1/n like numpy's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

__all__ = ["irfft", "rfft"]

_F32 = npt.NDArray[np.float32]
_C64 = npt.NDArray[np.complex64]

try:  # private to scipy: guarded, and checked against the public functions below
    from scipy.fft._pocketfft import pypocketfft

    _pp: Any = pypocketfft
except ImportError:  # pragma: no cover - a scipy without it
    _pp = None


def _public_rfft(a: _F32) -> _C64:
    out: _C64 = sfft.rfft(a, axis=-1, workers=1)
    return out


def _public_irfft(a: _C64, n: int) -> _F32:
    out: _F32 = sfft.irfft(a, n=n, axis=-1, workers=1)
    return out


def _direct_rfft(a: _F32) -> _C64:
    out: _C64 = _pp.r2c(a, (a.ndim - 1,), True, 0, None, 1)
    return out


def _direct_irfft(a: _C64, n: int) -> _F32:
    out: _F32 = _pp.c2r(a, (a.ndim - 1,), n, False, 2, None, 1)
    return out


def _direct_works() -> bool:
    if _pp is None:
        return False
    try:
        x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
        s = _direct_rfft(x)
        return bool(
            s.dtype == np.complex64
            and np.allclose(s, _public_rfft(x), atol=1e-4)
            and np.allclose(_direct_irfft(s, 16), x, atol=1e-5)
        )
    except Exception:  # any change in the private binding means: use the public one
        return False


if _direct_works():
    rfft, irfft = _direct_rfft, _direct_irfft
else:  # pragma: no cover
    rfft, irfft = _public_rfft, _public_irfft
