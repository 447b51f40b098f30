"""The sans-I/O Twilio Media Streams protocol: messages, validation, and the MediaStream object."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import BINARY_FRAME, INVALID_MESSAGE, LocalProtocolError, RemoteProtocolError
from bridge.protocol import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaFormat,
    MediaStream,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    StreamState,
    parse_inbound,
    parse_outbound,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
PAYLOAD = bytes(range(256))[:160]
B64 = base64.b64encode(PAYLOAD).decode()

# Twilio's own example frames (shared/reference/protocol.md section C), verbatim but for a real payload.
TWILIO_INBOUND = [
    '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    '{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC…","streamSid":"MZ…","callSid":"CA…",'
    ' "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
    ' "customParameters":{"k":"v"}},"streamSid":"MZ…"}',
    '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"'
    + B64
    + '"},"streamSid":"MZ…"}',
    '{"event":"dtmf","streamSid":"MZ…","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}',
    '{"event":"mark","sequenceNumber":"4","streamSid":"MZ…","mark":{"name":"my label"}}',
    '{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"AC…","callSid":"CA…"},"streamSid":"MZ…"}',
]
TWILIO_OUTBOUND = [
    '{"event":"media","streamSid":"MZ…","media":{"payload":"' + B64 + '"}}',
    '{"event":"mark","streamSid":"MZ…","mark":{"name":"resp-42-end"}}',
    '{"event":"clear","streamSid":"MZ…"}',
]


def test_twilio_example_frames_parse_to_the_right_values() -> None:
    connected, start, media, dtmf, mark, stop = (parse_inbound(t) for t in TWILIO_INBOUND)
    assert connected == Connected("Call", "1.0.0")
    assert start == Start(
        1, "MZ…", "AC…", "CA…", ("inbound",), MediaFormat("audio/x-mulaw", 8000, 1), {"k": "v"}
    )
    assert media == Media(4, "MZ…", "inbound", 2, 5, PAYLOAD)
    assert dtmf == Dtmf(5, "MZ…", "inbound_track", "1")
    assert mark == Mark(4, "MZ…", "my label")
    assert stop == Stop(5, "MZ…", "AC…", "CA…")
    assert [parse_outbound(t) for t in TWILIO_OUTBOUND] == [
        OutboundMedia("MZ…", PAYLOAD),
        OutboundMark("MZ…", "resp-42-end"),
        Clear("MZ…"),
    ]


def start_msg(sid: str = SID, seq: int = 1, **kw: Any) -> Start:
    return Start(
        seq, sid, "AC" + "1" * 32, "CA" + "2" * 32, custom_parameters={"call_id": "c1", "token": "t"}, **kw
    )


EXAMPLES = [
    Connected(),
    start_msg(),
    Start(1, SID, "AC1", "CA1", ("inbound", "outbound"), MediaFormat(), {}),
    Media(2, SID, "inbound", 1, 0, PAYLOAD),
    Media(99, SID, "inbound", 98, 1940, b""),
    Dtmf(3, SID, "inbound_track", "#"),
    Mark(4, SID, 'quote " and \\ and ünïcode'),
    Stop(5, SID, "AC1", "CA1"),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_inbound_messages_round_trip_with_numbers_as_strings(msg: Any) -> None:
    text = msg.serialize()
    assert parse_inbound(text) == msg
    d = json.loads(text)
    assert d["event"] == msg.event
    if not isinstance(msg, Connected):
        assert d["sequenceNumber"] == str(msg.sequence_number)  # Twilio sends numbers as strings
    if isinstance(msg, Media):
        assert d["media"]["chunk"] == str(msg.chunk) and d["media"]["timestamp"] == str(msg.timestamp_ms)


@pytest.mark.parametrize("msg", [OutboundMedia(SID, PAYLOAD), OutboundMark(SID, "m-1 ü"), Clear(SID)])
def test_outbound_messages_round_trip_and_match_twilio_shape(msg: Any) -> None:
    text = msg.serialize()
    assert parse_outbound(text) == msg
    shapes = {
        "media": {"event": "media", "streamSid": SID, "media": {"payload": B64}},
        "mark": {"event": "mark", "streamSid": SID, "mark": {"name": "m-1 ü"}},
        "clear": {"event": "clear", "streamSid": SID},
    }
    assert json.loads(text) == shapes[msg.event]


sids = st.text(min_size=1, max_size=40)
nums = st.integers(0, 10**18 - 1)
inbound_messages = st.one_of(
    st.builds(Connected, st.text(), st.text()),
    st.builds(
        Start,
        nums,
        sids,
        sids,
        sids,
        st.lists(st.text(), max_size=3).map(tuple),
        st.builds(MediaFormat, st.text(), nums, nums),
        st.dictionaries(st.text(), st.text(), max_size=3),
    ),
    st.builds(Media, nums, sids, st.text(), nums, nums, st.binary(max_size=400)),
    st.builds(Dtmf, nums, sids, st.text(), st.sampled_from("0123456789*#")),
    st.builds(Mark, nums, sids, st.text()),
    st.builds(Stop, nums, sids, sids, sids),
)
outbound_messages = st.one_of(
    st.builds(OutboundMedia, sids, st.binary(max_size=400)),
    st.builds(OutboundMark, sids, st.text()),
    st.builds(Clear, sids),
)


@given(inbound_messages)
def test_any_inbound_message_round_trips(msg: Any) -> None:
    assert parse_inbound(msg.serialize()) == msg


@given(outbound_messages)
def test_any_outbound_message_round_trips(msg: Any) -> None:
    assert parse_outbound(msg.serialize()) == msg


MEDIA = json.loads(Media(2, SID, "inbound", 1, 20, PAYLOAD).serialize())


def with_(d: dict[str, Any], path: str, value: Any) -> str:
    """`d` as JSON text with the field at dotted `path` set to `value` (or deleted when it is ...)."""
    d = json.loads(json.dumps(d))
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return json.dumps(d)


INVALID_FRAMES = {
    "not JSON": ("{'event': 'media'", None),
    "not an object": ('["media"]', None),
    "no event": (with_(MEDIA, "event", ...), "event"),
    "unknown event": (with_(MEDIA, "event", "video"), "event"),
    "missing payload": (with_(MEDIA, "media.payload", ...), "media.payload"),
    "missing media": (with_(MEDIA, "media", ...), "media"),
    "bad base64": (with_(MEDIA, "media.payload", "@@@="), "media.payload"),
    "bad base64 padding": (with_(MEDIA, "media.payload", "YWJ"), "media.payload"),
    "non-ASCII base64": (with_(MEDIA, "media.payload", "AAé="), "media.payload"),
    "numeric string not a number": (with_(MEDIA, "sequenceNumber", "4a"), "sequenceNumber"),
    "negative number": (with_(MEDIA, "media.chunk", -1), "media.chunk"),
    "bool as number": (with_(MEDIA, "media.timestamp", True), "media.timestamp"),
    "absurdly long number": (with_(MEDIA, "sequenceNumber", "9" * 5000), "sequenceNumber"),
    "payload not a string": (with_(MEDIA, "media.payload", 12), "media.payload"),
    "empty streamSid": (with_(MEDIA, "streamSid", ""), "streamSid"),
    "bad dtmf digit": (Dtmf(3, SID, "inbound_track", "1").serialize().replace('"1"', '"x"'), "dtmf.digit"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, None),
}


@pytest.mark.parametrize("name", INVALID_FRAMES)
def test_parse_inbound_rejects_invalid_frames_with_31951_and_the_field(name: str) -> None:
    text, field = INVALID_FRAMES[name]
    with pytest.raises(RemoteProtocolError) as info:
        parse_inbound(text)
    assert info.value.code == INVALID_MESSAGE
    assert info.value.field == field


def test_parse_outbound_rejects_extra_fields_and_inbound_only_events() -> None:
    extra = OutboundMedia(SID, PAYLOAD).serialize().replace('"media":{', '"media":{"track":"outbound",')
    for text in (extra, Clear(SID).serialize()[:-1] + ',"x":1}', Connected().serialize()):
        with pytest.raises(RemoteProtocolError):
            parse_outbound(text)


def streaming(**kw: Any) -> MediaStream:
    ms = MediaStream(**kw)
    ms.receive_text(Connected().serialize())
    ms.receive_text(start_msg().serialize())
    assert [type(e) for e in ms.events_received()] == [Connected, Start]
    assert ms.state is StreamState.STREAMING
    return ms


def media(seq: int, sid: str = SID, payload: bytes = PAYLOAD) -> str:
    return Media(seq, sid, "inbound", seq - 1, (seq - 2) * 20, payload).serialize()


def state_of(ms: MediaStream) -> StreamState:
    return ms.state  # a call, so mypy does not keep a narrowed state across receive_text()


def test_lifecycle_connected_start_media_dtmf_mark_stop() -> None:
    ms = MediaStream()
    assert state_of(ms) is StreamState.AWAITING_START and ms.stream_sid is None
    ms.receive_text(Connected().serialize())
    ms.receive_text(start_msg().serialize())
    assert state_of(ms) is StreamState.STREAMING
    assert ms.stream_sid == SID and ms.start is not None and ms.start.custom_parameters["call_id"] == "c1"
    ms.receive_text(media(2))
    ms.receive_text(Dtmf(3, SID, "inbound_track", "7").serialize())
    ms.receive_text(Mark(4, SID, "m1").serialize())
    ms.receive_text(Stop(5, SID, "AC1", "CA1").serialize())
    events = ms.events_received()
    assert [e.event for e in events] == ["connected", "start", "media", "dtmf", "mark", "stop"]
    assert ms.state is StreamState.STOPPED
    assert ms.errors == 0 and ms.sequence_gaps == 0 and ms.close_reason is None
    assert ms.events_received() == []  # drained


def test_sending_queues_valid_twilio_frames_and_drains() -> None:
    ms = streaming()
    ms.send_media(PAYLOAD)
    ms.send_mark("resp-1")
    ms.send_clear()
    frames = ms.data_to_send()
    assert [parse_outbound(f) for f in frames] == [
        OutboundMedia(SID, PAYLOAD),
        OutboundMark(SID, "resp-1"),
        Clear(SID),
    ]
    assert frames[0] == OutboundMedia(SID, PAYLOAD).serialize()
    assert ms.data_to_send() == [] and ms.frames_sent == 3


@pytest.mark.parametrize("send", ["send_media", "send_mark", "send_clear"])
def test_sending_before_start_or_after_stop_is_a_local_error(send: str) -> None:
    args = {"send_media": (PAYLOAD,), "send_mark": ("m",), "send_clear": ()}[send]
    ms = MediaStream()
    ms.receive_text(Connected().serialize())
    with pytest.raises(LocalProtocolError, match="before"):
        getattr(ms, send)(*args)
    ms = streaming()
    ms.receive_text(Stop(2, SID, "AC1", "CA1").serialize())
    with pytest.raises(LocalProtocolError, match="after"):
        getattr(ms, send)(*args)
    assert ms.data_to_send() == []


def assert_dropped(ms: MediaStream, text: str | bytes, code: int = INVALID_MESSAGE) -> None:
    state, errors = ms.state, ms.errors
    if isinstance(text, bytes):
        ms.receive_bytes(text)
    else:
        ms.receive_text(text)
    assert ms.events_received() == []
    assert ms.state is state
    assert ms.errors == errors + 1
    assert ms.error_log[-1].code == code


@pytest.mark.parametrize("name", INVALID_FRAMES)
def test_every_invalid_frame_is_counted_and_dropped_while_streaming(name: str) -> None:
    ms = streaming()
    assert_dropped(ms, INVALID_FRAMES[name][0])
    assert ms.error_log[-1].field == INVALID_FRAMES[name][1]
    ms.receive_text(media(2))  # the stream carries on
    assert len(ms.events_received()) == 1


def test_stream_level_errors_are_counted_and_dropped() -> None:
    ms = MediaStream()
    assert_dropped(ms, media(2))  # media before start
    assert_dropped(ms, Stop(2, SID, "AC1", "CA1").serialize())  # stop before start
    assert_dropped(ms, b"\x00\x01", code=BINARY_FRAME)
    ms.receive_text(start_msg().serialize())
    ms.events_received()
    assert_dropped(ms, Connected().serialize())  # connected after start
    assert_dropped(ms, start_msg(seq=2).serialize())  # a second start
    assert_dropped(ms, start_msg(sid="MZother", seq=2).serialize())
    assert_dropped(ms, media(2, sid="MZother"))  # wrong streamSid
    assert ms.error_log[-1].field == "streamSid"
    assert_dropped(ms, b"", code=BINARY_FRAME)
    assert_dropped(ms, media(2, payload=bytes(50_000)))  # base64 of 50 kB is over 64 KiB
    assert "over" in ms.error_log[-1].reason
    ms.receive_text(Stop(2, SID, "AC1", "CA1").serialize())
    assert ms.events_received()[0].event == "stop"
    assert_dropped(ms, media(3))  # after stop
    assert_dropped(ms, Stop(4, SID, "AC1", "CA1").serialize())
    assert ms.state is StreamState.STOPPED and ms.close_reason is None


def test_duplicate_connected_is_an_error_and_start_without_connected_is_accepted() -> None:
    ms = MediaStream()
    ms.receive_text(Connected().serialize())
    assert ms.events_received() == [Connected()]
    assert_dropped(ms, Connected().serialize())
    ms = MediaStream()
    ms.receive_text(start_msg().serialize())
    assert ms.state is StreamState.STREAMING and ms.errors == 0


def test_oversized_frame_limit_counts_utf8_bytes_not_characters() -> None:
    def raw_mark(name: str) -> str:  # unescaped UTF-8, as a peer may send it
        return f'{{"event":"mark","sequenceNumber":"2","streamSid":"{SID}","mark":{{"name":"{name}"}}}}'

    ms = streaming(max_frame_bytes=1000)
    small, big = raw_mark("é" * 400), raw_mark("é" * 480)
    assert len(small.encode()) < 1000 < len(big.encode()) and len(big) < 1000
    assert_dropped(ms, big)
    ms.receive_text(small)
    assert ms.events_received() == [Mark(2, SID, "é" * 400)]


def test_a_bad_media_format_closes_the_stream() -> None:
    ms = MediaStream()
    assert_dropped(ms, start_msg(media_format=MediaFormat("audio/x-l16", 16000, 1)).serialize())
    assert ms.close_reason is not None and "media format" in ms.close_reason


def test_garbage_before_start_closes_after_the_limit() -> None:
    ms = MediaStream(max_errors_before_start=10)
    for i in range(9):
        ms.receive_text("garbage")
        ms.receive_text(Connected().serialize()) if i == 0 else None
        assert ms.close_reason is None
    ms.receive_bytes(b"x")
    assert ms.close_reason is not None and "before a valid start" in ms.close_reason
    assert ms.errors == 10 and len(ms.error_log) == 10


def test_consecutive_garbage_closes_but_valid_frames_reset_the_run() -> None:
    ms = streaming(max_consecutive_errors=5)
    seq = 2
    for _ in range(3):  # 4 bad, 1 good, repeatedly: never 5 in a row
        for _ in range(4):
            ms.receive_text("{}")
        ms.receive_text(media(seq))
        seq += 1
    assert ms.close_reason is None and ms.errors == 12
    for _ in range(5):
        ms.receive_text("{}")
    assert ms.close_reason is not None and "5 invalid frames in a row" in ms.close_reason
    assert len(ms.error_log) == MediaStream.ERROR_LOG_SIZE  # bounded


def test_sequence_gaps_count_skips_and_repeats() -> None:
    ms = streaming()  # start was sequenceNumber 1
    for seq in (2, 3, 5, 6, 6, 4, 7):  # skip 4; repeat 6; late 4; 7 follows 6 as expected
        ms.receive_text(media(seq))
    assert len(ms.events_received()) == 7
    assert ms.sequence_gaps == 3


# --- property tests: nothing a peer sends can make the stream raise or go back -----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["event", "sequenceNumber", "streamSid", "media", "start", "stop", "mark", "dtmf", "payload"]
EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop", "clear", "Media", ""]


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid frame with one field replaced by, or gaining, an arbitrary JSON value."""
    msg: Any = draw(
        st.sampled_from(
            [
                Connected(),
                start_msg(),
                Media(2, SID, "inbound", 1, 0, PAYLOAD),
                Dtmf(3, SID, "t", "1"),
                Mark(4, SID, "m"),
                Stop(5, SID, "AC", "CA"),
            ]
        )
    )
    d = json.loads(msg.serialize())
    node = d
    while True:
        key = draw(st.sampled_from([*node.keys(), "extra"]))
        child = node.get(key)
        if isinstance(child, dict) and draw(st.booleans()):
            node = child
            continue
        node[key] = draw(json_values | st.sampled_from(EVENTS) | st.just(B64[:7]))
        return json.dumps(d)


