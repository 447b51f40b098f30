"""Inbound media timing: lost audio (gaps in `media.timestamp`), inter-arrival jitter, clock mapping.

Conventions (DESIGN.md): `media.timestamp` is the ms time of a frame's first sample since the stream
started; Twilio sends 20 ms frames, so lost audio shows as a timestamp jump of 20 ms per lost frame
(`chunk` stays consecutive). Frames missing before the first received one count too (its timestamp > 0).

Jitter is RFC 3550 §6.4.1: D = (R_i − R_{i−1}) − (S_i − S_{i−1}) with R the local arrival time and S the
media timestamp, J_i = J_{i−1} + (|D| − J_{i−1})/16. J is a running estimate that moves with every
packet, so besides its last value we report its mean and max over the call (Twilio's Voice Insights
reports jitter as avg/max too); the mean of J estimates E|D| (for i.i.d. transit delays of standard
deviation σ that is 2σ/√π).

Pure numpy/scipy: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = ["Gaps", "Jitter", "inbound_gaps", "interarrival_jitter", "media_clock_offset_s"]


@dataclass(frozen=True, slots=True)
class Gaps:
    total_ms: float  # audio missing, ms
    count: int  # separate gaps (runs of lost frames)
    lost_frames: int


@dataclass(frozen=True, slots=True)
class Jitter:
    mean_ms: float
    max_ms: float
    last_ms: float  # RFC 3550's J after the last packet


def inbound_gaps(timestamps_ms: npt.ArrayLike, frame_ms: float = 20.0) -> Gaps:
    """Lost audio from the media timestamps of the frames received, in arrival order."""
    ts = np.asarray(timestamps_ms, dtype=np.float64)
    if ts.size == 0:
        return Gaps(0.0, 0, 0)
    # Prepend the frame that would precede timestamp 0, so loss at the very start shows as a jump too.
    steps = np.diff(np.concatenate(([-frame_ms], ts)))
    # Rounding absorbs the ms rounding of timestamps; a repeat or reorder (step <= 0) loses nothing.
    lost = np.maximum(np.rint(steps / frame_ms) - 1, 0).astype(np.int64)
    n_lost = int(lost.sum())
    return Gaps(total_ms=n_lost * frame_ms, count=int(np.count_nonzero(lost)), lost_frames=n_lost)


def interarrival_jitter(arrivals_s: npt.ArrayLike, timestamps_ms: npt.ArrayLike) -> Jitter:
    """RFC 3550 inter-arrival jitter (ms) from local arrival times (s) and media timestamps (ms)."""
    r = np.asarray(arrivals_s, dtype=np.float64) * 1000.0
    s = np.asarray(timestamps_ms, dtype=np.float64)
    if r.size < 2:
        return Jitter(0.0, 0.0, 0.0)
    d = np.abs(np.diff(r) - np.diff(s))
    # Rounded to ns: float noise from subtracting large arrival times must not read as jitter.
    j = np.round(lfilter([1.0 / 16.0], [1.0, -15.0 / 16.0], d), 6)
    return Jitter(mean_ms=float(j.mean()), max_ms=float(j.max()), last_ms=float(j[-1]))


def media_clock_offset_s(
    arrivals_s: npt.ArrayLike, timestamps_ms: npt.ArrayLike, frame_ms: float = 20.0
) -> float:
    """Local time of media time 0: min over frames of (arrival - timestamp), less one frame.

    A line is causal (DESIGN, "Precise conventions"): a frame can leave the phone only once its *last*
    sample exists, so the least-delayed frame arrives one frame duration (20 ms for Twilio's 160-byte
    frames) plus the fixed transit after its first sample's media time. Queueing and jitter only ever
    make frames later, so the minimum is the best estimate of that fixed part; taking the frame out
    leaves the transit alone. Media time t then maps to local time t + offset.
    """
    r = np.asarray(arrivals_s, dtype=np.float64)
    s = np.asarray(timestamps_ms, dtype=np.float64) / 1000.0
    if r.size == 0:
        return 0.0
    return float(np.min(r - s)) - frame_ms / 1000.0
