"""Voice activity detection for 8 kHz telephone audio → speech segments.

How: WebRTC's GMM VAD (`webrtcvad`, from the `webrtcvad-wheels` package, which ships the compiled model)
decides each 30 ms frame; an adaptive energy gate (noise floor + 6 dB, kept between −55 and −35 dBFS)
vetoes its known false alarms (the first frames before its noise model adapts, and low-level noise);
gaps shorter than the hangover (300 ms) are bridged so pauses between words do not split an utterance;
segments shorter than 90 ms are dropped. WebRTC's own decisions are frame-quantised and carry an
internal overhang of a few frames, so each segment's boundaries are then refined to the sample with the
energy onset/offset convention of `levels.speech_onset` (`levels.speech_threshold_dbfs`: −40 dBFS, or
noise floor + 9 dB when the floor is higher; sample-level refinement above noise floor + 12 dB), searched within 60 ms outside the raw boundaries. End-of-speech therefore excludes
the hangover, which is what response latency needs. Where noise raised the threshold, each segment is
then widened to `levels.boundary_threshold_dbfs` (where the speech alone crosses −40 dBFS): at −40 dBFS
of line noise the raised threshold alone ended fading words up to 90 ms early and started soft onsets
up to 48 ms late; widened, both are within ~10 ms of the clean signal's.

Pure: no I/O, no clocks; a fresh webrtcvad instance per call keeps results independent of history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

from bridge.meters.levels import (
    boundary_threshold_dbfs,
    floor_of_levels,
    speech_offset,
    speech_onset,
    speech_threshold_dbfs,
    widen_segment,
    window_dbfs,
)

__all__ = ["Segment", "detect_speech", "total_speech_s"]


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def shifted(self, offset_s: float) -> Segment:
        return Segment(self.start_s + offset_s, self.end_s + offset_s)


def total_speech_s(segments: list[Segment]) -> float:
    return float(sum(s.duration_s for s in segments))


def _noise_floor_dbfs(frame_db: npt.NDArray[np.float64]) -> float:
    # Digital silence (lost frames, zero padding) says nothing about the line's noise, nor does the
    # near-silence of synthetic pauses on a noisy line: the floor rule of levels.floor_of_levels.
    return floor_of_levels(frame_db)


def _runs(flags: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, end) index pairs of runs of True, end exclusive."""
    d = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def detect_speech(
    pcm: npt.NDArray[np.int16],
    rate: int = 8000,
    *,
    mode: int = 3,
    frame_ms: int = 30,
    hangover_ms: float = 300.0,
    min_speech_ms: float = 90.0,
    refine: bool = True,
) -> list[Segment]:
    """Speech segments of `pcm` (seconds from sample 0), in time order."""
    x = np.ascontiguousarray(pcm, dtype=np.int16)
    flen = rate * frame_ms // 1000
    n = len(x) // flen
    if n == 0:
        return []
    frame_db = window_dbfs(x, rate, frame_ms)[:n]
    floor = _noise_floor_dbfs(frame_db)
    gate = min(max(floor + 6.0, -55.0), -35.0)
    vad = webrtcvad.Vad(mode)
    raw = x[: n * flen].tobytes()
    step = flen * 2
    voiced = np.fromiter(
        (vad.is_speech(raw[i * step : (i + 1) * step], rate) for i in range(n)), dtype=bool, count=n
    )
    voiced &= frame_db > gate

    # Hangover: bridge short unvoiced gaps between voiced frames.
    max_gap = round(hangover_ms / frame_ms)
    for s, e in _runs(~voiced):
        if s > 0 and e < n and e - s <= max_gap:
            voiced[s:e] = True
    min_frames = max(1, int(np.ceil(min_speech_ms / frame_ms)))
    runs = [(s * flen, e * flen) for s, e in _runs(voiced) if e - s >= min_frames]
    if not refine:
        return [Segment(s / rate, e / rate) for s, e in runs]

    thr = speech_threshold_dbfs(floor)  # the one onset threshold (levels.py) on this line's floor
    # Noise peaks reach ~3-4x its RMS; keep the sample-level refinement above them.
    level = max(thr - 6.0, floor + 12.0)
    edge = boundary_threshold_dbfs(floor)
    edge_level = max(edge - 6.0, floor + 12.0)
    pad = int(0.06 * rate)
    out: list[Segment] = []
    for s, e in runs:
        lo, hi = max(0, s - pad), min(len(x), e + pad)
        on = speech_onset(x[lo:e], rate, threshold_dbfs=thr, refine_dbfs=level)
        off = speech_offset(x[s:hi], rate, threshold_dbfs=thr, refine_dbfs=level)
        start = lo + on if on is not None else s
        end = s + off if off is not None else e
        if edge < thr:
            start, end = widen_segment(x, rate, start, end, edge, refine_dbfs=edge_level)
        if end - start >= min_speech_ms * rate / 1000:
            out.append(Segment(start / rate, end / rate))
    return _merge(out, hangover_ms / 1000)


def _merge(segments: list[Segment], gap_s: float) -> list[Segment]:
    # Refinement can pull neighbouring segments together; keep the list disjoint and ordered.
    merged: list[Segment] = []
    for seg in segments:
        if merged and seg.start_s - merged[-1].end_s <= gap_s:
            merged[-1] = Segment(merged[-1].start_s, max(merged[-1].end_s, seg.end_s))
        else:
            merged.append(seg)
    return merged
