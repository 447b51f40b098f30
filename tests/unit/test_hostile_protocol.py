"""Every number in an inbound frame is range-checked, and a timestamp jump past MAX_GAP_MS ends the
stream, before any of it reaches gap repair (which fills a jump with silence)."""

from __future__ import annotations

import pytest

from bridge.protocol import MAX_COUNTER, MAX_GAP_MS, MAX_TIMESTAMP_MS, Media, MediaStream, Start

SID = "MZ" + "1" * 32


def started() -> MediaStream:
    ms = MediaStream()
    ms.receive_text(Start(1, SID, "AC" + "0" * 32, "CA" + "0" * 32).serialize())
    assert ms.events_received() and ms.close_reason is None
    return ms


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (Media(MAX_COUNTER + 1, SID, "inbound", 1, 0, b"\xff" * 160), "sequenceNumber"),
        (Media(2, SID, "inbound", MAX_COUNTER + 1, 0, b"\xff" * 160), "media.chunk"),
    ],
)
def test_counters_out_of_range_are_dropped_and_counted(frame: Media, field: str) -> None:
    ms = started()
    ms.receive_text(frame.serialize())
    assert ms.events_received() == []
    assert ms.errors == 1 and ms.error_log[-1].field == field and "out of range" in ms.error_log[-1].reason
    assert ms.close_reason is None  # one bad frame is dropped, not fatal
    ms.receive_text(Media(3, SID, "inbound", 1, 0, b"\xff" * 160).serialize())
    assert len(ms.events_received()) == 1


def test_gaps_up_to_the_limit_pass_and_one_past_it_closes_the_stream() -> None:
    ms = started()
    ts = 0
    for seq in range(2, 6):  # each frame 20 ms of audio, then a gap of exactly MAX_GAP_MS
        ms.receive_text(Media(seq, SID, "inbound", seq - 1, ts, b"\xff" * 160).serialize())
        assert len(ms.events_received()) == 1
        ts += 20 + MAX_GAP_MS
    assert ms.close_reason is None
    ms.receive_text(Media(6, SID, "inbound", 5, ts + 1, b"\xff" * 160).serialize())
    assert ms.events_received() == []
    assert ms.close_reason is not None and "jumped" in ms.close_reason
    assert str(MAX_GAP_MS) in ms.close_reason


def test_late_and_repeated_timestamps_are_not_jumps() -> None:
    ms = started()
    for seq, ts in [(2, 0), (3, 40), (4, 20), (5, 20), (6, 0), (7, 60)]:
        ms.receive_text(Media(seq, SID, "inbound", seq - 1, ts, b"\xff" * 160).serialize())
    assert len(ms.events_received()) == 6 and ms.close_reason is None


@pytest.mark.parametrize("ts", [MAX_GAP_MS + 1, MAX_TIMESTAMP_MS + 1, 10**17])
def test_a_first_frame_far_from_zero_closes_the_stream(ts: int) -> None:
    ms = started()
    ms.receive_text(Media(2, SID, "inbound", 1, ts, b"\xff" * 160).serialize())
    assert ms.events_received() == [] and ms.close_reason is not None
