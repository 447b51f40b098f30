"""Per-call media analysis: the evidence a media session records, and the metrics computed from it.

Theory of operation (all times in seconds on one local monotonic clock, origin = stream `start` received):
- Inbound audio is on the media clock (sample i at media time i/rate). It is mapped to the local clock
  with offset = min over frames of (arrival − timestamp) − one 20 ms frame: the least-delayed frame,
  which could leave the phone only once its last sample existed (`timing.media_clock_offset_s`).
- The played track is built by placing every non-flushed sent 160-sample chunk at its estimated playout
  start, so it is what the phone heard, on the local clock.
- First audio: the first speech onset (levels.speech_onset, threshold above the track's own noise floor)
  in what was sent; `first_audio_ms` is the send
  time of the chunk holding it; `first_audio_heard_ms` is that chunk's playout start plus the onset's
  offset within the chunk, counted only when a mark sent after the chunk was echoed (not flushed).
- Echo (meters.echo): the echo path from played to inbound on the local clock, estimated over the whole
  call, so the delay is "played → heard back" (its first arrival) and includes nothing of ours; lost
  frames are left out of the fit. When echo is detected the path's prediction is subtracted from the
  inbound track before the inbound VAD runs, so that echoed model speech is not mistaken for the caller.
- Runs placed by their own echoes: the playout clock places each run of contiguous audio by the least
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
- Speech segments: the caller's by VAD (meters.vad) on the echo-cancelled inbound track; ours on the
  played track by the onset convention alone (levels.speech_segments: runs of 50 ms above threshold,
  pauses under 300 ms inside one segment), which is exact for audio only we produce.
- Turns: for each caller segment, the first model speech onset on the played track that
  comes after the caller's end and before the caller's next segment starts. A model segment that starts
  while the caller is still talking is overlap (barge-in or talk-over), not a response, and is not a turn;
  a caller segment the model never answers is not a turn either. Latency = model onset − caller end.

Pure: no I/O, no clocks; runs once when a call ends (a 5-minute call analyses in well under a second).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy.signal import oaconvolve

from bridge.meters.echo import EchoEstimate, cancel_echo, estimate_echo
from bridge.meters.levels import (
    Levels,
    measure_levels,
    noise_floor_dbfs,
    speech_onset,
    speech_segments,
    speech_threshold_dbfs,
)
from bridge.meters.timing import inbound_gaps, interarrival_jitter, media_clock_offset_s
from bridge.meters.vad import Segment, detect_speech, total_speech_s

__all__ = [
    "Analysis",
    "MediaEvidence",
    "Turn",
    "align_runs",
    "analyse",
    "find_turns",
    "first_audio",
    "latest_starts",
    "played_track",
    "playout_runs",
]

CHUNK = 160  # samples per outbound chunk (20 ms at 8 kHz)


@dataclass
class MediaEvidence:
    rate: int  # 8000
    inbound_pcm: npt.NDArray[np.int16]  # int16 caller audio on the media clock; lost frames are zeros
    inbound_arrivals: npt.NDArray[
        np.float64
    ]  # float64 (n, 2): (local s since `start`, media.timestamp ms) per frame
    sent_pcm: npt.NDArray[np.int16]  # int16 what we sent outbound, in send order (160-sample chunks)
    sends: npt.NDArray[
        np.float64
    ]  # float64 (m, 3): per chunk (send time s, estimated playout start s, flushed 0/1)
    marks: list[tuple[str, float, float, bool]] = field(default_factory=list)  # (name, sent, echoed, flushed)
    mark_chunks: list[int] = field(default_factory=list)  # per mark: chunks sent before it (empty: unknown)
    underruns: int = 0
    frames_to_model: int = 0  # 80 ms frames of caller audio fed to the backend
    step_ms: list[float] = field(default_factory=list)
    late_frames: int = 0


@dataclass(frozen=True, slots=True)
class Turn:
    caller_end_s: float
    model_onset_s: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Analysis:
    metrics: dict[str, float]
    inbound_segments: list[Segment]  # local clock
    outbound_segments: list[Segment]  # local clock, as played
    turns: list[Turn]
    echo: EchoEstimate
    inbound_levels: Levels
    outbound_levels: Levels


def _echoed(t: float | None) -> bool:
    return t is not None and bool(np.isfinite(t))


def _sends(ev: MediaEvidence) -> npt.NDArray[np.float64]:
    s = np.asarray(ev.sends, dtype=np.float64)
    return s.reshape(-1, 3) if s.size else np.empty((0, 3))


def _confirmed_sends(ev: MediaEvidence) -> npt.NDArray[np.float64]:
    """`sends` without the chunks no mark echo confirmed (their playout set unknown: NaN)."""
    sends = _sends(ev).copy()
    confirmed = [sent for _, sent, echoed, flushed in ev.marks if _echoed(echoed) and not flushed]
    last = max(confirmed, default=-np.inf)
    sends[sends[:, 0] > last, 1] = np.nan
    return sends


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
        if flushed or not _echoed(echoed):
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


def first_audio(ev: MediaEvidence) -> tuple[float | None, float | None]:
    """(first_audio_ms, first_audio_heard_ms); heard is None unless a later mark echo confirms playout."""
    sends = _sends(ev)
    onset = speech_onset(np.asarray(ev.sent_pcm), ev.rate)  # threshold over the sent track's own floor
    if onset is None or onset // CHUNK >= len(sends):
        return None, None
    k = onset // CHUNK
    send_t, play_t, flushed = sends[k]
    server_ms = send_t * 1000.0
    confirmed = not flushed and any(
        sent >= send_t and _echoed(echoed) and not mflushed for _, sent, echoed, mflushed in ev.marks
    )
    heard_ms = (play_t + (onset - k * CHUNK) / ev.rate) * 1000.0 if confirmed else None
    return server_ms, heard_ms


def find_turns(caller: list[Segment], model_onsets: list[float]) -> list[Turn]:
    onsets = np.sort(np.asarray(model_onsets, dtype=np.float64))
    turns: list[Turn] = []
    for i, seg in enumerate(caller):
        j = int(np.searchsorted(onsets, seg.end_s, side="right"))
        if j == len(onsets):
            continue
        onset = float(onsets[j])
        if i + 1 < len(caller) and caller[i + 1].start_s <= onset:
            continue  # the caller spoke again first: this segment got no answer of its own
        turns.append(Turn(seg.end_s, onset, (onset - seg.end_s) * 1000.0))
    return turns


def _shift(x: npt.NDArray[np.int16], by: int, length: int) -> npt.NDArray[np.int16]:
    """x delayed by `by` samples (advanced if negative), cut or zero-padded to `length`."""
    out = np.zeros(length, dtype=np.int16)
    src = np.asarray(x, dtype=np.int16)[max(0, -by) :]
    start = max(0, by)
    n = max(0, min(len(src), length - start))
    out[start : start + n] = src[:n]
    return out


def _received_mask(
    n: int, timestamps_ms: npt.NDArray[np.float64], rate: int, frame: int = CHUNK
) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=bool)
    starts = np.rint(np.asarray(timestamps_ms) * rate / 1000.0).astype(np.int64)
    idx = (starts[:, None] + np.arange(frame)).ravel()
    mask[idx[(idx >= 0) & (idx < n)]] = True
    return mask


def _level_metrics(prefix: str, lv: Levels) -> dict[str, float]:
    return {
        f"{prefix}_rms_dbfs": lv.rms_dbfs,
        f"{prefix}_peak": float(lv.peak),
        f"{prefix}_clip_ratio": lv.clip_ratio,
        f"{prefix}_silence_ratio": lv.silence_ratio,
    }


def analyse(ev: MediaEvidence, step_budget_ms: float = 80.0) -> Analysis:
    rate = ev.rate
    arrivals = np.asarray(ev.inbound_arrivals, dtype=np.float64).reshape(-1, 2)
    inbound = np.asarray(ev.inbound_pcm, dtype=np.int16)
    offset_s = media_clock_offset_s(arrivals[:, 0], arrivals[:, 1]) if len(arrivals) else 0.0
    off = int(np.rint(offset_s * rate))

    # Each run as late as its mark echoes allow (see latest_starts): no earlier than it played. Where
    # that is earlier than the playout clock put it, the clock was late; where it is later, either the
    # clock placed it early or the echoes bounding it came late: the run's own echo decides (align_runs).
    latest = _sends(ev).copy()
    if ev.marks:
        latest[:, 1] = latest_starts(latest, ev.marks, ev.mark_chunks, rate)
    placed = _sends(ev).copy()
    placed[:, 1] = np.fmin(placed[:, 1], latest[:, 1])
    played = played_track(np.asarray(ev.sent_pcm, dtype=np.int16), placed, rate)
    n = max(len(played), len(inbound) + max(off, 0))
    played_n = _shift(played, 0, n)
    inbound_local = _shift(inbound, off, n)

    received = (
        _received_mask(len(inbound), arrivals[:, 1], rate) if len(arrivals) else np.ones(len(inbound), bool)
    )
    # The echo's reference is what the phone is known to have played when: audio sent after the last
    # echoed mark (a call hung up mid-reply) may never have played, and if it did, its run's playout
    # phase was never measured (up to one 20 ms packet off), which would smear the path.
    sent_pcm = np.asarray(ev.sent_pcm, dtype=np.int16)
    confirmed = _confirmed_sends(ev)
    received_local = _shift(received.astype(np.int16), off, n) > 0
    confirmed[:, 1] = np.where(np.isfinite(confirmed[:, 1]), placed[:, 1], np.nan)
    reference = _shift(played_track(sent_pcm, confirmed, rate), 0, n)
    echo = estimate_echo(reference, inbound_local, rate, received=received_local)
    bounded = confirmed.copy()
    bounded[:, 1] = np.where(np.isfinite(confirmed[:, 1]), latest[:, 1], np.nan)
    starts = align_runs(sent_pcm, bounded, inbound_local, received_local, echo, rate, confirmed[:, 1])
    if starts is not None:
        moved = np.isfinite(starts)
        confirmed[moved, 1] = starts[moved]
        echo = estimate_echo(
            _shift(played_track(sent_pcm, confirmed, rate), 0, n),
            inbound_local,
            rate,
            received=received_local,
        )
        aligned = placed.copy()
        aligned[moved, 1] = starts[moved]
        played_n = _shift(played_track(sent_pcm, aligned, rate), 0, n)
    caller_track = cancel_echo(played_n, inbound_local, echo)
    inbound_segments = detect_speech(caller_track, rate)
    # What we played holds nothing but our own output: its speech is found by the onset convention alone
    # (the same one the first audio uses), so a model turn starts where its speech really starts.
    played_threshold = speech_threshold_dbfs(noise_floor_dbfs(played_n, rate))
    outbound_segments = [
        Segment(a / rate, b / rate)
        for a, b in speech_segments(played_n, rate, threshold_dbfs=played_threshold)
    ]
    turns = find_turns(inbound_segments, [s.start_s for s in outbound_segments])

    m: dict[str, float] = {}
    server_ms, heard_ms = first_audio(ev)
    if server_ms is not None:
        m["first_audio_ms"] = server_ms
    if heard_ms is not None:
        m["first_audio_heard_ms"] = heard_ms
    m["turns"] = float(len(turns))
    if turns:
        lat = np.array([t.latency_ms for t in turns])
        m["response_latency_ms_p50"] = float(np.median(lat))
        m["response_latency_ms_max"] = float(lat.max())

    m["echo_detected"] = float(echo.detected)
    if echo.detected:
        # Playout starts are rounded to whole samples; give back the sub-sample part of the clock offset.
        m["echo_delay_ms"] = float(echo.delay_ms or 0.0) + (offset_s * rate - off) * 1000.0 / rate
        if echo.erl_db is not None:
            m["echo_return_loss_db"] = echo.erl_db
    m["echo_peak"] = echo.peak
    m["echo_confidence"] = echo.confidence
    m["echo_path_z"] = echo.path_z
    m["echo_absent_ratio"] = echo.absent_ratio
    m["echo_segments_used"] = float(echo.segments_used)
    m["echo_segments_flagged"] = float(echo.segments_flagged)

    if ev.step_ms:
        steps = np.asarray(ev.step_ms, dtype=np.float64)
        for q in (50, 95, 99):
            m[f"step_ms_p{q}"] = float(np.percentile(steps, q))
        m["steps_over_budget"] = float(np.count_nonzero(steps > step_budget_ms))
    m["late_frames"] = float(ev.late_frames)

    gaps = inbound_gaps(arrivals[:, 1])
    jit = interarrival_jitter(arrivals[:, 0], arrivals[:, 1])
    m["inbound_gap_ms_total"] = gaps.total_ms
    m["inbound_gap_count"] = float(gaps.count)
    m["lost_frames"] = float(gaps.lost_frames)
    m["inbound_jitter_ms"] = jit.mean_ms
    m["inbound_jitter_ms_max"] = jit.max_ms
    m["inbound_media_offset_ms"] = offset_s * 1000.0
    m["outbound_underruns"] = float(ev.underruns)

    # Inbound levels over the audio that actually arrived: zero padding for lost frames is not the line.
    in_lv = measure_levels(inbound[received], rate)
    out_lv = measure_levels(np.asarray(ev.sent_pcm, dtype=np.int16), rate)
    m.update(_level_metrics("inbound", in_lv))
    m.update(_level_metrics("outbound", out_lv))
    m["inbound_speech_s"] = total_speech_s(inbound_segments)
    m["outbound_speech_s"] = total_speech_s(outbound_segments)
    m["frames_to_model"] = float(ev.frames_to_model)
    m["marks_sent"] = float(len(ev.marks))
    m["marks_played"] = float(sum(1 for _, _, e, f in ev.marks if _echoed(e) and not f))
    m["chunks_flushed"] = float(np.count_nonzero(_sends(ev)[:, 2] != 0))
    return Analysis(m, inbound_segments, outbound_segments, turns, echo, in_lv, out_lv)
