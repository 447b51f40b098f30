"""Inbound gap handling without an event loop: silence for lost audio, late audio dropped, bounded repair."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import RemoteProtocolError
from bridge.inbound import LONG_GAP_MS, InboundTrack
from bridge.protocol import MAX_GAP_MS

FRAME_8K = 640  # one 80 ms model frame is 640 samples at 8 kHz


def payload(i: int) -> bytes:
    return bytes([0x10 + i % 64]) * 160


def test_contiguous_audio_makes_one_model_frame_per_four_messages_and_no_gaps() -> None:
    track = InboundTrack()
    frames = []
    for i in range(8):
        frames += track.receive(20 * i, payload(i), rel=0.02 * (i + 1) + 0.005).frames
    assert len(frames) == 2 and all(f.shape == (1920,) and f.dtype == np.float32 for f in frames)
    assert track.gaps == [] and track.out_of_order == 0
    assert bytes(track.codes) == b"".join(payload(i) for i in range(8))
    assert [ts for _, ts in track.arrivals] == [20 * i for i in range(8)]
    assert [rel for rel, _ in track.arrivals] == pytest.approx([0.02 * (i + 1) + 0.005 for i in range(8)])
    # the first frame left the phone after its last sample: 5 ms of transit
    assert track.offset == pytest.approx(0.005)


def test_lost_audio_is_filled_with_silence_so_the_models_clock_keeps_running() -> None:
    track = InboundTrack()
    n_frames = 0
    sent = [0, 20, 100, 120, 140, 160]  # 60 ms lost after the second message
    for k, ts in enumerate(sent):
        n_frames += len(track.receive(ts, payload(k), rel=ts / 1000 + 0.03).frames)
    assert track.gaps == [(40, 60)]
    audio_ms = sent[-1] + 20  # silence included: every millisecond reaches the model once
    assert n_frames == audio_ms * 8 // FRAME_8K
    assert track.codes[40 * 8 : 100 * 8] == b"\xff" * 480  # the gap is silence on the media clock
    assert track.codes[100 * 8 : 100 * 8 + 160] == payload(2)


def test_a_long_gap_is_reported_once_with_where_it_starts_and_how_long_it_is() -> None:
    track = InboundTrack()
    assert track.receive(0, payload(0), rel=0.03).long_gap is None
    assert track.receive(20 + LONG_GAP_MS - 20, payload(1), rel=0.6).long_gap is None  # 480 ms: short
    got = track.receive(LONG_GAP_MS + 20 + LONG_GAP_MS, payload(2), rel=1.2)
    assert got.long_gap == (LONG_GAP_MS + 20, LONG_GAP_MS)
    assert track.gaps == [(20, LONG_GAP_MS - 20), (LONG_GAP_MS + 20, LONG_GAP_MS)]


def test_late_or_repeated_audio_is_counted_and_dropped_its_slot_already_filled() -> None:
    track = InboundTrack()
    track.receive(0, payload(0), rel=0.03)
    track.receive(40, payload(2), rel=0.07)  # 20 ms lost: filled with silence
    before = bytes(track.codes)
    got = track.receive(20, payload(1), rel=0.08)  # it arrives after all
    assert got.frames == () and got.long_gap is None
    assert track.out_of_order == 1 and bytes(track.codes) == before
    track.receive(40, payload(2), rel=0.09)  # a repeat
    assert track.out_of_order == 2 and len(track.arrivals) == 4  # every arrival is still on record


def test_a_jump_past_the_repair_limit_is_refused_before_anything_is_recorded() -> None:
    track = InboundTrack()
    track.receive(0, payload(0), rel=0.03)
    with pytest.raises(RemoteProtocolError) as err:
        track.receive(20 + MAX_GAP_MS + 1, payload(1), rel=0.05)
    assert err.value.field == "media.timestamp"
    assert len(track.arrivals) == 1 and len(track.codes) == 160 and track.gaps == []
    track.receive(20 + MAX_GAP_MS, payload(1), rel=5.1)  # exactly at the limit: repaired
    assert track.gaps == [(20, MAX_GAP_MS)]
    with pytest.raises(RemoteProtocolError):  # also as the very first message
        InboundTrack().receive(MAX_GAP_MS + 1, payload(0), rel=6.0)


def test_audio_from_the_future_is_refused_only_when_the_line_is_checked() -> None:
    checked = InboundTrack(max_ahead_s=1.0)
    checked.receive(1000, payload(0), rel=0.1)  # 0.9 s ahead: within the limit
    with pytest.raises(RemoteProtocolError, match="ahead of the time since start"):
        checked.receive(1120, payload(1), rel=0.1)  # 1.02 s ahead
    assert len(checked.arrivals) == 1
    unchecked = InboundTrack()  # a replay feeds recorded audio faster than real time
    for i in range(10):
        unchecked.receive(20 * i, payload(i), rel=0.0)
    assert len(unchecked.arrivals) == 10
