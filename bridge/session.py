"""One call's media session: the asyncio driver around the pure parts, and the only thing that drives its
`MediaStream`.

The rules live in pure modules, tested without an event loop: inbound gap repair in `bridge.inbound`,
pacing (jitter buffer, lead, marks, clear) over the playout clock in `bridge.pacer`, the recording's
blocks in `bridge.recorder`. This module only moves data between them and the outside, on one loop:

* **read** (`MediaLink.receive`, one call per socket frame, from the web layer's socket read): feeds the
  stream; media goes to `on_media` (gap repair, 80 ms frames, a bounded queue for the backend: when the
  backend falls behind the oldest frame is dropped and counted in `late_frames`), mark echoes to the
  pacer's playout clock; `start`, `dtmf` and `stop` go back to the caller, which decides about the call.
* **worker** task: feeds frames to the backend session (which runs its compute off the loop), turns each
  output frame into 20 ms mu-law chunks and queues them on the pacer.
* **sender** task: sends what `Pacer.poll` allows, every message of a wake-up in one `send` (one socket
  write in the server: at 50 calls, a write per 20 ms chunk was a tenth of the event loop), then sleeps
  until the pacer's `wake_at`, or until the worker queues audio.
* **recorder**: the sender cuts a block of the recording about once a second; a worker thread writes it
  (`CallRecording`), never the loop.

A task that dies ends the whole session (`failure`, `done`). Everything the metrics need is kept as
evidence (`evidence()`), on one monotonic clock whose origin is the moment `start` was received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bridge.backends.base import BackendSession, StepOutput
from bridge.cancel import InboundCanceller
from bridge.errors import RemoteProtocolError
from bridge.framing import OutboundPipeline
from bridge.g711 import ulaw_decode
from bridge.inbound import LONG_GAP_MS, InboundTrack
from bridge.pacer import ChunkOut, Pacer, PacingConfig
from bridge.playout import PlayoutClock
from bridge.protocol import InboundMessage, Mark, Media, MediaStream
from bridge.recorder import CallRecording, model_input_path, write_mono_wav
from bridge.trace import MediaTrace, write_trace

if TYPE_CHECKING:  # bridge.analysis pulls in scipy.signal/stats (~0.6 s): only evidence() needs it
    from bridge.analysis import MediaEvidence

__all__ = ["LONG_GAP_MS", "MediaLink", "MediaSession", "SessionConfig", "SessionStats"]

log = logging.getLogger(__name__)
RATE = 8000


@dataclass
class SessionConfig:
    max_lead_s: float = 0.10
    jitter_buffer_s: float = 0.02
    mark_every: int = 5  # chunks (100 ms)
    max_queue_frames: int = 25  # 2 s of 80 ms frames waiting for the backend
    recording: Path | None = None
    record_lag_s: float = 0.5  # write the recording this far behind now (playout estimates settle)
    # A line is causal: audio cannot arrive before it was spoken, so a timestamp this far ahead of the
    # time since `start` is a broken or hostile peer, not jitter (None: unchecked, for replays that feed
    # recorded audio faster than real time). The server sets it to MAX_GAP_MS.
    max_media_ahead_s: float | None = None
    # Cancel our own echo before the model hears the caller (bridge.cancel): the reference is what we
    # sent, placed where the playout clock says it played.
    aec: bool = False
    # Keep the media stream frame by frame beside the recording (bridge.trace), for `orchestrator replay`
    trace: Path | None = None

    @property
    def pacing(self) -> PacingConfig:
        return PacingConfig(self.max_lead_s, self.jitter_buffer_s, self.mark_every)


@dataclass
class SessionStats:
    inbound_latency_s: list[float] = field(default_factory=list)  # last sample arrived -> frame to backend
    outbound_latency_s: list[float] = field(default_factory=list)  # backend frame out -> first chunk on wire
    # per chunk: how long after it was both ready and allowed by pacing (jitter buffer, lead limit) it left
    send_lateness_s: list[float] = field(default_factory=list)
    # per backend frame: its send lateness, i.e. outbound_latency_s minus the deliberate pacing hold
    outbound_added_s: list[float] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (timestamp ms, missing ms)
    out_of_order: int = 0


class MediaSession:
    def __init__(
        self,
        *,
        call_id: str,
        stream: MediaStream,
        backend: BackendSession,
        send: Callable[[list[str]], Awaitable[None]],
        config: SessionConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_text: Callable[[float, str], None] | None = None,
        on_long_gap: Callable[[int, int], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.stream = stream
        self.backend = backend
        self.config = config or SessionConfig()
        self._send = send
        self._clock = clock
        self._on_text = on_text
        self._on_long_gap = on_long_gap
        self.t0 = clock()  # `start` received: the origin of every time in the evidence
        self.canceller = InboundCanceller() if self.config.aec else None
        self.inbound = InboundTrack(max_ahead_s=self.config.max_media_ahead_s, canceller=self.canceller)
        self.outbound = OutboundPipeline()
        self.pacer = Pacer(self.config.pacing, origin=self.t0)
        self._latency_in: list[float] = []
        self.sent_codes = bytearray()  # what we sent, in order
        self.frames_to_model = 0
        self.late_frames = 0
        self.step_ms: list[float] = []
        self.end_reason: str | None = None
        self.clears: list[float] = []  # when we sent Twilio a `clear`, s since start
        self.failure: str | None = None  # why a media task died, when one did
        self._inq: asyncio.Queue[tuple[npt.NDArray[np.float32], float] | None] = asyncio.Queue(
            self.config.max_queue_frames
        )
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rec: CallRecording | None = (
            CallRecording(self.config.recording, lag_s=self.config.record_lag_s)
            if self.config.recording
            else None
        )

    # -- what the evidence, the metrics and the benchmarks read --------------------------------------

    @property
    def playout(self) -> PlayoutClock:
        return self.pacer.playout

    @property
    def inbound_codes(self) -> bytearray:
        """Caller audio on the media clock (timestamp ms * 8)."""
        return self.inbound.codes

    @property
    def arrivals(self) -> list[tuple[float, int]]:
        return self.inbound.arrivals

    @property
    def _mark_seq(self) -> int:  # read by benchmarks/concurrency.py
        return self.pacer.marks_sent

    @property
    def stats(self) -> SessionStats:
        p, i = self.pacer, self.inbound
        return SessionStats(
            self._latency_in,
            p.outbound_latency_s,
            p.send_lateness_s,
            p.outbound_added_s,
            i.gaps,
            i.out_of_order,
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._worker(), name=f"backend-{self.call_id}"),
            loop.create_task(self._sender(), name=f"sender-{self.call_id}"),
        ]
        ready = self.backend.frames_ready
        if ready is not None:
            self._tasks.append(loop.create_task(self._drain(ready), name=f"backend-drain-{self.call_id}"))
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        if self._rec is not None:
            self._rec.open(self._recorder_failed)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        self._fail(task.get_name().split("-")[0], exc)

    def _recorder_failed(self, exc: BaseException) -> None:
        if self._rec is not None:  # not after finish: its own failure is reported there
            self._fail("recorder", exc)

    def _fail(self, part: str, exc: BaseException) -> None:
        # A part that dies (a write to a reset socket, a backend that raised, a full disk, MemoryError)
        # must not leave the call half-alive: the whole session ends, and the socket's watcher closes the
        # stream, so the reader takes the normal end-of-stream path.
        self.failure = self.failure or f"{part} failed: {exc.__class__.__name__}: {exc}"[:300]
        if self.end_reason is None:
            self.end_reason = self.failure
        log.error("call %s: %s", self.call_id, self.failure, exc_info=exc)
        self._done.set()
        self._wake.set()

    async def finish(self, reason: str) -> None:
        """Stop both directions, close the backend and the recording. Safe to call twice."""
        if self.end_reason is None:
            self.end_reason = reason
        self._done.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                pass  # logged and recorded in `failure` by _task_ended
        self._tasks = []
        try:  # a backend that cannot close must not keep the call's evidence from being analysed
            await asyncio.wait_for(self.backend.close(), timeout=5.0)
        except (asyncio.TimeoutError, Exception):
            log.exception("call %s: backend did not close cleanly", self.call_id)
        rec, self._rec = self._rec, None
        if rec is not None:
            try:  # a full disk loses the recording, not the call's evidence
                await rec.finish(
                    self._clock() - self.t0, self.inbound.codes, self.inbound.offset, self._played_end()
                )
            except Exception as exc:
                self.failure = self.failure or f"recording failed: {exc.__class__.__name__}: {exc}"[:300]
                log.exception("call %s: recording not finished", self.call_id)
        if self.canceller is not None and self.config.recording is not None:
            try:
                path = model_input_path(self.config.recording)
                await asyncio.to_thread(write_mono_wav, path, self.canceller.model_input_pcm())
            except Exception:
                log.exception("call %s: the model's input was not kept", self.call_id)
        if self.config.trace is not None:
            try:
                await asyncio.to_thread(write_trace, self.config.trace, self.media_trace())
            except Exception:
                log.exception("call %s: the media trace was not kept", self.call_id)

    def media_trace(self) -> MediaTrace:
        """The stream so far, frame by frame (see bridge.trace)."""
        chunks = self.playout.chunks
        echoes = self.playout.echoes
        return MediaTrace(
            inbound_codes=np.frombuffer(bytes(self.inbound.codes), np.uint8),
            inbound_arrivals=np.array(self.inbound.arrivals, np.float64).reshape(-1, 2),
            inbound_sizes=np.array(self.inbound.sizes, np.int32),
            sent_codes=np.frombuffer(bytes(self.sent_codes), np.uint8),
            sends=np.array(
                [(c.send_time, c.playout_start, float(c.flushed)) for c in chunks], np.float64
            ).reshape(-1, 3),
            mark_names=tuple(e.name for e in echoes),
            marks=np.array(
                [(e.sent_at, e.echoed_at, float(e.flushed or e.cleared)) for e in echoes],
                np.float64,
            ).reshape(-1, 3),
            clears=np.array(self.clears, np.float64),
            ended_s=self._clock() - self.t0,
        )

    @property
    def done(self) -> asyncio.Event:
        return self._done

    # -- inbound (called by the socket reader for each message, in order) ---------------------------

    def on_media(self, msg: Media, now: float) -> None:
        """Take one inbound media message. Raises `RemoteProtocolError` for a timestamp that cannot be
        real (ahead of the wall clock, or a jump past `MAX_GAP_MS`): the caller ends the stream."""
        got = self.inbound.receive(msg.timestamp_ms, msg.payload, now - self.t0)
        if got.long_gap is not None and self._on_long_gap:
            self._on_long_gap(*got.long_gap)
        for frame in got.frames:
            if self._inq.full():
                self._inq.get_nowait()  # the backend is behind: drop the oldest, keep the clock
                self.late_frames += 1
            self._inq.put_nowait((frame, now))

    def on_mark(self, name: str, now: float) -> None:
        self.pacer.on_mark_echo(name, now)

    def clear(self) -> None:
        """Barge-in: drop what Twilio has buffered and what we have not sent yet."""
        now = self._clock()
        self.pacer.clear(now)
        if len(self.clears) < 100_000:  # a backend that clears every frame must not grow memory for ever
            self.clears.append(now - self.t0)
        if self.canceller is not None:
            self.canceller.reference.clear(now - self.t0)
        self.stream.send_clear()
        self._wake.set()

    # -- worker: frames to the backend and back ------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            item = await self._inq.get()
            if item is None:
                return
            frame, arrived = item
            now = self._clock()
            self._latency_in.append(now - arrived)
            self.frames_to_model += 1
            out = await self.backend.process(frame)
            if out.step_ms is not None:
                self.step_ms.append(out.step_ms)
            self._deliver(out)
            if self.backend.ended:
                self.end_reason = self.backend.ended
                self._done.set()
                return

    def _deliver(self, out: StepOutput) -> None:
        """The backend's frames to the pacer (ready now) and its text to the transcript."""
        if out.clear:  # the backend yielded mid-speech: what the phone has buffered goes too
            self.clear()
        ready = self._clock()
        for i, f in enumerate(out.frames):
            for j, chunk in enumerate(self.outbound.push(f)):
                self.pacer.queue(chunk, ready, i == 0 and j == 0)
        if out.text and self._on_text:
            for piece in out.text:
                self._on_text((ready - self.t0) * 1000.0, piece)
        if out.frames:
            self._wake.set()

    async def _drain(self, ready: asyncio.Event) -> None:
        """Frames a backend has ready between two `process()` calls (a remote server answers on its own
        clock), delivered as they come instead of at the next inbound frame: up to 80 ms sooner."""
        while not self._done.is_set():
            await ready.wait()
            ready.clear()
            self._deliver(self.backend.take_ready())
            if self.backend.ended:
                self.end_reason = self.backend.ended
                self._done.set()
                self._wake.set()
                return

    # -- sender: what the pacer allows, on the wire ---------------------------------------------------

    async def _sender(self) -> None:
        pacer, stream, canceller = self.pacer, self.stream, self.canceller
        while not self._done.is_set():
            now = self._clock()
            had_audio = pacer.queued > 0
            burst = pacer.poll(now)
            rec = self._rec
            for item in burst.sends:
                if isinstance(item, ChunkOut):
                    stream.send_media(item.payload)
                    if rec is not None:  # only the recording reads the played audio back
                        rec.place_played(item.payload, item.playout_start)
                    if canceller is not None:
                        canceller.reference.place(item.payload, item.playout_start)
                    self.sent_codes += item.payload
                else:
                    stream.send_mark(item.name)
            if had_audio and rec is not None and rec.due(now - self.t0):
                rec.write_behind(
                    self._clock() - self.t0, self.inbound.codes, self.inbound.offset, self._recorder_failed
                )
            texts = stream.data_to_send()  # chunks and marks, or a clear with nothing else
            if texts:
                await self._send(texts)
            if not pacer.queued:
                self._wake.clear()
                await self._wake.wait()
            elif burst.wake_at is not None:
                await asyncio.sleep(burst.wake_at - now)

    def _played_end(self) -> int:
        chunks = self.playout.chunks
        return int(round(chunks[-1].playout_end * RATE)) if chunks else 0

    # -- evidence --------------------------------------------------------------------------------------

    def evidence(self) -> MediaEvidence:
        from bridge.analysis import MediaEvidence

        chunks = self.playout.chunks
        sends = np.array([(c.send_time, c.playout_start, float(c.flushed)) for c in chunks], dtype=np.float64)
        return MediaEvidence(
            rate=RATE,
            inbound_pcm=ulaw_decode(bytes(self.inbound.codes)),
            inbound_arrivals=np.array(self.inbound.arrivals, dtype=np.float64).reshape(-1, 2),
            sent_pcm=ulaw_decode(bytes(self.sent_codes)),
            sends=sends.reshape(-1, 3),
            # an echo a clear may have sent back confirms no playout (bridge.playout): not counted as played
            marks=[(e.name, e.sent_at, e.echoed_at, e.flushed or e.cleared) for e in self.playout.echoes],
            mark_chunks=[e.chunks_before for e in self.playout.echoes],
            underruns=self.playout.underruns,
            frames_to_model=self.frames_to_model,
            step_ms=list(self.step_ms),
            late_frames=self.late_frames,
            model_input_pcm=None if self.canceller is None else self.canceller.model_input_pcm(),
        )


