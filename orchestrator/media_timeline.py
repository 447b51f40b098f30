"""Where things happened in a call's media stream, for the call page's time axis: lost-audio gaps, jitter
over time, marks and their echoes, `clear`s, and playout gaps (underruns), all in seconds since the
stream's `start` was received (the evidence's clock).

`stream_marks(evidence)` is called by the end-of-call analysis (`orchestrator.evaluation`) and its
result is stored with the analysis summary under "stream". The counts and totals the criteria judge stay
the metrics' (`bridge.analysis`); this only places events in time, compactly (rounded to the ms), so a
report can draw them. Pure: numpy on the evidence, no I/O, never raises on an empty call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FRAME_MS = 20.0
_JITTER_STEP_S = 0.5  # one jitter point per half second: enough to see a burst, small to store
_CLEAR_GROUP_S = 0.05  # flushed marks echoed this close together were flushed by one `clear`
_EPS_S = 1e-6


def _r(v: float) -> float:
    return round(float(v), 3)


def _gaps(arrivals: np.ndarray[Any, Any], offset_s: float) -> list[list[float]]:
    """[local start s, media start ms, missing ms] per jump in the media timestamps."""
    if not len(arrivals):
        return []
    ts = arrivals[:, 1]
    prev = np.concatenate(([-FRAME_MS], ts[:-1]))
    lost = np.maximum(np.rint((ts - prev) / FRAME_MS) - 1, 0)
    out = []
    for k in np.flatnonzero(lost):
        media_ms = float(prev[k]) + FRAME_MS
        out.append([_r(media_ms / 1000 + offset_s), round(media_ms, 1), round(float(lost[k]) * FRAME_MS, 1)])
    return out


def _jitter(arrivals: np.ndarray[Any, Any]) -> list[list[float]]:
    """RFC 3550 running jitter (ms), its maximum over each half second, at that window's start."""
    if len(arrivals) < 2:
        return []
    r, s = arrivals[:, 0] * 1000.0, arrivals[:, 1]
    d = np.abs(np.diff(r) - np.diff(s))
    j = np.empty(len(d))
    acc = 0.0
    for i, v in enumerate(d):  # J += (|D| - J) / 16
        acc += (float(v) - acc) / 16.0
        j[i] = acc
    t = arrivals[1:, 0]
    bins = np.floor(t / _JITTER_STEP_S).astype(np.int64)
    out = []
    for b in np.unique(bins):
        out.append([_r(b * _JITTER_STEP_S), round(float(j[bins == b].max()), 2)])
    return out


def _marks(marks: list[tuple[str, float, float | None, bool]]) -> tuple[list[list[Any]], list[float]]:
    """([sent s, echoed s or None, flushed 0/1] per mark, clear times); a clear flushes pending marks."""
    out: list[list[Any]] = []
    flushed_at: list[float] = []
    for _name, sent, echoed, flushed in marks:
        echo = float(echoed) if echoed is not None and np.isfinite(echoed) else None
        out.append([_r(sent), None if echo is None else _r(echo), 1 if flushed else 0])
        if flushed and echo is not None:
            flushed_at.append(echo)
    clears: list[float] = []
    for t in sorted(flushed_at):
        if not clears or t - clears[-1] > _CLEAR_GROUP_S:
            clears.append(_r(t))
    return out, clears


def _underruns(sends: np.ndarray[Any, Any], max_gap_s: float = 1.0) -> list[list[float]]:
    """[local s, gap ms] where a chunk was sent after the audio before it had finished playing.

    The pacer's rule (`bridge.playout`) replayed on the send times: each 20 ms chunk plays right after
    the one before, or when it is sent if that is later; a later send mid-flow is an underrun. The pacer
    also knows when the sender went idle on purpose, which the evidence does not keep: a pause over
    `max_gap_s` is taken for that. The count the criteria use stays the pacer's (`outbound_underruns`).
    """
    out = []
    end: float | None = None
    for send in sends[:, 0] if len(sends) else ():
        if end is not None and _EPS_S < send - end <= max_gap_s:
            out.append([_r(end), round(float(send - end) * 1000, 1)])
        end = max(float(send), end if end is not None else float(send)) + FRAME_MS / 1000
    return out


def stream_marks(evidence: Any) -> dict[str, Any]:
    """The media stream's events in time (see the module docstring), from a `bridge.analysis.MediaEvidence`."""
    from bridge.meters.timing import media_clock_offset_s

    arrivals = np.asarray(evidence.inbound_arrivals, dtype=np.float64).reshape(-1, 2)
    sends = np.asarray(evidence.sends, dtype=np.float64).reshape(-1, 3)
    offset = float(media_clock_offset_s(arrivals[:, 0], arrivals[:, 1])) if len(arrivals) else 0.0
    marks, clears = _marks(list(evidence.marks))
    return {
        "media_offset_s": _r(offset),
        "inbound_frames": len(arrivals),
        "gaps": _gaps(arrivals, offset),
        "jitter": _jitter(arrivals),
        "marks": marks,
        "clears": clears,
        "underruns": _underruns(sends),
    }
