"""The echo canceller's two adaptive filters over a window of reference partition spectra.

Pure: numpy/scipy only; no I/O. Partitioned-block frequency-domain filters (MDF, overlap-save, FFT
2 x partition): [0] the background, which adapts every step; [1] the foreground, which produces the
output and is only ever replaced whole (bridge/aec.py decides when). This module is the arithmetic of
one step, written for few numpy calls, because at these sizes each call (~1 us) costs more than its
work: every buffer is preallocated and written with `out=`, and a step's gradient constraint is left
pending (`constraint_taps` / `constrain`) so the caller can fold its FFT into its own batched one.
Anything that reads the background (`background_error`, `copy`) applies a pending constraint first.

`single`: one filter serves both while the canceller is settled (bridge/aec.py decides): the background
adapts and gives the output, and [1] holds the state `keep` saved before the last update, so `split`
can hand the output back to it when that update (or the caller) made the output worse.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bridge.aec_fft import irfft, rfft

__all__ = ["TwoPathFilter"]

_F32 = npt.NDArray[np.float32]
_C64 = npt.NDArray[np.complex64]


class TwoPathFilter:
    """Background and foreground filters of `partitions` x `partition` taps, as spectra."""

    def __init__(
        self, partition: int, partitions: int, *, mu: float, mu_min: float, breg: float, delta: float
    ):
        m, n, k = partition, partitions, partition + 1
        self.m, self.n, self.k = m, n, k
        self.mu, self.mu_min, self.breg, self.delta = mu, mu_min, breg, delta
        self.W: _C64 = np.zeros((2, n, k), np.complex64)  # [0]: background (adapting), [1]: foreground
        self.same = True  # foreground == background: one product serves both
        self.single = False  # one filter adapts and produces the output; W[1] keeps its last good state
        self.pend: int | None = None  # background partition whose gradient constraint is still due
        self.prior: list[float] = [1.0] * n  # the proportionate weights' floor per partition
        self._prod: _C64 = np.zeros((2, n, k), np.complex64)
        self._Y: _C64 = np.zeros((2, k), np.complex64)
        self._Yv: _F32 = self._Y.view(np.float32).reshape(2, 1, 2 * k)
        self._ones: _F32 = np.ones((1, n), np.float32)  # sums over partitions as one BLAS product
        self._pad: _F32 = np.zeros(2 * m, np.float32)
        self._g: _C64 = np.zeros((n, k), np.complex64)
        self._u: _C64 = np.zeros((n, k), np.complex64)
        self._den: _F32 = np.zeros(k, np.float32)
        self._onek: _F32 = np.ones(k, np.float32)
        self._gam: _F32 = np.zeros(n, np.float32)

    def clear(self) -> None:
        self.W[:] = 0
        self.same, self.pend, self.single = True, None, False

    def load(self, spectra: _C64) -> None:
        """Both filters from the same (partitions, partition + 1) spectra."""
        self.W[:] = spectra
        self.same, self.pend, self.single = True, None, False

    def slide(self, s: int) -> None:
        """Move both filters' taps by `s` partitions (the window slid the other way)."""
        self.flush()
        w = self.W
        if s > 0:
            w[:, :-1] = w[:, 1:].copy()
            w[:, -1] = 0
        elif s < 0:
            w[:, 1:] = w[:, :-1].copy()
            w[:, 0] = 0

    def copy(self) -> None:
        """The foreground := the background."""
        self.flush()
        self.W[1] = self.W[0]
        self.same = True

    def join(self) -> None:
        """From now on one filter: the background adapts and produces the output (half the products)."""
        self.copy()
        self.single = True

    def keep(self) -> None:
        """The one filter's output was good: remember that state (before this step adapts it)."""
        self.flush()
        self.W[1] = self.W[0]

    def split(self) -> None:
        """Two filters again: the foreground is the last kept state, the background the one filter."""
        self.single = self.same = False

    def drop(self) -> None:
        """The foreground := nothing."""
        self.W[1] = 0
        self.same = False

    def restart(self) -> None:
        """The background := the foreground."""
        self.W[0] = self.W[1]
        self.same, self.pend = True, None

    def _weigh(self) -> None:
        """Proportionate weights from |W_p| per partition, floored by the prior: n numbers, cheaper as
        Python floats."""
        Wv = self.W[0].view(np.float32)
        wa = [math.sqrt(v) for v in np.matmul(Wv[:, None, :], Wv[:, :, None]).ravel().tolist()]
        top = max(wa) + 1e-6
        gl = [max(w, p * top) for w, p in zip(wa, self.prior, strict=True)]
        tot = sum(gl)
        self._gam[:] = [v / tot for v in gl]

    def constraint_taps(self) -> _F32 | None:
        """The first half of the pending partition's impulse response (or None): its FFT, zero-padded,
        goes to `constrain`."""
        if self.pend is None:
            return None
        taps: _F32 = irfft(self.W[0, self.pend], 2 * self.m)[: self.m]
        return taps

    def constrain(self, spectrum: _C64) -> None:
        assert self.pend is not None
        self.W[0, self.pend] = spectrum
        self.pend = None

    def flush(self) -> None:
        """Apply the pending gradient constraint now."""
        j, m = self.pend, self.m
        if j is None:
            return
        w = irfft(self.W[0, j], 2 * m)
        w[m:] = 0
        self.W[0, j] = rfft(w)
        self.pend = None

    def errors(self, d: _F32, Xw: _C64) -> tuple[_F32, _F32]:
        """(background error, foreground error) of the newest partition `d`; the same array when equal
        (or when one filter serves both)."""
        if self.same or self.single:
            e = self.background_error(d, Xw)
            return e, e
        np.multiply(self.W, Xw, out=self._prod)
        np.matmul(self._ones, self._prod.view(np.float32), out=self._Yv)
        e, ef = d - irfft(self._Y, 2 * self.m)[:, self.m :]
        return e, ef

    def foreground_error(self, d: _F32, Xw: _C64) -> _F32:
        p = self._prod[1]
        np.multiply(self.W[1], Xw, out=p)
        np.matmul(self._ones, p.view(np.float32), out=self._Yv[1])
        e: _F32 = d - irfft(self._Y[1], 2 * self.m)[self.m :]
        return e

    def background_error(self, d: _F32, Xw: _C64) -> _F32:
        self.flush()
        p = self._prod[0]
        np.multiply(self.W[0], Xw, out=p)
        np.matmul(self._ones, p.view(np.float32), out=self._Yv[0])
        e: _F32 = d - irfft(self._Y[0], 2 * self.m)[self.m :]
        return e

    def adapt(
        self, e: _F32, eb2: float, nv: float, PXw: _F32, Xw: _C64, j: int | None, weigh: bool = True
    ) -> None:
        """One proportionate NLMS step of the background from its error `e` (energy `eb2`); `nv`: the
        error no filter removes; `j`: the partition whose gradient constraint is now pending (None:
        none this step); `weigh`: recompute the proportionate weights (else the last step's)."""
        m, k = self.m, self.k
        W = self.W[0]
        # variable step (Benesty's non-parametric VSS): large while the error is far above what no
        # filter removes (line noise, μ-law), small once it is down there
        mu = self.mu * max(self.mu_min, 1.0 - (nv / (eb2 + 1e-9)) ** 0.5)
        pad = self._pad
        pad[m:] = e
        E = rfft(pad)
        if weigh:
            self._weigh()
        gam = self._gam
        pw = gam @ PXw
        den = self._den
        np.add(pw, self.delta + self.breg * float(pw.dot(self._onek)) / k, out=den)
        np.divide(mu, den, out=den)
        E *= den
        u, g = self._u, self._g
        np.multiply(gam[:, None], E.view(np.float32), out=u.view(np.float32))
        np.conjugate(Xw, out=g)
        g *= u
        W += g
        self.same = False
        self.pend = j