jsonish_dicts = st.fixed_dictionaries(
    {"event": st.sampled_from(EVENTS) | json_values},
    optional={k: json_values | st.just(SID) | st.just("7") for k in FIELDS[1:]},
).map(json.dumps)
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=64),
    jsonish_dicts,
    mutated_frames(),
    st.sampled_from(
        [
            Connected().serialize(),
            start_msg().serialize(),
            media(2),
            media(3),
            Stop(9, SID, "AC", "CA").serialize(),
            media(4, payload=bytes(800)),
        ]
    ),
)
ORDER = [StreamState.AWAITING_START, StreamState.STREAMING, StreamState.STOPPED]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=30))
def test_arbitrary_frames_never_raise_are_counted_and_state_never_regresses(
    sequence: list[str | bytes],
) -> None:
    ms = MediaStream(max_frame_bytes=1000)  # valid frames fit; big payloads and long text do not
    events = 0
    for frame in sequence:
        before, errors = ORDER.index(ms.state), ms.errors
        if isinstance(frame, bytes):
            ms.receive_bytes(frame)
        else:
            ms.receive_text(frame)
        got = ms.events_received()
        assert len(got) + (ms.errors - errors) == 1  # every frame is exactly one event or one error
        events += len(got)
        assert ORDER.index(ms.state) >= before
    assert events + ms.errors == ms.frames_received == len(sequence)