class MediaLink:
    """One media socket's protocol from the upgrade on, and its session once the call is live.

    The web layer reads the socket and hands every frame to `receive`; it never touches the
    `MediaStream` itself (it may read its counters: `errors`, `close_reason`, `error_log`, ...).
    """

    def __init__(self, *, max_frame_bytes: int = 64 * 1024) -> None:
        self.stream = MediaStream(max_frame_bytes=max_frame_bytes)
        self.session: MediaSession | None = None

    def receive(self, data: str | bytes, now: float) -> list[InboundMessage]:
        """Feed one socket frame received at `now`. Media and mark echoes go to the live session (and are
        dropped before there is one); every other event is returned, in order. Then check
        `stream.close_reason`: when set, close the socket with it."""
        stream = self.stream
        if isinstance(data, str):
            stream.receive_text(data)
        else:
            stream.receive_bytes(data)
        events = stream.events_received()
        session = self.session
        rest: list[InboundMessage] = []
        for ev in events:
            if isinstance(ev, Media):
                if session is not None:
                    try:
                        session.on_media(ev, now)
                    except RemoteProtocolError as exc:  # a timestamp that cannot be real: end this stream
                        stream.close_reason = stream.close_reason or exc.reason
                        break
            elif isinstance(ev, Mark):
                if session is not None:
                    session.on_mark(ev.name, now)
            else:
                rest.append(ev)
        return rest

    def open_session(
        self,
        *,
        call_id: str,
        backend: BackendSession,
        send: Callable[[list[str]], Awaitable[None]],
        config: SessionConfig | None = None,
        on_text: Callable[[float, str], None] | None = None,
        on_long_gap: Callable[[int, int], None] | None = None,
    ) -> MediaSession:
        """The call is live (its `start` accepted): the session that carries its media from now on."""
        if self.session is not None:
            raise RuntimeError(f"a session is already open on this stream (call {self.session.call_id})")
        self.session = MediaSession(
            call_id=call_id,
            stream=self.stream,
            backend=backend,
            send=send,
            config=config,
            on_text=on_text,
            on_long_gap=on_long_gap,
        )
        return self.session
