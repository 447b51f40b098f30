"""Meters for the media bridge: pure numpy/scipy functions over recorded call audio and timings.

`levels` (RMS, peak, clipping, silence, speech onset/offset), `vad` (speech segments), `echo` (GCC-PHAT
echo delay and return loss), `timing` (lost frames, jitter, clock mapping). Nothing here does I/O, reads
a clock or keeps state between calls; `bridge.analysis` combines them into a call's metrics.
"""

from __future__ import annotations

from bridge.meters.echo import EchoEstimate, estimate_echo
from bridge.meters.levels import Levels, measure_levels, speech_offset, speech_onset
from bridge.meters.timing import Gaps, Jitter, inbound_gaps, interarrival_jitter, media_clock_offset_s
from bridge.meters.vad import Segment, detect_speech

__all__ = [
    "EchoEstimate",
    "Gaps",
    "Jitter",
    "Levels",
    "Segment",
    "detect_speech",
    "estimate_echo",
    "inbound_gaps",
    "interarrival_jitter",
    "measure_levels",
    "media_clock_offset_s",
    "speech_offset",
    "speech_onset",
]
