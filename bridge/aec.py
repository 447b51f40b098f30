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
  call is untouched. With a lag held it is fed every other step, every 4th while the foreground
  cancels 10 dB or more (every 8th once the lag has held 5 s), and not at all while it cancels 25 dB
  (settled: the lag is right). A move of the path shows in the error first and restores the faster
  rate.
* When the lag is found (or moves), a least-squares fit of 32 taps around it from the last second of
  reference and microphone (bridge/aec_fit.py) starts both filters: a pure echo is cancelled at once.
* Then a short partitioned-block frequency-domain adaptive filter (bridge/aec_mdf.py; MDF,
  overlap-save, FFT 2 x `partition`) over a window of the reference spectra, from `pre_ms` before the estimated lag to at
  least `tail_ms` after it: 5 partitions of 80 ms instead of the 14 a blind 540 ms filter needs, so it
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
* One filter while settled (the output 25 dB under the microphone and the background no worse than
  the foreground): the background alone adapts and gives the output, half the filter products. Each
  step first checks its output against the single-talk level (the foreground's ERLE over recent
  single-talk steps): an output 6 dB or more above it (the caller, a bad update, a path change) is
  replaced by that of the state kept before the last update, and the two filters are back; so the
  caller's first word never reaches the output through an update. With one filter the gradient
  constraint runs every 4th step, and 30 dB under the echo the filter adapts every other step.
* Double talk gate: an output 15 dB or more above the single-talk level is the caller; its block is
  not reused (data reuse on the caller only disturbs the background) and does not teach the level.

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

* Previous version (8 x 320 partitions, two steps per block, no fit): pure 24-32 dB after 5 s, 20 dB
  after 2-3.5 s, 25 dB after 3-6 s; rooms 0.2 s 25-26, 0.6 s 15-17; noise 10-20; jump ~3 s; 2.9-4.2 ms
  CPU per call-second.
* Least-squares start (bridge/aec_fit.py, 32 taps around the lag over the last 1 s, one solve when the
  lag is found or moves): pure echoes 25 dB from the first 0.5-1.5 s window (was 3-6 s), the jump
  1.5 s (was ~3 s). 160 taps: rooms no better (21 vs 23.5 on 0.2 s / 200 ms), noise cells worse, 3x
  the CPU; kept 32. Accepting a fit only when it explains half the microphone left rooms and noise at
  zero; accepted when it explains 10 %; at the first lag a fit explaining less vetoes the lag (a clean
  call's spurious peak at 640-sample partitions, which otherwise started the filter).
* Variable step (mu x max(mu_min, 1 - sqrt(noise / error))) and data reuse while the error is above
  1 % of the microphone: -50 dBFS noise 300/20 10 -> 14 dB; mu_min 0.02 no different from 0.05.
* One 640-sample partition step per block (5 partitions): with the fit, as good as 2 x 320 on pure
  echoes and double talk, CPU about the same in this run (numpy call overhead; ~7-8 us per FFT call).
* Bug found on the way: choosing the output after the copy rule had restarted the background made one
  block of double talk the diverged background's error (SDR 2-8 dB); the output is chosen from the
  state the errors were computed with.

* CPU (same algorithm, same figures to 0.1 dB; numpy call overhead, ~1 us per call on this host,
  dominated): FFTs through scipy's pocketfft binding (bridge/aec_fft.py; the public wrappers cost
  ~3.5 us of Python per call), the reference, microphone and deferred gradient-constraint FFTs in one
  batched call, reference spectra in a ring (one row written per step), preallocated buffers with
  `out=`, partition sums as one BLAS product, the least-squares normal equations from correlations
  instead of the data matrix (2x faster), histories that do not move every block: 0.55x the CPU
  in alternating runs on this shared host (2.4-3.5 -> 1.4-1.9 ms per call-second). Still over the
  1 ms goal: ~4.5 FFTs of 1280 points (~4 us each here) and ~50 numpy calls per block remain.

