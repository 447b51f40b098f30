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
- Runs placed by their own echoes: see bridge/played.py (the echo's reference, its cancellation and
  the played track use it; first audio keeps the marks').
- Speech segments: the caller's by VAD (meters.vad) on the echo-cancelled inbound track; ours on the
  played track by the onset convention alone (levels.speech_segments: runs of 50 ms above threshold,
  pauses under 300 ms inside one segment), which is exact for audio only we produce.
- Double talk (meters.overlap): the same caller segments against the model's played segments: overlap,
  interruptions by side, barge-ins (a caller onset inside model speech) and how long the model's audio
  went on at the phone after it (`barge_in_stop_ms`, the median; `barge_in_unstopped` past 3 s).
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

from bridge.meters.echo import EchoEstimate, cancel_echo, estimate_echo
from bridge.meters.levels import (
    Levels,
    measure_levels,
    noise_floor_dbfs,
    speech_onset,
    speech_segments,
    speech_threshold_dbfs,
)
from bridge.meters.overlap import double_talk
from bridge.meters.timing import inbound_gaps, interarrival_jitter, media_clock_offset_s
from bridge.meters.vad import Segment, detect_speech, total_speech_s
from bridge.played import CHUNK, align_runs, latest_starts, played_track, was_echoed

__all__ = ["Analysis", "MediaEvidence", "Turn", "analyse", "find_turns", "first_audio"]


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
    # what the model heard after the echo canceller, int16 on the media clock like inbound_pcm (None: off)
    model_input_pcm: npt.NDArray[np.int16] | None = None


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


def _sends(ev: MediaEvidence) -> npt.NDArray[np.float64]:
    s = np.asarray(ev.sends, dtype=np.float64)
    return s.reshape(-1, 3) if s.size else np.empty((0, 3))


def _confirmed_sends(ev: MediaEvidence) -> npt.NDArray[np.float64]:
    """`sends` without the chunks no mark echo confirmed (their playout set unknown: NaN)."""
    sends = _sends(ev).copy()
    confirmed = [sent for _, sent, echoed, flushed in ev.marks if was_echoed(echoed) and not flushed]
    last = max(confirmed, default=-np.inf)
    sends[sends[:, 0] > last, 1] = np.nan
    return sends


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
        sent >= send_t and was_echoed(echoed) and not mflushed for _, sent, echoed, mflushed in ev.marks
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


_ERLE_BLOCK = 160  # 20 ms
_ERLE_WINDOW = 4000  # 0.5 s
# A residual echo this far under what we played is under the μ-law noise of the played speech itself
# (μ-law's SNR is ~38 dB): it is measured and kept, but not counted as the model hearing itself.
_RESIDUAL_AUDIBLE_DB = 45.0
_ERLE_ECHO_DBFS = -55.0  # a window whose predicted echo is quieter than this holds no echo to measure


def _after_canceller(
    played: npt.NDArray[np.int16],
    inbound: npt.NDArray[np.int16],
    caller: npt.NDArray[np.float64] | npt.NDArray[np.int16],
    heard: npt.NDArray[np.int16],
    received: npt.NDArray[np.bool_],
    echo: EchoEstimate,
    caller_segments: list[Segment],
    rate: int,
) -> dict[str, float]:
    """What the model heard with the canceller on (all on the local clock): its residual echo (the echo
    meter on the model's input, against the same reference) and the ERLE over single talk: per 0.5 s
    window where the line's echo (as the whole-call path predicts it) is above -55 dBFS and the caller
    is silent throughout, 10 log10(line energy / model-input energy); the median over the call."""
    out: dict[str, float] = {}
    residual = estimate_echo(played, heard, rate, received=received)
    loss = residual.erl_db if residual.detected else None
    out["residual_echo_detected"] = float(loss is not None and loss <= _RESIDUAL_AUDIBLE_DB)
    if loss is not None:
        out["residual_echo_return_loss_db"] = loss
    if not echo.detected:
        return out
    x = np.asarray(inbound, dtype=np.float64)
    predicted = x - np.asarray(caller, dtype=np.float64)[: len(x)]
    k = len(x) // _ERLE_BLOCK
    if k == 0:
        return out
    blocks = slice(0, k * _ERLE_BLOCK)
    p_echo = np.mean(predicted[blocks].reshape(k, -1) ** 2, axis=1)
    talking = np.zeros(len(x), bool)
    for seg in caller_segments:
        talking[round(seg.start_s * rate) : round(seg.end_s * rate)] = True
    quiet: npt.NDArray[np.bool_] = np.asarray(
        ~talking[blocks].reshape(k, -1).any(axis=1) & received[blocks].reshape(k, -1).all(axis=1), dtype=bool
    )
    # per 0.5 s window of single talk: line energy / model-input energy; the median over the call
    w = _ERLE_WINDOW // _ERLE_BLOCK
    kw = k // w
    if kw:
        e_in = np.sum(x[blocks].reshape(k, -1) ** 2, axis=1)[: kw * w].reshape(kw, w)
        e_out = np.sum(heard.astype(np.float64)[blocks].reshape(k, -1) ** 2, axis=1)[: kw * w].reshape(kw, w)
        echo_w = (p_echo[: kw * w].reshape(kw, w)).mean(axis=1)
        loud = np.asarray(echo_w > (32768.0 * 10 ** (_ERLE_ECHO_DBFS / 20)) ** 2, dtype=bool)
        whole = np.asarray(quiet[: kw * w].reshape(kw, w).all(axis=1), dtype=bool) & loud
        if whole.any():
            erle = 10.0 * np.log10(e_in[whole].sum(axis=1) / np.maximum(e_out[whole].sum(axis=1), 1.0))
            out["aec_erle_db"] = float(np.median(erle))
            out["aec_single_talk_s"] = float(np.count_nonzero(whole)) * _ERLE_WINDOW / rate
    return out


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
    model_heard: dict[str, float] = {}
    if ev.model_input_pcm is not None:
        heard_local = _shift(np.asarray(ev.model_input_pcm, dtype=np.int16), off, n)
        model_heard = _after_canceller(
            played_n, inbound_local, caller_track, heard_local, received_local, echo, inbound_segments, rate
        )
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

    # double talk: the caller's speech against the model's as the phone heard it (bridge.meters.overlap)
    m.update(double_talk(inbound_segments, outbound_segments).metrics())

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
    m.update(model_heard)

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
    m["marks_played"] = float(sum(1 for _, _, e, f in ev.marks if was_echoed(e) and not f))
    m["chunks_flushed"] = float(np.count_nonzero(_sends(ev)[:, 2] != 0))
    return Analysis(m, inbound_segments, outbound_segments, turns, echo, in_lv, out_lv)
