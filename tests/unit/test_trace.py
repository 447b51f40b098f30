"""The media trace file: written and read back the same, frames as they arrived, bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.inbound import InboundTrack
from bridge.trace import MediaTrace, TraceError, read_trace, trace_path, write_trace


def a_trace() -> tuple[MediaTrace, list[tuple[float, int, bytes]]]:
    """Frames through the session's own InboundTrack (lost frame 3, frame 5 repeated late)."""
    track = InboundTrack()
    sent = []
    for n, (ts, at) in enumerate([(0, 0.02), (20, 0.04), (40, 0.061), (80, 0.1), (100, 0.12), (100, 0.125)]):
        payload = bytes([n + 1]) * 160
        track.receive(ts, payload, at)
        sent.append((at, ts, payload))
    trace = MediaTrace(
        inbound_codes=np.frombuffer(bytes(track.codes), np.uint8),
        inbound_arrivals=np.array(track.arrivals, np.float64),
        inbound_sizes=np.array(track.sizes, np.int32),
        sent_codes=np.frombuffer(b"\x7f" * 480, np.uint8),
        sends=np.array([[0.1, 0.15, 0.0], [0.12, 0.17, 0.0], [0.14, 0.19, 1.0]]),
        mark_names=("m1",),
        marks=np.array([[0.12, 0.2, 0.0]]),
        clears=np.array([0.15]),
    )
    return trace, sent


def test_a_trace_reads_back_the_frames_as_they_arrived(tmp_path: Path) -> None:
    trace, sent = a_trace()
    path = trace_path(tmp_path / "c_0123456789abcdef.wav")
    assert path.name == "c_0123456789abcdef.trace.npz"
    write_trace(path, trace)
    back = read_trace(path)
    frames = list(back.frames())
    assert [(at, ts) for at, ts, _ in frames] == [(at, ts) for at, ts, _ in sent]
    assert [p for _, _, p in frames[:5]] == [p for _, _, p in sent[:5]]
    # the late repeat of timestamp 100 found its slot filled: it replays with what the slot holds
    assert frames[5][2] == sent[4][2]
    assert back.mark_names == ("m1",) and back.clears.tolist() == [0.15]
    assert np.array_equal(back.sends, trace.sends) and back.sent_codes.tobytes() == b"\x7f" * 480
    assert not list(tmp_path.glob("*.part"))  # written through a temp file renamed into place


def test_missing_foreign_and_inconsistent_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no media trace at"):
        read_trace(tmp_path / "none.trace.npz")
    junk = tmp_path / "junk.trace.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(TraceError, match="is not a media trace"):
        read_trace(junk)
    trace, _ = a_trace()
    bad = MediaTrace(**{**trace.__dict__, "inbound_sizes": trace.inbound_sizes[:-1]})
    with pytest.raises(TraceError, match="differ"):
        write_trace(tmp_path / "bad.trace.npz", bad)
    backwards = MediaTrace(**{**trace.__dict__, "inbound_arrivals": trace.inbound_arrivals[::-1].copy()})
    with pytest.raises(TraceError, match="backwards"):
        write_trace(tmp_path / "bad.trace.npz", backwards)
