"""Sans-I/O Twilio Media Streams protocol: the wire messages and the server side of one stream.

Rules of this module: no I/O, no clock reads, no sleeps; the only side effect is logging through
`logging`. Facts are from shared/reference/protocol.md section C (Twilio's websocket-messages docs).

Theory of operation (the python-websockets / h11 pattern):

- The wire messages live in `bridge.messages` (re-exported here): frozen dataclasses with
  `parse`/`serialize`, and `parse_inbound` / `parse_outbound`.
- `MediaStream` is the server side of one stream. Feed it frames (`receive_text`, `receive_bytes`),
  then drain `events_received()`; ask it to send (`send_media`, `send_mark`, `send_clear`), then
  drain `data_to_send()` and write those strings as text frames. Nothing it receives can make it
  raise: a bad frame is dropped, counted in `errors`, remembered in `error_log`, and when the peer
  sends only garbage `close_reason` says why the socket should be closed. Sending in the wrong state
  is *our* bug and raises `LocalProtocolError`.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass

from bridge.errors import BINARY_FRAME, LocalProtocolError, RemoteProtocolError
from bridge.messages import (
    MULAW_8K_MONO,
    Clear,
    Connected,
    Dtmf,
    InboundMessage,
    Mark,
    Media,
    MediaFormat,
    OutboundMark,
    OutboundMedia,
    OutboundMessage,
    Start,
    Stop,
    _b64encode,
    _invalid,
    _media_head,
    parse_inbound,
    parse_outbound,
)

__all__ = [
    "MAX_COUNTER",
    "MAX_GAP_MS",
    "MAX_TIMESTAMP_MS",
    "MULAW_8K_MONO",
    "Clear",
    "Connected",
    "Dtmf",
    "ErrorRecord",
    "InboundMessage",
    "Mark",
    "Media",
    "MediaFormat",
    "MediaStream",
    "OutboundMark",
    "OutboundMedia",
    "OutboundMessage",
    "Start",
    "Stop",
    "StreamState",
    "parse_inbound",
    "parse_outbound",
]

logger = logging.getLogger(__name__)

#: A media frame's timestamp may run at most this far past the end of the audio before it (or past 0
#: for the first frame). Lost audio shows as such a jump (20 ms per lost frame) and is filled with
#: silence so the model's clock keeps running; a jump beyond this is not a lossy line but a broken or
#: hostile peer (one frame saying 10^8 ms would ask for 800 MB of silence): a protocol error that ends
#: the stream. Five seconds is far beyond any gap a live call survives (Twilio plays nothing meanwhile).
MAX_GAP_MS = 5_000
#: Twilio ends a call after 24 hours at most: no stream timestamp can be later than this.
MAX_TIMESTAMP_MS = 24 * 3600 * 1000
#: sequenceNumber and media.chunk count messages (50 a second): a signed 32-bit range is ~500 days.
MAX_COUNTER = 2**31 - 1


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


def _check_range(field: str, value: int, limit: int) -> int:
    if value > limit:
        raise _invalid(field, f"{value} is out of range (at most {limit})")
    return value


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
    So does a media `timestamp` that jumps more than `MAX_GAP_MS` past the audio before it. Every
    number is range-checked (`MAX_COUNTER`, `MAX_TIMESTAMP_MS`): a frame out of range is dropped.
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
        self._media_end_ms = 0  # end of the latest inbound audio, on the stream's media clock
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
            _check_range("sequenceNumber", msg.sequence_number, MAX_COUNTER)
            if isinstance(msg, Media):
                self._check_media(msg)
            self._track_sequence(msg.sequence_number)
        self.state = nxt
        self._consecutive_errors = 0
        self._events.append(msg)

    def _check_media(self, msg: Media) -> None:
        _check_range("media.chunk", msg.chunk, MAX_COUNTER)
        ts = msg.timestamp_ms
        jump = ts - self._media_end_ms
        if jump > MAX_GAP_MS:
            reason = f"media.timestamp jumped {jump} ms past the audio before it (limit {MAX_GAP_MS} ms)"
            self.close_reason = self.close_reason or reason
            raise _invalid("media.timestamp", reason)
        _check_range("media.timestamp", ts, MAX_TIMESTAMP_MS)
        self._media_end_ms = max(self._media_end_ms, ts + len(msg.payload) * 1000 // 8000)

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
