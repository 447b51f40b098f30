"""The played track: where each chunk we sent played on the phone, on the local clock.

The playout clock (bridge/playout.py) places every chunk while the call runs; once it has ended the
whole call's evidence can place them better, which the echo meter needs (its reference must be what the
phone played, to the sample) and which the played track, first audio heard and the turns read.

Runs placed by their own echoes. The playout clock places each run of contiguous audio by the least
late of its mark echoes, capped at one packet past the call's best (bridge/playout.py). Under load
that is wrong per run in two ways, each of which smeared one whole-call path (a room at 15 dB read
17.7 dB; its delay read 50 ms high once): a run placed *early* (the cap overrode its own late
echoes), and a *slip* inside a run (the phone ran dry, played the rest of the run later, and the run's
first echoes hid it). So, first, `latest_starts` bounds every chunk by physics alone: a mark is echoed
only after the audio before it played, and within a run the phone can only fall behind, so chunk k
started no later than any later mark's echo in its run less the audio between; the least such bound,
taken in steps of >= 10 ms (smaller ones are the echoes' jitter), splits a run at a slip. The echo's
reference starts from the earlier of that bound and the clock's placement (never later than the
audio could have played). Then, when the whole call's path stands out (z >= 6), `align_runs` finds
each run (pieces split at slips included, >= 0.3 s) in the inbound audio: its prediction through that
path is matched against the inbound by GCC-PHAT (sub-sample, z >= 6) over lags from 25 ms past the
bound back to 25 ms before the clock's placement. Measured against the bound, every run can only be
late, so the run whose echo comes latest anchors the others, each moved by its difference; runs too
short or too unclear keep the reference's placement, and the path is fitted again. The delay then
reads early by the anchor's own return delay (the least lateness of its echoes, ~1 ms here). Only
the echo's reference, its cancellation and the played track use this; first audio keeps the marks'.

Pure: numpy and scipy only, no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy.signal import oaconvolve

from bridge.meters.echo import EchoEstimate

__all__ = ["CHUNK", "align_runs", "latest_starts", "played_track", "playout_runs", "was_echoed"]

CHUNK = 160  # samples per outbound chunk (20 ms at 8 kHz)


def was_echoed(t: float | None) -> bool:
    """A mark echo time that says the audio before it played (NaN / None: never echoed)."""
    return t is not None and bool(np.isfinite(t))


def played_track(
    sent_pcm: npt.NDArray[np.int16], sends: npt.NDArray[np.float64], rate: int = 8000
) -> npt.NDArray[np.int16]:
    """What the phone heard on the local clock (sample 0 = origin): each non-flushed chunk at its playout."""
    sends = np.asarray(sends, dtype=np.float64).reshape(-1, 3)
    m = min(len(sends), -(-len(sent_pcm) // CHUNK))
    pcm = np.zeros(m * CHUNK, dtype=np.int16)
    pcm[: min(len(sent_pcm), m * CHUNK)] = sent_pcm[: m * CHUNK]
    keep = (sends[:m, 2] == 0) & np.isfinite(sends[:m, 1])
    starts = np.rint(sends[:m, 1][keep] * rate).astype(np.int64)
    chunks = pcm.reshape(m, CHUNK)[keep]
    if starts.size == 0:
        return np.zeros(0, dtype=np.int16)
    valid = starts >= 0
    starts, chunks = starts[valid], chunks[valid]
    out = np.zeros(int(starts.max(initial=0)) + CHUNK, dtype=np.int16)
    # Chunks are written in send order, so if two rounded playout starts overlap by a sample the later wins.
    out[starts[:, None] + np.arange(CHUNK)] = chunks
    return out


def playout_runs(sends: npt.NDArray[np.float64], rate: int = 8000) -> list[npt.NDArray[np.int64]]:
    """Chunk indices of each run: placed chunks (finite playout, not flushed) that play back to back."""
    sends = np.asarray(sends, dtype=np.float64).reshape(-1, 3)
    placed = np.flatnonzero(np.isfinite(sends[:, 1]) & (sends[:, 2] == 0))
    if placed.size == 0:
        return []
    starts = sends[placed, 1]
    contiguous = (np.diff(placed) == 1) & (np.abs(np.diff(starts) - CHUNK / rate) < 1e-6)
    return np.split(placed, np.flatnonzero(~contiguous) + 1)


_ALIGN_Z = 6.0  # a path (and each run's own view of it) that stands this far out of its noise
_ALIGN_NEAR_MS = 20.0  # a run's own path further than a packet from the whole call's is another likeness
_SLIP_S = 0.01  # the phone fell behind by at least half a packet: smaller steps are the echoes' jitter
_ALIGN_MIN_S = 0.3  # a run this short is left as placed
_ALIGN_MAX_RUNS = 64  # at most this many runs (the longest) are fitted alone: bounded work per call
_LATE_MAX_S = 0.025  # a run's echo is looked for this far either side of where the marks put it
_UPSAMPLE = 8  # the lateness is read to 1/8 of a sample


def latest_starts(
    sends: npt.NDArray[np.float64],
    marks: list[tuple[str, float, float, bool]],
    mark_chunks: list[int] | None = None,
    rate: int = 8000,
) -> npt.NDArray[np.float64]:
    """Per chunk, the latest playout start its run's later mark echoes allow (s); see the module docstring.

    Within a run the phone can only fall behind, never catch up: audio that came too late for its turn
    played later, and all after it too. So chunk k of a run ended no later than any echo of a mark sent
    after it in that run, less the audio between them; the least of those bounds places it. The bound
    is taken in steps of at least `_SLIP_S` (smaller ones are the echoes' own jitter, not a slip), and
    audio after a run's last such mark keeps the last step. A run no mark bounds keeps its placement.
    """
    sends = np.asarray(sends, dtype=np.float64).reshape(-1, 3)
    out = sends[:, 1].copy()
    if not len(sends):
        return out
    dur = CHUNK / rate
    send_t = sends[:, 0]
    runs = playout_runs(sends, rate)
    run_of = np.full(len(sends), -1)
    for r, run in enumerate(runs):
        run_of[run] = r
    bounds: list[list[tuple[int, float]]] = [[] for _ in runs]
    chunks_before = mark_chunks if mark_chunks is not None and len(mark_chunks) == len(marks) else None
    for i, (_, sent, echoed, flushed) in enumerate(marks):
        if flushed or not was_echoed(echoed):
            continue
        # the last chunk sent before the mark; by time alone, the chunks sent at the same instant (the
        # session marks a burst once it is written)
        if chunks_before is not None:
            k = chunks_before[i] - 1
        else:
            k = int(np.searchsorted(send_t, sent, side="right")) - 1
        if k >= len(sends):
            continue
        if k < 0 or run_of[k] < 0:
            continue
        end = sends[k, 1] + dur
        if sent > end:  # sent once the run had played out: its echo says nothing of the run's playout
            continue
        bounds[run_of[k]].append((k, echoed - end))
    for run, marks_in in zip(runs, bounds, strict=True):
        if not marks_in:
            continue
        ks = np.array([k for k, _ in marks_in])
        late = np.array([v for _, v in marks_in])
        order = np.argsort(ks, kind="stable")
        ks, late = ks[order], late[order]
        suffix = np.minimum.accumulate(late[::-1])[::-1]  # least lateness over this mark and the later
        # the bound of each chunk: the suffix minimum at the first mark sent after it; audio after the
        # run's last mark has none (one late echo must not move it), so it keeps the level before it
        j = np.searchsorted(ks, run, side="left")
        bound = suffix[np.minimum(j, len(ks) - 1)]
        shift = np.empty(len(run))
        level = bound[0]
        for i, b in enumerate(bound):
            if j[i] < len(ks) and b - level >= _SLIP_S:
                level = b
            shift[i] = level
        out[run] = sends[run, 1] + shift
    return out


def _lateness(
    predicted: npt.NDArray[np.float64], inbound: npt.NDArray[np.float64], lo: int, hi: int, rate: int
) -> tuple[float, float]:
    """How much later (s) the echo in `inbound` comes than `predicted` puts it, and that peak's z.

    GCC-PHAT between the two (equal lengths) over lags `lo`..`hi` samples, interpolated by `_UPSAMPLE`
    (the cross spectrum zero-padded), so that the lag is read to a fraction of a sample. The z is the
    peak over the robust spread of the correlation at the other lags.
    """
    n = len(predicted)
    nfft = sfft.next_fast_len(2 * n)
    cross = sfft.rfft(inbound, nfft) * np.conj(sfft.rfft(predicted, nfft))
    cross /= np.maximum(np.abs(cross), 1e-12)
    cc = sfft.irfft(cross, nfft * _UPSAMPLE)
    lags = np.arange(lo * _UPSAMPLE, hi * _UPSAMPLE + 1)
    window = cc[lags]  # negative lags wrap around to the end
    i = int(np.argmax(window))
    spread = 1.4826 * float(np.median(np.abs(window - np.median(window))))
    z = float(window[i] / spread) if spread > 0 else 0.0
    return float(lags[i]) / (rate * _UPSAMPLE), z


def align_runs(
    sent_pcm: npt.NDArray[np.int16],
    sends: npt.NDArray[np.float64],
    inbound: npt.NDArray[np.int16],
    received: npt.NDArray[np.bool_],
    echo: EchoEstimate,
    rate: int = 8000,
    earliest: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64] | None:
    """Per chunk, its playout start (s) as its run's own echo places it (NaN: keep); None to keep all.

    `sends` must place every run no earlier than it played (`latest_starts`); `earliest` (per chunk,
    default: as placed) is where another estimate put it, which the search reaches back to. Each run's
    echo is predicted through the whole call's path and found in the inbound audio by `_lateness`; the
    run whose echo comes latest against its prediction was placed the least late and anchors the
    others. See the module docstring for why and when.
    """
    if echo.delay_ms is None or echo.path_z < _ALIGN_Z or echo.response is None or not np.any(echo.response):
        return None
    sends = np.asarray(sends, dtype=np.float64).reshape(-1, 3)
    runs = playout_runs(sends, rate)
    if len(runs) < 2:
        return None
    n = len(inbound)
    h = echo.response
    reach = int(np.flatnonzero(h)[-1]) + 1
    y_all = np.asarray(inbound, dtype=np.float64) * received[:n]
    pcm = np.zeros(len(sends) * CHUNK)
    pcm[: min(len(sent_pcm), len(pcm))] = sent_pcm[: len(pcm)]
    back = np.zeros(len(sends)) if earliest is None else np.maximum(sends[:, 1] - earliest, 0.0)
    margin = round(_LATE_MAX_S * rate)
    fitted = {id(r) for r in sorted(runs, key=len, reverse=True)[:_ALIGN_MAX_RUNS]}
    late: list[float | None] = []
    for run in runs:
        a = int(np.rint(sends[run[0], 1] * rate))
        if len(run) * CHUNK < _ALIGN_MIN_S * rate or id(run) not in fitted or a < 0 or a >= n:
            late.append(None)
            continue
        x = pcm[run[0] * CHUNK : (run[-1] + 1) * CHUNK]  # a run plays back to back
        lo = -min(a, margin + round(float(np.nanmax(back[run])) * rate))
        b = min(n, a + len(x) + reach + margin)
        through = oaconvolve(x, h[:reach])[: b - a]
        predicted = np.zeros(b - a - lo)
        predicted[-lo : -lo + len(through)] = through
        predicted *= received[a + lo : b]
        tau, z = _lateness(predicted, y_all[a + lo : b], lo, margin, rate)
        late.append(tau if z >= _ALIGN_Z else None)
    seen = [t for t in late if t is not None]
    if len(seen) < 2:
        return None
    anchor = max(seen)
    starts = np.full(len(sends), np.nan)
    for run, run_late in zip(runs, late, strict=True):
        if run_late is not None:
            starts[run] = sends[run, 1] + run_late - anchor
    return starts
