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
strong pitch period cannot move the filter's window. An evaluation with nothing accumulated since the
last one (silence) has the last one's answer and is not recomputed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bridge.aec_fft import irfft

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
        ps, kb, h = self.ps, self.kb, self.m // 2
        self._c: _C64 = np.zeros((ps, kb), np.complex64)
        self._sxx: _F32 = np.zeros(kb, np.float32)
        self._sdd: _F32 = np.zeros(kb, np.float32)
        self._t: _C64 = np.zeros((ps, kb), np.complex64)  # scratch: one step's cross-spectra
        self._t2: _F32 = np.zeros((kb, 2), np.float32)
        self._t1: _F32 = np.zeros(kb, np.float32)
        self._r2: _F32 = np.zeros((ps, h), np.float32)
        self._n = self._active = 0
        self._fresh = False  # something was accumulated since the last evaluation
        self._pending: tuple[int, float] | None = None
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
            a = np.float32(max(self.smooth, 1.0 / self._active))
            d = dspec[:kb]
            t, t1 = self._t, self._t1
            self._c *= np.float32(1 - a)
            np.conjugate(xh[: self.ps, :kb], out=t)
            t *= d
            t *= a
            self._c += t
            np.subtract(xpow[:kb], self._sxx, out=t1)
            t1 *= a
            self._sxx += t1
            np.square(d.view(np.float32).reshape(kb, 2), out=self._t2)
            np.add(self._t2[:, 0], self._t2[:, 1], out=t1)
            t1 -= self._sdd
            t1 *= a
            self._sdd += t1
            self._fresh = True
        self._n += 1
        if self._n % self.every or self._active < self.min_active:
            return False
        if not self._fresh:  # the same sums as the last evaluation: the same answer, without the FFT
            if self._pending is None:
                return False
            (self.lag, self.z), self._pending = self._pending, None
            return True
        self._fresh = False
        return self._evaluate()

    def _evaluate(self) -> bool:
        m, h = self.m, self.m // 2
        sxx, sdd = self._sxx, self._sdd
        w = np.multiply(sxx, sdd)
        np.sqrt(w, out=w)
        w += np.float32(1e-3 * (float(sxx.sum()) * float(sdd.sum())) ** 0.5 / self.kb + 1e-9)
        np.divide(np.float32(1.0), w, out=w)
        np.multiply(self._c, w, out=self._t)
        r = irfft(self._t, m)[:, :h]
        r2 = np.square(r, out=self._r2)
        i = int(r2.argmax())
        rms = (float(r2.sum()) / r2.size) ** 0.5 + 1e-12
        z = abs(float(r[i // h, i % h])) / rms
        lag = (i // h) * m + 2 * (i % h)
        if self.lag is None:
            if z >= self.z_on:
                self.lag, self.z = lag, z
                return True
            return False
        zh = abs(float(r[self.lag // m, (self.lag % m) // 2])) / rms
        self.z = zh
        if abs(lag - self.lag) <= 8 or z < self.z_on or z < 1.5 * zh:
            self._pending = None
            return False
        if self._pending is not None and abs(self._pending[0] - lag) <= 8:
            self._pending = None
            self.lag, self.z = lag, z
            return True
        self._pending = lag, z
        return False
