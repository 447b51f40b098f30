"""Sans-I/O Twilio Media Streams protocol: the wire messages and the server side of one stream.

Rules of this module: no I/O, no clock reads, no sleeps; the only side effect is logging through
`logging`. Facts are from shared/reference/protocol.md section C (Twilio's websocket-messages docs).

Theory of operation (the python-websockets / h11 pattern):

- Each Twilio message is a frozen dataclass with `parse(dict)` (validates every field; Twilio sends
  numbers as *strings*, we keep them as ints) and `serialize() -> str` (emits strings again, exactly as
  Twilio does, so the carrier emulator can play Twilio's part with the same classes).
- `parse_inbound` / `parse_outbound` turn one text frame into a message or raise `RemoteProtocolError`
  with Twilio's code 31951. `parse_outbound` also rejects extra fields, as Twilio does.
- `MediaStream` is the server side of one stream. Feed it frames (`receive_text`, `receive_bytes`),
  then drain `events_received()`; ask it to send (`send_media`, `send_mark`, `send_clear`), then
  drain `data_to_send()` and write those strings as text frames. Nothing it receives can make it
  raise: a bad frame is dropped, counted in `errors`, remembered in `error_log`, and when the peer
  sends only garbage `close_reason` says why the socket should be closed. Sending in the wrong state
  is *our* bug and raises `LocalProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, TypeAlias

from bridge.errors import BINARY_FRAME, INVALID_MESSAGE, LocalProtocolError, RemoteProtocolError

logger = logging.getLogger(__name__)

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
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested thousands deep
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


# --- the server side of one stream --------------------------------------------------------------------


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


_S = StreamState
# What each state accepts and where it goes; a (state, message) pair not listed is a remote error and
# the frame is dropped. `connected` is optional but must precede `start`. No transition goes back, so
# the state never regresses.
_TRANSITIONS: dict[tuple[StreamState, type[InboundMessage]], StreamState] = {
    (_S.AWAITING_START, Connected): _S.AWAITING_START,
    (_S.AWAITING_START, Start): _S.STREAMING,
    (_S.STREAMING, Media): _S.STREAMING,
    (_S.STREAMING, Dtmf): _S.STREAMING,
    (_S.STREAMING, Mark): _S.STREAMING,
    (_S.STREAMING, Stop): _S.STOPPED,
}


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    code: int
    reason: str
    field: str | None


class MediaStream:
    """The server side of one Twilio Media Stream, fed frames and drained of events and frames.

    Calling contract:
    - After `receive_text()` / `receive_bytes()` you must call `events_received()`, then check
      `close_reason`: when it is set, close the socket with it (the peer sends only garbage).
    - After `send_media()` / `send_mark()` / `send_clear()` you must call `data_to_send()` and write
      each string as one text frame, in order.
    - Receiving never raises. Sending outside STREAMING raises `LocalProtocolError` (a bug of ours:
      before `start` there is no streamSid; after `stop` Twilio no longer listens).

    Close limits (documented choices): `max_errors_before_start` (default 10) invalid frames before a
    valid `start` - Twilio sends `connected` and `start` first thing, so a peer that cannot is not
    Twilio; `max_consecutive_errors` (default 50, one second of 20 ms frames) invalid frames in a row
    with no valid one between. A bad `mediaFormat` in `start` closes at once: we only speak mu-law/8000.
    """

    ERROR_LOG_SIZE = 16
    _LOGGED_ERRORS = 5  # log the first few at warning level, the rest at debug: no log floods

    def __init__(
        self,
        *,
        max_frame_bytes: int = 64 * 1024,
        max_errors_before_start: int = 10,
        max_consecutive_errors: int = 50,
        label: str = "",
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_errors_before_start = max_errors_before_start
        self.max_consecutive_errors = max_consecutive_errors
        self.label = label  # e.g. the call id, for log lines
        self.state = StreamState.AWAITING_START
        self.connected: Connected | None = None
        self.start: Start | None = None
        self.stream_sid: str | None = None
        self.errors = 0
        self.error_log: deque[ErrorRecord] = deque(maxlen=self.ERROR_LOG_SIZE)
        self.close_reason: str | None = None
        self.frames_received = 0
        self.frames_sent = 0
        self.sequence_gaps = 0  # discontinuities in sequenceNumber: skipped, repeated or reordered
        self._last_seq: int | None = None
        self._consecutive_errors = 0
        self._errors_before_start = 0
        self._events: list[InboundMessage] = []
        self._outbox: list[str] = []
        self._media_head = ""

    # -- receiving --

    def receive_text(self, text: str) -> None:
        """Feed one text frame. Then call `events_received()` and check `close_reason`."""
        self.frames_received += 1
        n = len(text)  # characters <= UTF-8 bytes <= 4 * characters: encode only when it can matter
        if n > self.max_frame_bytes or (
            4 * n > self.max_frame_bytes and len(text.encode("utf-8", "surrogatepass")) > self.max_frame_bytes
        ):
            self._remote_error(RemoteProtocolError(f"frame over {self.max_frame_bytes} bytes"))
            return
        try:
            msg = parse_inbound(text)
            self._accept(msg)
        except RemoteProtocolError as e:
            self._remote_error(e)

    def receive_bytes(self, data: bytes) -> None:
        """Feed one binary frame: always an error (31950), Twilio sends text frames only."""
        self.frames_received += 1
        self._remote_error(RemoteProtocolError(f"binary frame ({len(data)} bytes)", code=BINARY_FRAME))

    def events_received(self) -> list[InboundMessage]:
        """Drain the valid messages received since the last call, in order."""
        events, self._events = self._events, []
        return events

    def _accept(self, msg: InboundMessage) -> None:
        nxt = _TRANSITIONS.get((self.state, type(msg)))
        if nxt is None:
            raise _invalid("event", f"unexpected {msg.event!r} while {self.state.value}")
        if isinstance(msg, Connected):
            if self.connected is not None:
                raise _invalid("event", "duplicate 'connected'")
            self.connected = msg
        elif isinstance(msg, Start):
            fmt = msg.media_format
            if (fmt.encoding, fmt.sample_rate, fmt.channels) != MULAW_8K_MONO:
                self.close_reason = self.close_reason or f"unsupported media format {fmt}"
                raise _invalid("start.mediaFormat", f"unsupported {fmt}")
            self.start, self.stream_sid = msg, msg.stream_sid
            self._media_head = _media_head(msg.stream_sid)
        elif msg.stream_sid != self.stream_sid:
            raise _invalid("streamSid", "not this stream's SID")
        if not isinstance(msg, Connected):
            self._track_sequence(msg.sequence_number)
        self.state = nxt
        self._consecutive_errors = 0
        self._events.append(msg)

    def _track_sequence(self, seq: int) -> None:
        last = self._last_seq
        if last is not None and seq != last + 1:
            self.sequence_gaps += 1
        if last is None or seq > last:
            self._last_seq = seq

    def _remote_error(self, e: RemoteProtocolError) -> None:
        self.errors += 1
        self._consecutive_errors += 1
        self.error_log.append(ErrorRecord(e.code, e.reason, e.field))
        level = logging.WARNING if self.errors <= self._LOGGED_ERRORS else logging.DEBUG
        logger.log(level, "stream %s: dropped frame: %s", self.label or self.stream_sid, e)
        if self.state is StreamState.AWAITING_START:
            self._errors_before_start += 1
        if self.close_reason is not None:
            return
        if self._errors_before_start >= self.max_errors_before_start:
            self.close_reason = f"{self._errors_before_start} invalid frames before a valid start (last: {e})"
        elif self._consecutive_errors >= self.max_consecutive_errors:
            self.close_reason = f"{self._consecutive_errors} invalid frames in a row (last: {e})"

    # -- sending --

    def send_media(self, payload: bytes) -> None:
        """Queue raw mu-law/8000 audio (any length). Then call `data_to_send()`."""
        self._require_streaming("send media")
        self._outbox.append(self._media_head + _b64encode(payload) + '"}}')

    def send_mark(self, name: str) -> None:
        """Queue a mark; Twilio echoes it when the audio sent before it has played (or was cleared)."""
        self._require_streaming("send a mark")
        self._outbox.append(OutboundMark(self._sid(), name).serialize())

    def send_clear(self) -> None:
        """Queue a clear: Twilio drops its buffered audio and echoes every pending mark."""
        self._require_streaming("send clear")
        self._outbox.append(Clear(self._sid()).serialize())

    def data_to_send(self) -> list[str]:
        """Drain the text frames to write, in order."""
        out, self._outbox = self._outbox, []
        self.frames_sent += len(out)
        return out

    def _require_streaming(self, what: str) -> None:
        if self.state is StreamState.AWAITING_START:
            raise LocalProtocolError(f"cannot {what} before the stream's start (no streamSid yet)")
        if self.state is StreamState.STOPPED:
            raise LocalProtocolError(f"cannot {what} after the stream stopped")

    def _sid(self) -> str:
        assert self.stream_sid is not None  # guaranteed by _require_streaming
        return self.stream_sid
