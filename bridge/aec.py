"""Echo cancellation for the caller's inbound audio at 8 kHz, with what we played as the reference.

Pure: numpy/scipy only; no I/O, no clock reads, no asyncio. The session feeds one 640-sample (80 ms)
block of decoded inbound audio and the reference block for the same samples, and gets the cancelled
block back at once: the output sample n is the input sample n minus the echo estimate for it, so the
canceller adds no latency (it needs no future input; the only look-ahead is on the *reference*, which
the bridge knows before the phone plays it). It never suppresses: what is not echo passes unchanged.

Theory of operation
-------------------
* Reference lead: pass the reference `lead` samples ahead of the microphone (ref[n] = what played at
  mic sample n + lead), so an echo that arrives up to `lead_ms` before the playout estimate says (the
  playout clock is an estimate, +-20 ms) still sits at a positive lag.
* Bulk delay first (bridge/aec_delay.py): a SCOT-weighted cross-correlation of the microphone with
  the reference over lags 0 .. lead + `taps_ms`, on the reference partition spectra kept here anyway.
  Until it finds an echo (or `delay_hint_ms` places one) the output is the input, bit for bit: a clean
  call is untouched.
* Then a short partitioned-block frequency-domain adaptive filter (MDF, overlap-save, FFT 2 x
  `partition`) over a window of the reference spectra, from `pre_ms` before the estimated lag to at
  least `tail_ms` after it: 8 partitions of 40 ms instead of the 14 a blind 540 ms filter needs, so it
  converges faster and costs less. A room response is a direct path and a tail decaying 60 dB over
  RT60, so 240 ms of tail holds all but ~1 % of a 0.6 s room's energy (20 dB).
* Step: per bin, normalised by the partitions' reference power plus `breg` x its mean over the band
  (a pure per-bin normalisation blows up the μ-law and line noise in the bins where speech has no
  energy); weighted per partition proportionately to each partition's share of the filter, with a
  prior from the delay estimate (the lag's partition 1, then `decay` per partition, floor `rho`).
  Gradient constraint on one partition per step in turn.
* Double talk and path changes: two filters (two-path, Ochiai; Speex's foreground/background). The
  background adapts every step; the foreground produces the output and is replaced by the background
  when the background's error energy, less the error's noise floor, is clearly (30 %) lower than the
  foreground's and below the microphone's. Caller speech can disturb the background but never the
  output. A foreground that makes the output louder than the microphone (the path moved under it) is
  dropped. A move of the estimated lag by more than a partition resets both filters at the new window.

Alternatives, measured (benchmarks/aec.py and tests/unit/test_aec.py signals)
----------------------------------------------------------------------------
* First version (blind 540 ms filter, 14 x 320, PNLMS, per-bin normalisation, two-path): ERLE 20-27 dB
  after 5 s, 20 dB first reached after 3.5-6 s, rooms 17.6-21.6 dB, -50 dBFS noise 7-15 dB, 5.8 ms CPU
  per call-second. It also could not reach a 0.6 s room behind 200 ms (lag + tail past 540 ms).
* Window of 5 x 640 (one update per 80 ms block): 1.9 ms CPU per call-second but 20 dB after ~4 s;
  windows of 320 converge ~1.5x faster per second of speech for 1.6x the CPU; kept 320.
* Full gradient constraint every step: +0-2 dB in the first second, 2x the CPU; dropped for the
  round-robin constraint.
* Without the delay prior on the proportionate weights: the first updates spread over all partitions
  and their noise decayed slowly (the weights keep them small); the prior gave +3-6 dB at 1-2 s.
* Band-mean regularisation `breg`: 0 (pure per-bin NLMS): 17 dB at 2 s on 120 ms / 20 dB; 0.1: 21 dB;
  0.5 and more: slower again. Smoothing the normalisation power over steps, or a per-bin noise-floor
  regulariser: +0-2 dB, not kept. mu 0.8: 0.5 slower, 1.2-1.5 noisier.
* Valin (2007) learning rate from a residual-echo leak estimate (first version): the leak regression
  underestimated the residual by ~10 dB and adaptation stalled at 10-13 dB.
* WebRTC AEC3 (livekit rtc.AudioProcessingModule): ERLE 54-63 dB within 0.5 s, but its suppressor
  moved the caller's level by -2.1 dB with SDR ~ -2 dB even with no echo, 7-13 ms CPU per call-second.
* No residual-echo suppressor: it would cut caller speech in double talk, which the model needs.

This version (benchmarks/aec.py): pure echoes 24-32 dB after 5 s, 20 dB reached after 2-3.5 s, 25 dB
after 3-6 s; rooms 0.2 s 25-26 dB, 0.6 s only 15-17 dB (the diffuse tail learns slowly); -50 dBFS
noise 10-20 dB; double talk: caller level +0.01 dB, SDR 32 dB; a 100 -> 250 ms jump: found again
after 0.5 s, 20 dB ~3 s after it; clean call untouched (bit for bit until an echo is found); CPU
~2.8-3.2 ms per call-second (2 steps of ~120 us per 80 ms block: numpy call overhead dominates).
Open: 25 dB within 2 s, the 0.6 s rooms, noise, and the 1 ms CPU target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from bridge.aec_delay import BulkDelay

__all__ = ["AecStats", "EchoCanceller"]

_F32 = npt.NDArray[np.float32]
_C64 = npt.NDArray[np.complex64]
_ACTIVE_DBFS = -50.0  # a reference block quieter than this is "nothing played"


@dataclass(frozen=True, slots=True)
class AecStats:
    """What the canceller saw so far (its own estimates, not a truth)."""

    blocks: int
    single_talk_blocks: int  # reference active, output mostly residual echo
    double_talk_blocks: int  # reference active, output well above the echo estimate (caller talking)
    erle_db: float | None  # mic / output energy over single-talk blocks since the last path change
    converged: bool  # erle_db >= 10 dB over the last 1 s of single talk
    copies: int  # background -> foreground updates
    delay_ms: float | None = None  # echo lag found in the reference (lead included); None: none found


class EchoCanceller:
    """Streaming echo canceller: `process(mic, ref)` once per block, in order.

    `mic`: the caller's inbound block (int16 units, int16 or float); `ref`: what the phone played,
    `lead_ms` ahead of the mic block (zeros where nothing played). Returns float32, same length.
    `delay_hint_ms`: the echo delay the playout clock expects (without the lead), used until the
    canceller's own estimate exists; optional.
    """

    def __init__(
        self,
        rate: int = 8000,
        block: int = 640,
        *,
        partition: int = 320,
        taps_ms: float = 560.0,
        lead_ms: float = 40.0,
        tail_ms: float = 240.0,
        pre_ms: float = 8.0,
        mu: float = 0.8,
        breg: float = 0.1,
        decay: float = 0.4,
        rho: float = 0.05,
        delay_hint_ms: float | None = None,
    ) -> None:
        if block % partition:
            raise ValueError(f"block {block} must be a multiple of the partition {partition}")
        self.rate, self.block, self.m = rate, block, partition
        m = partition
        self.lead = round(lead_ms * rate / 1000)
        self.pre = round(pre_ms * rate / 1000)
        self.ps = -(-(self.lead + round(taps_ms * rate / 1000)) // m)  # partitions searched for the lag
        self.n = -(-(round(tail_ms * rate / 1000) + self.pre + m) // m)  # partitions adapted
        self.k = m + 1
        self.mu, self.breg, self.decay, self.rho = mu, breg, decay, rho
        self.hint = None if delay_hint_ms is None else self.lead + round(delay_hint_ms * rate / 1000)
        self._delta = float(2 * m * (32768.0 * 1e-3) ** 2)  # FFT power of white noise at -60 dBFS
        self._active = float(2 * m * (32768.0 * 10 ** (_ACTIVE_DBFS / 20)) ** 2)
        self._delay = BulkDelay(m, self.ps, every=max(1, block // m))
        self.reset()

    def reset(self) -> None:
        """Forget the echo path and the statistics (a new stream)."""
        m, n, k = self.m, self.n, self.k
        self._x = np.zeros(2 * m, np.float32)
        self._pad = np.zeros(2 * m, np.float32)
        self._X: _C64 = np.zeros((self.ps + n, k), np.complex64)  # reference spectra, newest first
        self._PX: _F32 = np.zeros((self.ps + n, k), np.float32)
        self._WF: _C64 = np.zeros((2, n, k), np.complex64)  # [0]: background (adapting), [1]: foreground
        self._prior: _F32 = np.ones(n, np.float32)
        self._delay.reset()
        self._p0: int | None = None
        self._sb = self._sf = self._sd = 0.0
        self._floor = 1e30
        self._copied = False
        self._blocks = self._st = self._dt = self._copies = self._steps = 0
        self._st_d = self._st_e = 0.0
        self._recent: list[float] = []
        if self.hint is not None:
            self._place(self.hint)

    @property
    def stats(self) -> AecStats:
        erle = 10 * np.log10(self._st_d / self._st_e) if self._st_e > 0 and self._st_d > 0 else None
        recent = sum(self._recent[-13:]) / len(self._recent[-13:]) if len(self._recent) >= 13 else 0.0
        lag = self._delay.lag if self._delay.lag is not None else self.hint
        return AecStats(
            self._blocks,
            self._st,
            self._dt,
            None if erle is None else float(erle),
            recent >= 10.0,
            self._copies,
            None if lag is None else 1000.0 * lag / self.rate,
        )

    def process(self, mic: npt.NDArray[np.generic], ref: npt.NDArray[np.generic]) -> _F32:
        d = np.asarray(mic, np.float32)
        x = np.asarray(ref, np.float32)
        if d.shape != (self.block,) or x.shape != (self.block,):
            raise ValueError(f"mic and ref must be {self.block} samples, got {d.shape} and {x.shape}")
        m = self.m
        out = np.empty(self.block, np.float32)
        for j in range(0, self.block, m):
            out[j : j + m] = self._step(d[j : j + m], x[j : j + m])
        self._account(d, x, out)
        return out

    def _place(self, lag: int) -> None:
        """Put the adapted window around `lag`; keep the taps when it only slid by a partition."""
        m, n = self.m, self.n
        p0 = max(0, min((lag - self.pre) // m, self.ps - 1))
        i = np.arange(n) - (lag // m - p0)
        self._prior = np.where(i < 0, self.rho, np.maximum(self.decay ** np.maximum(i, 0), self.rho)).astype(
            np.float32
        )
        old, self._p0 = self._p0, p0
        if old is None or old == p0:
            return
        wf, s = self._WF, p0 - old
        if abs(s) > 1:  # the path moved: what was learnt belongs to the old one
            wf[:] = 0
            self._sf = self._sb = self._sd
        elif s > 0:
            wf[:, :-1] = wf[:, 1:].copy()
            wf[:, -1] = 0
        else:
            wf[:, 1:] = wf[:, :-1].copy()
            wf[:, 0] = 0

    def _account(self, d: _F32, x: _F32, out: _F32) -> None:
        self._blocks += 1
        if self._p0 is None or float(x @ x) < self._active * self.block / (2 * self.m):
            return
        ed, eo = float(d @ d), float(out @ out)
        # double talk: the output carries much more than the background's own residual would
        if self._recent and eo > 4.0 * max(self._sb * self.block / self.m, 1e-3) and eo > 0.3 * ed:
            self._dt += 1
            return
        self._st += 1
        self._st_d += ed
        self._st_e += eo + 1e-3
        self._recent.append(10 * float(np.log10((ed + 1e-3) / (eo + 1e-3))))
        del self._recent[:-13]

    def _step(self, d: _F32, x: _F32) -> _F32:
        m = self.m
        xb, pad, X, PX = self._x, self._pad, self._X, self._PX
        xb[:m] = xb[m:]
        xb[m:] = x
        X[1:] = X[:-1]
        PX[1:] = PX[:-1]
        X[0] = sfft.rfft(xb, workers=1)
        PX[0] = X[0].real ** 2 + X[0].imag ** 2
        active = float(PX[0].sum()) > self._active * (m + 1)
        pad[m:] = d
        if self._delay.update(X, sfft.rfft(pad, workers=1), PX[0], active) and self._delay.lag is not None:
            self._place(self._delay.lag)
        self._steps += 1
        if self._p0 is None:
            return d
        n, p0, WF = self.n, self._p0, self._WF
        Xw, PXw = X[p0 : p0 + n], PX[p0 : p0 + n]
        y = sfft.irfft((WF * Xw).sum(axis=1), axis=1, workers=1)[:, m:]
        e, ef = d - y[0], d - y[1]
        W = WF[0]
        if active:
            pad[m:] = e
            E = sfft.rfft(pad, workers=1)
            wa = np.sqrt((W.real**2 + W.imag**2).sum(axis=1))
            gam = np.maximum(wa, self._prior * (float(wa.max()) + 1e-6))
            gam /= gam.sum()
            pw = gam @ PXw
            g = E * (self.mu / (pw + (self._delta + self.breg * float(pw.mean())))).astype(np.float32)
            W += np.conj(Xw) * g * gam[:, None]
            j = self._steps % n  # gradient constraint, one partition per step in turn
            w = sfft.irfft(W[j], workers=1)
            w[m:] = 0
            W[j] = sfft.rfft(w, workers=1)
        self._copy_rule(d, e, ef)
        res: _F32 = e if self._copied else ef
        return res

    def _copy_rule(self, d: _F32, e: _F32, ef: _F32) -> None:
        a, WF = 0.5, self._WF
        eb2, ef2 = float(e @ e), float(ef @ ef)
        self._sb += a * (eb2 - self._sb)
        self._sf += a * (ef2 - self._sf)
        self._sd += a * (float(d @ d) - self._sd)
        self._floor = min(self._floor * 1.05, ef2 + 1e-3)  # the error's floor: line noise, μ-law
        nf = min(self._floor, self._sb, self._sf)
        self._copied = self._sb - nf < 0.7 * (self._sf - nf) and self._sb < self._sd
        if self._copied:
            WF[1] = WF[0]
            self._sf = self._sb
            self._copies += 1
        elif self._sf > 1.5 * self._sd:  # the output is louder than the input: drop the foreground
            WF[1] = 0
            self._sf = self._sd
        elif self._sb > 8.0 * self._sf and self._sf < self._sd:
            WF[0] = WF[1]  # the background was thrown off (double talk): restart it from the output's
            self._sb = self._sf