* Previous version's figures (benchmarks/aec.py): pure echoes 23-36 dB after 5 s, 25 dB within
  0.5-2 s for losses <= 20 dB; rooms 0.2 s 23.5-26 dB, 0.6 s 17.6-18.9 dB; double talk SDR 36.5-37
  dB; the jump 1.5 s; median CPU 1.80 ms per call-second (quiet box).

* CPU, second pass (valgrind instruction counts of `process` on one call, deterministic, beside
  wall-clock runs alternating with the previous version; FFTs were ~30 % of the instructions, numpy
  call overhead most of the rest):
  - no delay watch while settled: -5-10 % on pure echoes, figures identical. Watching every 8th or
    16th step instead made the jump 0.5 s slower (the hysteresis' phase); not at all does not.
  - one filter while settled (above): 85 -> 60 M instructions on 20 ms / 6 dB, figures equal or
    better (+0.1-1.8 dB: the output follows the adapting filter without the copy rule's lag). First
    try copied the one filter into the foreground when leaving it: the caller's first block had
    already been learnt (120 ms / 20 dB double talk fell to 0 dB); the kept pre-update state fixed
    it. Checking every block split and rejoined on quiet blocks (near-zero microphone): an output
    under -50 dBFS no longer counts.
  - double-talk gate on the data reuse: reuse in double talk 87 -> 15 blocks, figures identical
    (a 6 dB gate cost the 0.6 s room 0.4 dB; 15 dB nothing). The previous session's gate (no reuse
    once single talk averaged 10 dB) cost the rooms up to 1 dB.
  - constraint every 4th step with one filter: figures within 0.9 dB (30 dB losses), every 2nd step
    with two filters too cost the 0.6 s rooms 0.8 dB: dropped.
  - adapting every other step: with two filters from 25 dB, -1.2 dB and t25 3 s on 120 ms / 20 dB,
    dropped; with one filter from 30 dB (kept), figures within 0.5 dB, 60 -> 44 M instructions.
  - `x.dot(x)` for energies (4x cheaper than `x @ x` here), |X|^2 by abs and square, sums by a dot,
    proportionate weights kept between constraint steps with one filter, the first lag's fit solved
    once (it was solved for the check and again for the placement).
  - one filter from 20 dB instead of 25: the 0.2 s rooms +1 dB and 10 % cheaper, the rest equal;
    not kept for want of a rig check (one filter is less guarded than two).
  - the delay watch every 8th step once the lag has held 5 s (cancelling 10-25 dB: rooms, noise).
  Altogether, instructions of `process` against the previous version: pure 20 ms / 6 dB 0.52x,
  120 ms / 20 dB 0.64x, 400 ms / 30 dB 0.70x, the jump 0.54x, double talk 0.67x, -50 dBFS noise
  0.91x, the 0.6 s room 0.93x. The benchmark's median cell sits where the cheap (one filter) half of
  the cells meets the dear half (rooms, noise, double talk, 30 dB losses), so the median moved less.
* The stats' double-talk split (`double_talk_blocks`, `erle_db`) compared the output with the
  background's error, which carries the caller too: in double talk nothing was counted as double
  talk and `erle_db` read 0.7 dB on a 33 dB call. It uses the single-talk level now (29.4 dB there).
* Rooms, tried and not kept: mu 1.0 or breg 0.03: +0.5-1 dB at 5 s; 2 or 3 reuse passes: +0.5 dB,
  saturating (it is the same data again); a larger prior spread (decay 0.7, rho 0.2-0.3): worse.
  A least-squares oracle (3200 taps from the window, Toeplitz normal equations on all data before
  each window, evaluated on the next 0.5 s): 0.6 s / 60 ms reaches 12-17 dB at 2-3.5 s and 26-29 dB
  from 4 s; 0.2 s rooms 19-25 dB at 2-3 s. So 20 dB within 2 s in a 0.6 s room is beyond what this
  call's first 2 s of speech determine, for any filter over this window; 25+ dB from ~4 s is there,
  NLMS gets 18-20. Closing that needs a decorrelating update: a per-bin 5 x 5 solve (RLS/Newton over
  the partitions) costs ~700 us per step in numpy, the one-off Toeplitz solve 38 ms (a 38 ms stall
  on the inbound path); neither fits the CPU goal.

This version (benchmarks/aec.py --repeat 3, three runs alternating with the previous version on a
loaded 2-core host): every quality figure within 0.1 dB of the previous version's or better except
400 ms / 30 dB (26.9 -> 26.1 dB, t25 3.5 -> 2.5 s); 120 ms / 20 dB 29.1 -> 30.9 dB; double talk
caller +0.01 dB, SDR 36.5-37.3 dB; the jump 1.5 s; clean call untouched. Median CPU per call-second
1.33-2.13 ms against 2.89-3.22 ms for the previous version in the same runs (0.71x in a same-process
alternation; ~1.3 ms expected on the quiet box that gave 1.80). Open: 1 ms CPU, the 0.6 s rooms
(20 dB), noise, room + double talk + noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bridge.aec_delay import BulkDelay
from bridge.aec_fft import rfft
from bridge.aec_fit import History, fit_taps
from bridge.aec_mdf import TwoPathFilter

__all__ = ["AecStats", "EchoCanceller"]

_F32 = npt.NDArray[np.float32]
_C64 = npt.NDArray[np.complex64]
_ACTIVE_DBFS = -50.0  # a reference block quieter than this is "nothing played"
_ULAW_SNR = 10 ** (-3.6)  # μ-law's quantisation noise, ~36 dB under the signal: no filter gets below it
_SETTLED = 10 ** (-2.5)  # the output 25 dB under the microphone: the lag is right, one filter will do
_DT_DB = 15.0  # the output this far above the foreground's single-talk residual: the caller talks
_SPLIT_DB = 6.0  # one filter: a rise of this much gives the output to its kept state, two filters again
_ONE_CONSTRAIN = 4  # one filter: the gradient constraint every 4th step (its updates are small)
_ONE_SPARSE_DB = 30.0  # one filter this far under the echo: it adapts every other step


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
    idle_blocks: int = 0  # steps with nothing played in the whole adapted window: no arithmetic done
    one_filter_blocks: int = 0  # steps whose output came from the one adapting filter (settled)


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
        partition: int = 640,
        taps_ms: float = 560.0,
        lead_ms: float = 40.0,
        tail_ms: float = 240.0,
        pre_ms: float = 8.0,
        mu: float = 0.8,
        breg: float = 0.1,
        decay: float = 0.4,
        rho: float = 0.05,
        delay_hint_ms: float | None = None,
        mu_min: float = 0.05,
        fit_ms: float = 4.0,
        fit_s: float = 1.0,
        reuse: bool = True,
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
        self.mu, self.breg, self.decay, self.rho, self.mu_min = mu, breg, decay, rho, mu_min
        self.reuse = reuse
        self.hint = None if delay_hint_ms is None else self.lead + round(delay_hint_ms * rate / 1000)
        self._fit_taps = max(1, round(fit_ms * rate / 1000))
        self._held = round(5.0 * rate / m)  # steps in 5 s: a lag held that long is watched less
        self._fit_n = round(fit_s * rate)
        self._delta = float(2 * m * (32768.0 * 1e-3) ** 2)  # FFT power of white noise at -60 dBFS
        self._active = float(2 * m * (32768.0 * 10 ** (_ACTIVE_DBFS / 20)) ** 2)
        self._quiet = self._active / 2  # a partition of samples at that level (time-domain energy)
        steps = 320 / m  # the estimator's smoothing and patience were tuned per 40 ms step
        self._delay = BulkDelay(
            m,
            self.ps,
            every=max(1, round(2 * steps)),
            smooth=min(0.5, 0.12 / steps),
            min_active=max(2, round(6 * steps)),
        )
        self.reset()

    def reset(self) -> None:
        """Forget the echo path and the statistics (a new stream)."""
        m, n, k = self.m, self.n, self.k
        r = self.ps + n
        # reference spectra, newest first from row _h of a buffer 4x the rows kept: a step writes one
        # row (instead of moving them all); the newest r - 1 are moved back up every 3r steps
        self._Xr: _C64 = np.zeros((4 * r, k), np.complex64)
        self._PXr: _F32 = np.zeros((4 * r, k), np.float32)
        self._h = 3 * r
        self._fin: _F32 = np.zeros((3, 2 * m), np.float32)  # the step's FFT inputs: ref, mic, constraint
        f = self._fin
        self._rows = {(True, True): f, (True, False): f[:2], (False, True): f[::2], (False, False): f[:1]}
        self._onek: _F32 = np.ones(k, np.float32)
        self._mdf = TwoPathFilter(m, n, mu=self.mu, mu_min=self.mu_min, breg=self.breg, delta=self._delta)
        self._hx = History(self._fit_n + self.ps * m + self._fit_taps + m)
        self._hd = History(self._fit_n)
        self._delay.reset()
        self._p0: int | None = None
        self._placed = 0  # the step the window was last placed
        self._solved: tuple[tuple[int, int, int], tuple[npt.NDArray[np.float64], float]] | None = None
        self._lag: int | None = None
        self._sb = self._sf = self._sd = 0.0
        self._floor = 1e30
        self._copied = False
        self._blocks = self._st = self._dt = self._copies = self._steps = 0
        self._st_d = self._st_e = 0.0
        self._d2 = self._eo = self._ef2 = self._x2 = 0.0
        self._recent: list[float] = []
        self._st_db = 0.0  # the foreground's ERLE over recent single-talk steps (the double-talk gate's)
        # nothing played: a silent block after a silent one has a zero spectrum (no FFT), and once the
        # whole adapted window is zeros the output is the input with no filter arithmetic at all
        self._silent, self._silent_rows, self._idle = False, 0, 0
        self._one = 0
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
            self._idle,
            self._one,
        )

    def process(self, mic: npt.NDArray[np.generic], ref: npt.NDArray[np.generic]) -> _F32:
        mic, ref = np.asarray(mic), np.asarray(ref)
        if mic.shape != (self.block,) or ref.shape != (self.block,):
            raise ValueError(f"mic and ref must be {self.block} samples, got {mic.shape} and {ref.shape}")
        m = self.m
        x = self._hx.push(ref)  # float32 views of the histories' newest block, valid until the next push
        d = self._hd.push(mic)
        if self.block == m:
            out = self._step(d, x)
        else:
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
        prior = np.where(i < 0, self.rho, np.maximum(self.decay ** np.maximum(i, 0), self.rho))
        self._mdf.prior = prior.astype(np.float32).tolist()
        old, self._p0 = self._p0, p0
        self._placed = self._steps
        if old is None or abs(p0 - old) > 1:  # new or moved path: what was learnt belongs to the old one
            self._mdf.clear()
            self._sf = self._sb = self._sd
            self._fit(lag)
            return
        self._mdf.slide(p0 - old)

    def _fit_share(self, lag: int) -> float:
        return self._solve(lag, min(self._fit_taps // 4, lag))[1]

    def _solve(self, lag: int, before: int) -> tuple[npt.NDArray[np.float64], float]:
        """`fit_taps` on the histories, kept for the step (the first lag is checked, then placed)."""
        key = (self._steps, lag, before)
        if self._solved is None or self._solved[0] != key:
            self._solved = key, fit_taps(self._hx.buf, self._hd.buf, lag, before, self._fit_taps, self._fit_n)
        return self._solved[1]

    def _fit(self, lag: int) -> None:
        """Least-squares taps around the lag from the time-domain history, into both filters."""
        assert self._p0 is not None
        m, n, t = self.m, self.n, self._fit_taps
        before = min(t // 4, lag - self._p0 * m)
        h, share = self._solve(lag, before)
        if share > 0.9:  # it explains (almost) nothing: leave it to the adaptive filter
            return
        full = np.zeros(n * m, np.float32)
        at = lag - before - self._p0 * m
        full[at : at + t] = h[: n * m - at]
        pad = np.zeros((n, 2 * m), np.float32)
        pad[:, :m] = full.reshape(n, m)
        self._mdf.load(rfft(pad))

    def _account(self, d: _F32, x: _F32, out: _F32) -> None:
        self._blocks += 1
        x2 = self._x2 if self.block == self.m else float(x.dot(x))
        if self._p0 is None or x2 < self._active * self.block / (2 * self.m):
            return
        ed, eo = (self._d2, self._eo) if self.block == self.m else (float(d.dot(d)), float(out.dot(out)))
        # double talk: the output well above what the foreground leaves in single talk
        if eo > self._quiet * self.block / self.m and self._below(eo, ed) > _SPLIT_DB:
            self._dt += 1
            return
        self._st += 1
        self._st_d += ed
        self._st_e += eo + 1e-3
        self._recent.append(10 * math.log10((ed + 1e-3) / (eo + 1e-3)))
        del self._recent[:-13]

    def _step(self, d: _F32, x: _F32) -> _F32:
        m, r, fin, mdf = self.m, self.ps + self.n, self._fin, self._mdf
        self._steps += 1
        self._d2 = float(d.dot(d))
        # with a lag held, the estimator only watches for a move: every other step is enough, every
        # 4th while the output confirms the lag (the foreground 10 dB under the microphone)
        every = self._watch_every()
        watch = self._lag is None or (every > 0 and self._steps % every == 0)
        self._x2 = float(x.dot(x))
        silent = self._x2 == 0.0
        if silent and self._silent:  # [previous, this] block all zeros: its spectrum is zeros, no FFT
            self._silent_rows += 1
            h = self._push_row()
            self._Xr[h] = 0
            self._PXr[h] = 0
            if watch:
                self._delay.update(self._Xr[h : h + r], self._Xr[h], self._PXr[h], False)
            if self._p0 is None:
                return d.copy()
            mdf.flush()  # the constraint this step's batched FFT would have applied
            if self._silent_rows >= self._p0 + self.n:  # the whole window is zeros: no echo to remove
                self._copy_rule(self._d2, self._d2)  # what the filters would compute: both errors are d
                self._eo = self._d2
                self._idle += 1
                return d.copy()
            return self._filter(d, False)
        self._silent, self._silent_rows = silent, 0
        # one batched FFT: the reference window, the mic (for the estimator), and the last step's
        # gradient constraint (deferred to here: nothing reads that partition in between)
        fin[0, :m] = fin[0, m:]
        fin[0, m:] = x
        if watch:
            fin[1, m:] = d  # row 1 is [zeros, mic], row 2 [taps, zeros]: only these halves change
        taps = mdf.constraint_taps()
        if taps is not None:
            fin[2, :m] = taps
        S = rfft(self._rows[watch, taps is not None])
        if taps is not None:
            mdf.constrain(S[-1])
        Xr, PXr = self._Xr, self._PXr
        h = self._push_row()
        x0 = S[0]
        Xr[h] = x0
        p0 = PXr[h]
        np.abs(x0, out=p0)
        np.square(p0, out=p0)
        active = float(p0.dot(self._onek)) > self._active * (m + 1)
        if watch:
            if self._delay.update(Xr[h : h + r], S[1], p0, active) and self._delay.lag is not None:
                if self._p0 is None and self._fit_share(self._delay.lag) > 0.9:
                    self._delay.reset()  # a correlation peak the signals do not bear out: no echo yet
                else:
                    self._lag = self._delay.lag
                    self._place(self._lag)
        if self._p0 is None:
            return d.copy()
        return self._filter(d, active)

    def _watch_every(self) -> int:
        if self._sf < _SETTLED * self._sd:
            return 0
        if self._sf < 0.1 * self._sd:  # cancelling: every 4th step, every 8th once the lag held 5 s
            return 8 if self._steps - self._placed > self._held else 4
        return 2

    def _push_row(self) -> int:
        """Make room for the newest reference spectrum; its row index."""
        r, Xr, PXr = self.ps + self.n, self._Xr, self._PXr
        if self._h == 0:
            Xr[-r + 1 :] = Xr[: r - 1]
            PXr[-r + 1 :] = PXr[: r - 1]
            self._h = len(Xr) - r + 1
        self._h -= 1
        return self._h

    def _filter(self, d: _F32, active: bool) -> _F32:
        n, mdf = self.n, self._mdf
        assert self._p0 is not None
        lo = self._h + self._p0
        Xw, PXw = self._Xr[lo : lo + n], self._PXr[lo : lo + n]
        e, ef = mdf.errors(d, Xw)
        eb2 = float(e.dot(e))
        if mdf.single:
            # the one filter's output is off (its last update, the caller, a path change): the state
            # kept before that update gives the output, and two filters again
            if eb2 > self._quiet and self._below(eb2) > _SPLIT_DB:
                ef = mdf.foreground_error(d, Xw)
                mdf.split()
            else:
                mdf.keep()
                self._one += 1
        ef2 = eb2 if ef is e else float(ef.dot(ef))
        if active and not (mdf.single and self._st_db >= _ONE_SPARSE_DB and self._steps % 2):
            d2 = self._d2
            nv = min(self._floor, self._sf) + _ULAW_SNR * d2  # what no filter can remove
            j = self._constrained()
            deficit = self._deficit(ef2)
            mdf.adapt(e, eb2, nv, PXw, Xw, j, not mdf.single or j is not None)
            if self.reuse and eb2 > 0.01 * d2 and eb2 > 10 * nv and deficit <= _DT_DB:
                e2 = mdf.background_error(d, Xw)  # far from converged: use the block again
                mdf.adapt(e2, float(e2.dot(e2)), nv, PXw, Xw, j)
        self._copy_rule(ef2, eb2)
        res: _F32 = e if self._copied else ef
        self._eo = eb2 if self._copied else self._ef2
        return res

    def _constrained(self) -> int | None:
        """The partition whose gradient constraint this step's update leaves pending, one per step in
        turn (every `_ONE_CONSTRAIN`th step with one filter); None: none."""
        every = _ONE_CONSTRAIN if self._mdf.single else 1
        return None if self._steps % every else (self._steps // every) % self.n

    def _below(self, ef2: float, d2: float | None = None) -> float:
        """How many dB an output of energy `ef2` (microphone `d2`, default this step's) is above what
        the foreground leaves in single talk (0 until that is 10 dB)."""
        if self._st_db < 10.0:
            return 0.0
        return self._st_db - 10 * math.log10(((self._d2 if d2 is None else d2) + 1e-3) / (ef2 + 1e-3))

    def _deficit(self, ef2: float) -> float:
        """`_below` for the output, learning the single-talk level from the other steps: well above it,
        the caller talks, and the block says more about the caller than about the echo path."""
        deficit = self._below(ef2)
        if deficit <= _DT_DB:
            db = 10 * math.log10((self._d2 + 1e-3) / (ef2 + 1e-3))
            self._st_db += 0.25 * (db - self._st_db)
        return deficit

    def _copy_rule(self, ef2: float, eb2: float) -> None:
        a = 0.5
        self._ef2 = ef2
        self._sb += a * (eb2 - self._sb)
        self._sf += a * (ef2 - self._sf)
        self._sd += a * (self._d2 - self._sd)
        self._floor = min(self._floor * 1.05, ef2 + 1e-3)  # the error's floor: line noise, μ-law
        settled = self._sf < _SETTLED * self._sd
        if self._mdf.single:
            self._copied = False
            if not settled:
                self._mdf.split()  # a path change, or the caller: two filters again
            return
        nf = min(self._floor, self._sb, self._sf)
        self._copied = self._sb - nf < 0.7 * (self._sf - nf) and self._sb < self._sd
        if self._copied:
            self._mdf.copy()
            self._sf = self._sb
            self._copies += 1
        elif self._sf > 1.5 * self._sd:  # the output is louder than the input: drop the foreground
            self._mdf.drop()
            self._sf = self._sd
        elif self._sb > 8.0 * self._sf and self._sf < self._sd:
            self._mdf.restart()  # the background was thrown off (double talk): restart it from the output's
            self._sb = self._sf
            return
        if settled and self._sb <= self._sf:
            self._mdf.join()  # settled, and the background no worse: one filter until something changes
            self._sf = self._sb
