"""One call's live WebSocket session to a Moshi server: the `moshi-server` backend's per-call half.

`MoshiServerBackend.open_session` (moshi_server.py) connects and waits for the handshake, then hands
the open socket to a `MoshiServerSession`. From then on two tasks own the socket:

- the *reader* receives every message, decodes audio into a `FrameCutter` (at most
  `max_buffer_frames` ready) and keeps text pieces (at most `max_text_pieces`, each cut to
  `max_text_chars`); the socket itself refuses messages over `max_message_bytes`; empty messages,
  text frames and kinds a call does not use are counted in `ignored`, never fatal;
- the *writer* sends the Ogg pages `process()` queued (at most `max_send_frames`; beyond that a frame
  is dropped before it is encoded, so the Ogg stream stays whole).

`process()` therefore never waits on the network: it encodes one frame (~0.5 ms of CPU, measured in
`encode_ms`), queues it, and returns whatever whole frames and text the reader has collected since the
last step (zero or more). Anything that stops the audio sets `ended` to a reason naming the server,
e.g. ``moshi server ws://10.0.0.5:8998/api/chat: closed the connection mid-call (code 1006)``: a close,
an error message, audio that does not decode, or a stall (no audio back for `stall_after_s` while we
keep sending; `first_audio_timeout_s` for the first). The session then returns nothing more.

What the bridge can see of time (the server's own step times are not in the protocol):
- `handshake_ms`: from starting to connect until the handshake arrived;
- `first_audio_ms`: from the handshake until the first decoded audio sample that can answer us
  (audio before our first frame is another call's, see `stale_samples`);
- send->receive lag per frame (`LagMeter`): the k-th frame received back paired with the k-th sent,
  see its docstring for what that includes and when the pairing breaks;
- `encode_ms` / `decode_ms`: our CPU time for the Opus round trip, per frame;
- `ping_ms`: the socket's round trip (WebSocket pings, now and every 5 s); with one Opus pass's delay
  (`codec_delay_ms`, 6.5 ms) it gives `path_added_ms()`, what this path adds to first audio beside an
  in-process model (benchmarks/moshi_server_latency.py measures the whole round trip against a
  zero-compute server: two codec passes, 13 ms, plus the socket).
`step_ms` stays None in every StepOutput: that is model compute time, which only the server knows.

This module must never block the event loop, and every wait in it has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.backends.base import FRAME_SAMPLES, Audio, BackendError, BackendSession, StepOutput, frame_pcm
from bridge.backends.moshi_pool import ServerSpec, parse_server_urls
from bridge.backends.moshi_protocol import (
    FrameCutter,
    Handshake,
    Kind,
    LagMeter,
    Message,
    OpusDecoder,
    OpusEncoder,
    ServerProtocolError,
    bounded_text,
    codec_delay_ms,
)

__all__ = ["MoshiServerConfig", "MoshiServerSession", "close_reason"]

log = logging.getLogger(__name__)

STEPS_PER_SECOND = 12.5
PING_EVERY_S = 5.0
PING_TIMEOUT_S = 5.0
LOCAL_WEB_HINT = (
    "; moshi_mlx local_web stops answering after its --steps limit (4000 by default), counted over "
    "every client since it started: restart it"
)


@dataclass(frozen=True, slots=True)
class MoshiServerConfig:
    """Which servers, and every bound and timeout of a session. Built from settings or by tests."""

    servers: tuple[ServerSpec, ...]
    connect_timeout_s: float = 5.0  # TCP + TLS + WebSocket upgrade
    handshake_timeout_s: float = 10.0  # upgrade done -> the protocol's handshake message
    first_audio_timeout_s: float = 10.0  # first frame sent -> first audio back
    stall_after_s: float = 5.0  # no audio back for this long while we keep sending
    close_timeout_s: float = 2.0
    max_message_bytes: int = 256 * 1024  # an 80 ms Ogg page is ~300 bytes
    max_text_chars: int = 200
    max_text_pieces: int = 256
    max_buffer_frames: int = 25  # 2 s of decoded audio not yet taken by process()
    max_send_frames: int = 25  # 2 s of our audio not yet on the wire
    budget_grace_steps: int = 13  # end ~1 s before the budget, as the in-process backend does

    @classmethod
    def from_settings(cls, settings: Any) -> MoshiServerConfig:
        urls = getattr(settings, "moshi_server_urls", None)
        if not urls:
            raise BackendError("the moshi-server backend needs MOSHI_SERVER_URLS (ws://host:port)")
        try:
            return cls(servers=parse_server_urls(urls))
        except ValueError as err:
            raise BackendError(str(err)) from None


class MoshiServerSession(BackendSession):
    """One call's WebSocket session, live from the start: made by `MoshiServerBackend.open_session`
    with a socket that has already delivered the handshake."""

    def __init__(
        self,
        config: MoshiServerConfig,
        server: ServerSpec,
        call_id: str,
        max_seconds: float,
        ws: ClientConnection,
        handshake: Handshake,
        handshake_ms: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[str], None] = lambda reason: None,
        on_closed: Callable[[MoshiServerSession], None] = lambda session: None,
    ) -> None:
        """`on_error` hears the server's failures (for the pool's `last_error`), `on_closed` the
        session's end (to give its slot back); both are called at most once."""
        cfg = config
        self.call_id = call_id
        self.server = server
        self.url = server.display
        self.ended = None
        self.handshake = handshake
        self.handshake_ms = handshake_ms
        self.first_audio_ms: float | None = None
        self.budget_steps = max(1, math.ceil(max_seconds * STEPS_PER_SECOND))
        self._end_at = self.budget_steps - min(cfg.budget_grace_steps, self.budget_steps // 4)
        self._on_error = on_error
        self._on_closed = on_closed
        self._cfg = cfg
        self._ws = ws
        self._clock = clock
        self._encoder = OpusEncoder()
        self._decoder = OpusDecoder()
        self._cutter = FrameCutter(cfg.max_buffer_frames)
        self._text: deque[str] = deque()
        self._ready = asyncio.Event()  # frames or text arrived since the bridge last took them
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(cfg.max_send_frames)
        self.lag = LagMeter()
        self.encode_ms: deque[float] = deque(maxlen=20_000)
        self.decode_ms: deque[float] = deque(maxlen=20_000)
        self.frames_sent = 0
        self.frames_received = 0
        self.send_dropped = 0
        self.text_dropped = 0
        self.ignored: dict[str, int] = {}  # messages discarded, by kind
        # Audio and text that arrive before our first frame was sent cannot answer this call: moshi_mlx
        # local_web never resets between clients and sends the previous call's leftovers (its answers
        # to frames still queued when that caller hung up) to the next one. Decoded (the Ogg stream
        # must stay in step), then dropped and counted, never played to this caller.
        self.stale_samples = 0
        self.stale_text = 0
        self._opened_at = self._clock()
        self._first_sent_at: float | None = None
        self._last_audio_at: float | None = None
        self._closed = False
        # the remote path's share of a latency: a codec pass each way (measured on ours, see
        # codec_delay_ms) and half the socket's round trip each way (pinged, see _probe)
        self.codec_delay_ms = codec_delay_ms()
        self.ping_ms: deque[float] = deque(maxlen=64)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name=f"moshi-server-read-{call_id}"),
            loop.create_task(self._write(), name=f"moshi-server-write-{call_id}"),
            loop.create_task(self._probe(), name=f"moshi-server-probe-{call_id}"),
        ]

    # -- the step --------------------------------------------------------------------------------

    async def process(self, frame: Audio) -> StepOutput:
        pcm = frame_pcm(frame, self.call_id)
        if self.ended is not None or self._closed:
            return StepOutput()
        now = self._clock()
        self._send(pcm, now)
        self._check_stall(now)
        if self.ended is None and self.frames_sent >= self._end_at:
            self._end(
                f"budget_exhausted: {self.frames_sent} of {self.budget_steps} steps "
                f"({self.budget_steps / STEPS_PER_SECOND:.1f} s) used",
                prefix=False,
            )
        return self.take_ready()

    @property
    def frames_ready(self) -> asyncio.Event:
        return self._ready

    def take_ready(self) -> StepOutput:
        self._ready.clear()
        out = StepOutput(frames=self._cutter.take_all(), text=list(self._text))
        self._text.clear()
        return out

    def _send(self, pcm: Audio, now: float) -> None:
        if self._outbox.full():  # the server does not read as fast as real time: keep the Ogg stream whole
            self.send_dropped += 1
            if self.send_dropped == 1:
                log.warning("call %s: %s is not reading our audio fast enough", self.call_id, self.url)
            return
        started = time.perf_counter()
        page = self._encoder.encode(pcm)
        self.encode_ms.append((time.perf_counter() - started) * 1000.0)
        if self._first_sent_at is None:
            self._first_sent_at = now
        self.frames_sent += 1
        self.lag.sent(now)
        if page:
            self._outbox.put_nowait(Message.audio(page).serialize())

    def _check_stall(self, now: float) -> None:
        if self._first_sent_at is None:
            return
        if self._last_audio_at is None:
            waited, limit, what = now - self._first_sent_at, self._cfg.first_audio_timeout_s, "no audio yet"
        else:
            waited, limit, what = now - self._last_audio_at, self._cfg.stall_after_s, "no audio"
        if waited > limit:
            hint = LOCAL_WEB_HINT if self.handshake.protocol_version is None else ""
            self._end(f"stalled: {what} for {waited:.1f} s while we sent {self.frames_sent} frames{hint}")

    # -- the socket's two tasks ------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                raw = await self._ws.recv()
                if isinstance(raw, str) or not raw:  # not a protocol message: counted, not fatal
                    self._ignore("text frame" if isinstance(raw, str) else "empty")
                    continue
                self._on_message(Message.parse(raw))
        except ConnectionClosed as exc:
            if not self._closed:
                self._end(close_reason(exc, self._cfg.max_message_bytes, "mid-call"))
        except ServerProtocolError as err:
            self._end(str(err))
        except Exception as err:  # a bug here must end this call, never hang it
            log.exception("call %s: moshi server reader failed", self.call_id)
            self._end(f"reader failed: {type(err).__name__}: {err}")
        finally:
            if not self._closed:
                await self._ws.close()  # bounded by the connection's close_timeout

    def _on_message(self, msg: Message) -> None:
        if msg.kind == Kind.AUDIO:
            started = time.perf_counter()
            pcm = self._decoder.decode(msg.payload)
            self.decode_ms.append((time.perf_counter() - started) * 1000.0)
            if pcm.shape[0] == 0:
                return
            if self._first_sent_at is None:  # see `stale_samples`
                self.stale_samples += int(pcm.shape[0])
                return
            now = self._clock()
            if self._last_audio_at is None:
                self.first_audio_ms = (now - self._opened_at) * 1000.0
            self._last_audio_at = now
            frames = self._cutter.push(pcm)
            self.frames_received += frames
            self.lag.received(now, frames)
            if frames:
                self._ready.set()
        elif msg.kind == Kind.TEXT:
            if self._first_sent_at is None:
                self.stale_text += 1
                return
            if len(self._text) >= self._cfg.max_text_pieces:
                self.text_dropped += 1
                return
            piece = bounded_text(msg.payload, self._cfg.max_text_chars)
            if piece:
                self._text.append(piece)
                self._ready.set()
        elif msg.kind == Kind.ERROR:
            raise ServerProtocolError(f"sent an error: {bounded_text(msg.payload, self._cfg.max_text_chars)}")
        else:  # handshake again, control, metadata, ping, unknown kinds: nothing a phone call uses
            self._ignore(Kind(msg.kind).name.lower() if msg.known else f"kind {msg.kind}")

    def _ignore(self, what: str) -> None:
        if what not in self.ignored and len(self.ignored) >= 16:  # at most 16 names: 256 kinds exist
            what = "other"
        self.ignored[what] = self.ignored.get(what, 0) + 1

    async def _write(self) -> None:
        try:
            while True:
                await self._ws.send(await self._outbox.get())
        except ConnectionClosed as exc:
            if not self._closed:
                self._end(close_reason(exc, self._cfg.max_message_bytes, "mid-call"))
        except Exception as err:
            log.exception("call %s: moshi server writer failed", self.call_id)
            self._end(f"writer failed: {type(err).__name__}: {err}")

    async def _probe(self) -> None:
        """The socket's round trip: a WebSocket ping now and every `PING_EVERY_S` (servers answer pings
        in their web layer, not in the model's loop, so this is the network and the event loops only).
        A ping that goes unanswered is not an error here: the reader notices a dead server."""
        with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
            while not self._closed:
                sent = self._clock()
                pong = await self._ws.ping()
                await asyncio.wait_for(pong, PING_TIMEOUT_S)
                self.ping_ms.append((self._clock() - sent) * 1000.0)
                await asyncio.sleep(PING_EVERY_S)

    def path_added_ms(self) -> float | None:
        """What this path adds to the caller's first audio beside an in-process model: one Opus pass
        (the server's encoder and our decoder; its encoder taken to be libopus as ours: sphn in Kyutai's
        Python servers, libopus in the Rust one) plus half the socket's round trip (median ping); None
        before a ping came back. A reply crosses the path twice: twice this."""
        if not self.ping_ms:
            return None
        return self.codec_delay_ms + float(np.median(np.asarray(self.ping_ms))) / 2.0

    # -- ending ------------------------------------------------------------------------------------

    def _end(self, reason: str, *, prefix: bool = True) -> None:
        if self.ended is None:
            self.ended = f"moshi server {self.url}: {reason}" if prefix else reason
            log.warning("call %s: %s", self.call_id, self.ended)
            self._ready.set()  # the bridge learns of the end now, not at the next inbound frame
            if prefix:
                self._on_error(reason)

    def stats(self) -> dict[str, Any]:
        """What the bridge saw of this session (see the module docstring for each definition)."""

        def pct(values: deque[float], q: int) -> float | None:
            return float(np.percentile(np.asarray(values), q)) if values else None

        return {
            "server": self.url,
            "protocol_version": self.handshake.protocol_version,
            "model_version": self.handshake.model_version,
            "handshake_ms": self.handshake_ms,
            "first_audio_ms": self.first_audio_ms,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "frames_dropped_send": self.send_dropped,
            "frames_dropped_receive": self._cutter.dropped,
            "text_pieces_dropped": self.text_dropped,
            "messages_ignored": dict(self.ignored),
            "stale_frames_dropped": self.stale_samples // FRAME_SAMPLES,
            "stale_text_dropped": self.stale_text,
            "encode_ms_p50": pct(self.encode_ms, 50),
            "encode_ms_p99": pct(self.encode_ms, 99),
            "decode_ms_p50": pct(self.decode_ms, 50),
            "decode_ms_p99": pct(self.decode_ms, 99),
            **self.lag.summary(),
            "opus_delay_ms": self.codec_delay_ms,
            "ping_ms_p50": pct(self.ping_ms, 50),
            "path_added_ms": self.path_added_ms(),
            "ended": self.ended,
        }

    def evidence(self) -> dict[str, float]:
        """The figures of `stats()` a call's metrics keep (the report and the criteria read them)."""
        s = self.stats()
        names = {
            "backend_handshake_ms": "handshake_ms",
            "backend_first_audio_ms": "first_audio_ms",
            "backend_lag_ms_p50": "lag_ms_p50",
            "backend_lag_ms_p95": "lag_ms_p95",
            "backend_lag_ms_p99": "lag_ms_p99",
            "opus_encode_ms_p50": "encode_ms_p50",
            "opus_decode_ms_p50": "decode_ms_p50",
            "backend_stale_frames": "stale_frames_dropped",
            "backend_ping_ms_p50": "ping_ms_p50",
            "opus_delay_ms": "opus_delay_ms",
            "backend_path_added_ms": "path_added_ms",
        }
        out = {name: float(s[key]) for name, key in names.items() if isinstance(s.get(key), (int, float))}
        dropped = (s.get("frames_dropped_send") or 0) + (s.get("frames_dropped_receive") or 0)
        out["backend_frames_dropped"] = float(dropped)
        return {k: v for k, v in out.items() if math.isfinite(v)}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # websockets bounds the closing handshake by close_timeout, then drops the TCP connection
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), self._cfg.close_timeout_s + 1.0)
        self._on_closed(self)
        log.info("call %s: moshi server session closed: %s", self.call_id, self.stats())


def close_reason(exc: ConnectionClosed, max_bytes: int, when: str) -> str:
    """Why the socket closed, in words: who closed it, the close code, the peer's reason (bounded)."""
    if exc.sent is not None and exc.sent.code == 1009:
        return f"sent a message over the {max_bytes}-byte limit; we closed the connection (code 1009)"
    if exc.rcvd is not None:
        said = bounded_text(exc.rcvd.reason.encode(), 120)
        return f"closed the connection {when} (code {exc.rcvd.code}{': ' + said if said else ''})"
    if exc.sent is not None:
        return f"the connection was closed {when} (we sent code {exc.sent.code})"
    return f"closed the connection {when} (code 1006)"  # no close frame either way: TCP reset or EOF
