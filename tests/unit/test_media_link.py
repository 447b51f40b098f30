"""The media link: the one driver of a MediaStream, fed socket frames; media and marks reach the live session."""

from __future__ import annotations

import json

import pytest

from bridge.backends.echo import EchoSession
from bridge.protocol import MAX_GAP_MS, Dtmf, Start, Stop
from bridge.session import MediaLink, SessionConfig

SID = "MZ" + "2" * 32
START = Start(1, SID, "AC" + "0" * 32, "CA" + "0" * 32).serialize()


def media(seq: int, ts: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "media": {"track": "inbound", "chunk": str(seq - 1), "timestamp": str(ts), "payload": "EBAQEA=="},
        }
    )


def mark(seq: int, name: str) -> str:
    return json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}})


async def no_send(texts: list[str]) -> None:
    raise AssertionError("nothing is sent here")


def test_control_events_come_back_and_media_waits_for_a_session() -> None:
    link = MediaLink()
    assert link.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}', 0.0)
    [start] = link.receive(START, 0.0)
    assert isinstance(start, Start)
    assert link.receive(media(2, 0), 0.01) == []  # no session yet: dropped, not an error
    assert link.receive(b"\x00", 0.02) == [] and link.stream.errors == 1  # a binary frame is the peer's error
    session = link.open_session(call_id="c", backend=EchoSession(0.0), send=no_send)
    t0 = session.t0  # `start` accepted: the session's clock starts here
    assert link.receive(media(3, 20), t0 + 0.05) == []
    assert session.arrivals == [(pytest.approx(0.05), 20)]
    dtmf = json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": "4",
            "streamSid": SID,
            "dtmf": {"track": "inbound_track", "digit": "5"},
        }
    )
    [digit] = link.receive(dtmf, t0 + 0.06)
    assert isinstance(digit, Dtmf) and digit.digit == "5"
    assert link.receive(mark(5, "m9"), t0 + 0.07) == []
    assert session.playout.unknown_echoes == 1  # the echo reached the session's playout clock
    [stop] = link.receive(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": "6",
                "streamSid": SID,
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": "CA" + "0" * 32},
            }
        ),
        t0 + 0.08,
    )
    assert isinstance(stop, Stop)
    with pytest.raises(RuntimeError, match="already open"):
        link.open_session(call_id="c", backend=EchoSession(0.0), send=no_send)


def test_audio_ahead_of_the_clock_closes_the_stream_with_the_reason() -> None:
    link = MediaLink()
    link.receive(START, 0.0)
    session = link.open_session(
        call_id="c",
        backend=EchoSession(0.0),
        send=no_send,
        config=SessionConfig(max_media_ahead_s=MAX_GAP_MS / 1000),
    )
    assert link.stream.close_reason is None
    link.receive(media(2, 4_000), session.t0 + 0.01)  # within the limits of the protocol and of the line
    link.receive(media(3, 8_000), session.t0 + 0.02)  # a jump under MAX_GAP_MS, but 8 s ahead at 0.02 s
    assert (
        link.stream.close_reason is not None and "ahead of the time since start" in link.stream.close_reason
    )
    assert len(session.arrivals) == 1
