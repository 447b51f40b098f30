"""Twilio Media Streams wire messages: one frozen dataclass per message, in and out. No I/O.

Each message has `parse(dict)` (validates every field; Twilio sends numbers as *strings*, we keep them as
ints) and `serialize() -> str` (emits strings again, exactly as Twilio does, so the carrier emulator can
play Twilio's part with the same classes). `parse_inbound` / `parse_outbound` turn one text frame into a
message or raise `RemoteProtocolError` with Twilio's code 31951; `parse_outbound` also rejects extra
fields, as Twilio does. Facts: shared/reference/protocol.md section C.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, TypeAlias

import orjson

from bridge.errors import INVALID_MESSAGE, RemoteProtocolError

_Obj: TypeAlias = dict[str, Any]
_MAX_DIGITS = 18  # a numeric string longer than this is garbage, and int() of it would be slow
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
MULAW_8K_MONO = ("audio/x-mulaw", 8000, 1)  # the only format Twilio streams ("always", section C)


# --- field validation: each raises RemoteProtocolError(31951) naming the dotted field ---------------


def _invalid(field: str | None, reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, code=INVALID_MESSAGE, field=field)


def _obj(d: _Obj, key: str, where: str = "") -> _Obj:
    v = d.get(key)
    if not isinstance(v, dict):
        raise _invalid(where + key, "missing or not an object")
    return v


def _str(d: _Obj, key: str, where: str = "") -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise _invalid(where + key, "missing or not a string")
    return v


def _sid(d: _Obj, key: str = "streamSid", where: str = "") -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise _invalid(where + key, "missing or empty SID")
    return v


def _int(d: _Obj, key: str, where: str = "") -> int:
    v = d.get(key)
    if isinstance(v, str):  # Twilio's way: "sequenceNumber": "4"
        if 0 < len(v) <= _MAX_DIGITS and v.isascii() and v.isdigit():
            return int(v)
    elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**_MAX_DIGITS:
        return v  # tolerated: a plain JSON number (mediaFormat.sampleRate is one)
    raise _invalid(where + key, "missing or not a non-negative integer")


def _b64(d: _Obj, key: str, where: str = "") -> bytes:
    v = _str(d, key, where)
    try:
        return base64.b64decode(v, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise _invalid(where + key, "not valid base64") from None


def _only(d: _Obj, allowed: frozenset[str], where: str = "") -> None:
    extra = d.keys() - allowed
    if extra:
        raise _invalid(where + sorted(extra)[0], "unexpected field")


def _b64encode(payload: bytes) -> str:
    return binascii.b2a_base64(payload, newline=False).decode("ascii")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


@lru_cache(maxsize=512)
def _q(s: str) -> str:
    """JSON string literal; cached because SIDs, tracks and mark names repeat every frame."""
    return json.dumps(s)


@lru_cache(maxsize=512)
def _media_head(stream_sid: str) -> str:
    # Outbound media is 50 frames/s per call: a prebuilt prefix plus the base64 (whose alphabet needs
    # no JSON escaping) is several times cheaper than json.dumps.
    return '{"event":"media","streamSid":' + _q(stream_sid) + ',"media":{"payload":"'


# --- Twilio -> server ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str = "Call"
    version: str = "1.0.0"
    event: ClassVar[str] = "connected"

    @classmethod
    def parse(cls, d: _Obj) -> Connected:
        return cls(_str(d, "protocol"), _str(d, "version"))

    def serialize(self) -> str:
        return _dumps({"event": "connected", "protocol": self.protocol, "version": self.version})


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...] = ("inbound",)
    media_format: MediaFormat = MediaFormat()
    custom_parameters: dict[str, str] = field(default_factory=dict)  # the <Parameter>s of <Stream>
    event: ClassVar[str] = "start"

    @classmethod
    def parse(cls, d: _Obj) -> Start:
        s = _obj(d, "start")
        sid = _sid(s, where="start.")
        if d.get("streamSid", sid) != sid:
            raise _invalid("streamSid", "differs from start.streamSid")
        tracks = s.get("tracks")
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise _invalid("start.tracks", "missing or not a list of strings")
        mf = _obj(s, "mediaFormat", "start.")
        w = "start.mediaFormat."
        fmt = MediaFormat(_str(mf, "encoding", w), _int(mf, "sampleRate", w), _int(mf, "channels", w))
        params = s.get("customParameters", {})
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise _invalid("start.customParameters", "not an object of strings")
        return cls(
            _int(d, "sequenceNumber"),
            sid,
            _sid(s, "accountSid", "start."),
            _sid(s, "callSid", "start."),
            tuple(tracks),
            fmt,
            dict(params),
        )

    def serialize(self) -> str:
        fmt = self.media_format
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": list(self.tracks),
            "mediaFormat": {
                "encoding": fmt.encoding,
                "sampleRate": fmt.sample_rate,
                "channels": fmt.channels,
            },
            "customParameters": dict(self.custom_parameters),
        }
        seq = str(self.sequence_number)
        return _dumps({"event": "start", "sequenceNumber": seq, "start": start, "streamSid": self.stream_sid})


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes  # raw mu-law, base64-decoded
    event: ClassVar[str] = "media"

    @classmethod
    def parse(cls, d: _Obj) -> Media:
        m = _obj(d, "media")
        return cls(
            _int(d, "sequenceNumber"),
            _sid(d),
            _str(m, "track", "media."),
            _int(m, "chunk", "media."),
            _int(m, "timestamp", "media."),
            _b64(m, "payload", "media."),
        )

    def serialize(self) -> str:
        return (
            f'{{"event":"media","sequenceNumber":"{self.sequence_number}","media":{{"track":{_q(self.track)},'
            f'"chunk":"{self.chunk}","timestamp":"{self.timestamp_ms}","payload":"{_b64encode(self.payload)}"}},'
            f'"streamSid":{_q(self.stream_sid)}}}'
        )


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    track: str
    digit: str
    event: ClassVar[str] = "dtmf"

    @classmethod
    def parse(cls, d: _Obj) -> Dtmf:
        t = _obj(d, "dtmf")
        digit = _str(t, "digit", "dtmf.")
        if digit not in _DTMF_DIGITS:
            raise _invalid("dtmf.digit", "not a DTMF digit")
        return cls(_int(d, "sequenceNumber"), _sid(d), _str(t, "track", "dtmf."), digit)

    def serialize(self) -> str:
        dtmf = {"track": self.track, "digit": self.digit}
        seq = str(self.sequence_number)
        return _dumps({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": seq, "dtmf": dtmf})


@dataclass(frozen=True, slots=True)
class Mark:
    """The echo of a mark we sent: the audio before it finished playing, or was cleared."""

    sequence_number: int
    stream_sid: str
    name: str
    event: ClassVar[str] = "mark"

    @classmethod
    def parse(cls, d: _Obj) -> Mark:
        return cls(_int(d, "sequenceNumber"), _sid(d), _str(_obj(d, "mark"), "name", "mark."))

    def serialize(self) -> str:
        seq = str(self.sequence_number)
        return _dumps(
            {
                "event": "mark",
                "sequenceNumber": seq,
                "streamSid": self.stream_sid,
                "mark": {"name": self.name},
            }
        )


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    event: ClassVar[str] = "stop"

    @classmethod
    def parse(cls, d: _Obj) -> Stop:
        s = _obj(d, "stop")
        return cls(
            _int(d, "sequenceNumber"), _sid(d), _sid(s, "accountSid", "stop."), _sid(s, "callSid", "stop.")
        )

    def serialize(self) -> str:
        stop = {"accountSid": self.account_sid, "callSid": self.call_sid}
        seq = str(self.sequence_number)
        return _dumps({"event": "stop", "sequenceNumber": seq, "stop": stop, "streamSid": self.stream_sid})


# --- server -> Twilio ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    stream_sid: str
    payload: bytes  # raw mu-law/8000, no header
    event: ClassVar[str] = "media"

    @classmethod
    def parse(cls, d: _Obj) -> OutboundMedia:
        _only(d, frozenset({"event", "streamSid", "media"}))
        m = _obj(d, "media")
        _only(m, frozenset({"payload"}), "media.")
        return cls(_sid(d), _b64(m, "payload", "media."))

    def serialize(self) -> str:
        return _media_head(self.stream_sid) + _b64encode(self.payload) + '"}}'


@dataclass(frozen=True, slots=True)
class OutboundMark:
    stream_sid: str
    name: str
    event: ClassVar[str] = "mark"

    @classmethod
    def parse(cls, d: _Obj) -> OutboundMark:
        _only(d, frozenset({"event", "streamSid", "mark"}))
        m = _obj(d, "mark")
        _only(m, frozenset({"name"}), "mark.")
        return cls(_sid(d), _str(m, "name", "mark."))

    def serialize(self) -> str:
        return f'{{"event":"mark","streamSid":{_q(self.stream_sid)},"mark":{{"name":{_q(self.name)}}}}}'


@dataclass(frozen=True, slots=True)
class Clear:
    stream_sid: str
    event: ClassVar[str] = "clear"

    @classmethod
    def parse(cls, d: _Obj) -> Clear:
        _only(d, frozenset({"event", "streamSid"}))
        return cls(_sid(d))

    def serialize(self) -> str:
        return f'{{"event":"clear","streamSid":{_q(self.stream_sid)}}}'


InboundMessage: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop
OutboundMessage: TypeAlias = OutboundMedia | OutboundMark | Clear

_INBOUND: dict[str, Callable[[_Obj], InboundMessage]] = {
    c.event: c.parse for c in (Connected, Start, Media, Dtmf, Mark, Stop)
}
_OUTBOUND: dict[str, Callable[[_Obj], OutboundMessage]] = {
    c.event: c.parse for c in (OutboundMedia, OutboundMark, Clear)
}


def _load(text: str) -> tuple[_Obj, str]:
    # orjson: 50 frames a second per call each way, and its parse is ~3x cheaper than json.loads
    # (6.0 -> 1.9 us for a media frame, benchmarks/README.md). It is also stricter, which suits a
    # validator: NaN, Infinity and lone surrogates are errors, and deep nesting is a ValueError.
    try:
        d = orjson.loads(text)
    except (ValueError, RecursionError):
        raise _invalid(None, "not JSON") from None
    if not isinstance(d, dict):
        raise _invalid(None, "not a JSON object")
    event = d.get("event")
    if not isinstance(event, str):
        raise _invalid("event", "missing or not a string")
    return d, event


def parse_inbound(text: str) -> InboundMessage:
    """Parse one Twilio -> server text frame. Raises RemoteProtocolError (31951) if invalid."""
    d, event = _load(text)
    parse = _INBOUND.get(event)
    if parse is None:
        raise _invalid("event", f"unknown event {event[:32]!r}")
    return parse(d)


def parse_outbound(text: str) -> OutboundMessage:
    """Parse one server -> Twilio text frame, as Twilio would (extra fields are errors too)."""
    d, event = _load(text)
    parse = _OUTBOUND.get(event)
    if parse is None:
        raise _invalid("event", f"unknown event {event[:32]!r}")
    return parse(d)
