"""The echo's bulk delay, from the reference partition spectra the canceller already holds.

Pure: numpy/scipy only; no I/O. Generalised cross-correlation with SCOT weighting (each bin divided by
the square root of the reference and microphone powers, smoothed over time), evaluated on the lower
half of the band (0 .. rate/4, where speech carries its energy): the cross-spectrum of the microphone
partition with every reference partition of the search range is accumulated once per step (one
vectorised product, no FFT of its own but the microphone's), and every `every` steps one batched
inverse FFT turns it into the correlation over all lags at a 2-sample resolution. The peak's height
over the RMS of the whole correlation (`z`) says how sure it is: the largest of ~2,500 values of an
uncorrelated pair sits near 4, an echo 10 dB down gives 15-40.

Hysteresis: a first estimate needs z >= `z_on`; a different lag replaces the held one only when it
beats the held lag's own height by 1.5x on two evaluations in a row, so a word of double talk or a
strong pitch period cannot move the filter's window.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

__all__ = ["BulkDelay"]

_C64 = npt.NDArray[np.complex64]
_F32 = npt.NDArray[np.float32]


class BulkDelay:
    """Feed `update` once per canceller step; `lag` is the held estimate in samples (or None)."""

    def __init__(
        self,
        partition: int,
        partitions: int,
        *,
        every: int = 2,
        smooth: float = 0.12,
        z_on: float = 9.0,
        min_active: int = 6,
    ) -> None:
        self.m, self.ps, self.kb = partition, partitions, partition // 2 + 1
        self.every, self.smooth, self.z_on, self.min_active = every, smooth, z_on, min_active
        self.reset()

    def reset(self) -> None:
        self._c: _C64 = np.zeros((self.ps, self.kb), np.complex64)
        self._sxx: _F32 = np.zeros(self.kb, np.float32)
        self._sdd: _F32 = np.zeros(self.kb, np.float32)
        self._n = self._active = 0
        self._pending: int | None = None
        self.lag: int | None = None
        self.z = 0.0

    def update(self, xh: _C64, dspec: _C64, xpow: _F32, active: bool) -> bool:
        """Accumulate one step; True when `lag` changed (set or moved).

        `xh`: reference spectra, newest first (at least `partitions` rows; row p holds the 2m samples
        ending p partitions ago); `dspec`: spectrum of [zeros(m), mic partition]; `xpow`: |xh[0]|^2;
        `active`: the reference carried sound in this step (nothing is learnt from silence).
        """
        kb = self.kb
        if active:
            self._active += 1
            a = max(self.smooth, 1.0 / self._active)
            d = dspec[:kb]
            self._c *= np.float32(1 - a)
            self._c += np.float32(a) * (np.conj(xh[: self.ps, :kb]) * d)
            self._sxx += np.float32(a) * (xpow[:kb] - self._sxx)
            self._sdd += np.float32(a) * ((d.real**2 + d.imag**2) - self._sdd)
        self._n += 1
        if self._n % self.every or self._active < self.min_active:
            return False
        w = 1.0 / (
            np.sqrt(self._sxx * self._sdd) + 1e-3 * float(self._sxx.mean() * self._sdd.mean()) ** 0.5 + 1e-9
        )
        r = np.abs(sfft.irfft(self._c * w.astype(np.float32), n=self.m, axis=1, workers=1)[:, : self.m // 2])
        i = int(np.argmax(r))
        rms = float(np.sqrt(np.mean(r * r))) + 1e-12
        z = float(r.flat[i]) / rms
        lag = (i // (self.m // 2)) * self.m + 2 * (i % (self.m // 2))
        if self.lag is None:
            if z >= self.z_on:
                self.lag, self.z = lag, z
                return True
            return False
        held = self.lag // self.m, (self.lag % self.m) // 2
        zh = float(r[held]) / rms
        self.z = zh
        if abs(lag - self.lag) <= 8 or z < self.z_on or z < 1.5 * zh:
            self._pending = None
            return False
        if self._pending is not None and abs(self._pending - lag) <= 8:
            self._pending = None
            self.lag, self.z = lag, z
            return True
        self._pending = lag
        return False
