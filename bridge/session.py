"""One call's media session: caller audio to the backend and the backend's audio back, paced.

The session owns three concurrent parts, all on the event loop and none blocking it:

* **receive** (`on_media`, called by the socket reader): decode, fill timestamp gaps with silence so
  the model's clock keeps running, re-chunk into 80 ms frames, and queue them for the backend. The
  queue is bounded: if the backend falls behind, the oldest frame is dropped and counted
  (`late_frames`), never an unbounded backlog.
* **worker**: feeds frames to the backend session (which runs its compute off the loop) and turns each
  output frame into 20 ms mu-law chunks.
* **sender**: paces chunks to Twilio. Twilio plays whatever it gets in order and queues the rest, so
  anything sent ahead of playout is latency. The sender keeps the playout lead under `max_lead_s`,
  holds the very first chunk back by `jitter_buffer_s` (headroom against inbound jitter, so a late
  frame does not underrun), sends a mark every `mark_every` chunks (playout confirmation, clock
  recalibration), and records every chunk on the `PlayoutClock`.

Everything the metrics need is kept as evidence (`evidence()`), on one monotonic clock whose origin is
the moment `start` was received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.backends.base import BackendSession
from bridge.errors import RemoteProtocolError
from bridge.framing import CHUNK_SAMPLES_8K, InboundPipeline, OutboundPipeline
from bridge.g711 import ulaw_decode
from bridge.playout import PlayoutClock
from bridge.protocol import MAX_GAP_MS, Media, MediaStream
from bridge.recorder import DualWavWriter

if TYPE_CHECKING:  # bridge.analysis pulls in scipy.signal/stats (~0.6 s): only evidence() needs it
    from bridge.analysis import MediaEvidence

log = logging.getLogger(__name__)
RATE = 8000
SILENCE = 0xFF
LONG_GAP_MS = 500


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
        self.inbound = InboundPipeline()
        self.outbound = OutboundPipeline()
        self.playout = PlayoutClock()
        self.stats = SessionStats()
        self.inbound_codes = bytearray()  # caller audio on the media clock (timestamp ms * 8)
        self.sent_codes = bytearray()  # what we sent, in order
        self.arrivals: list[tuple[float, int]] = []
        self.frames_to_model = 0
        self.late_frames = 0
        self.step_ms: list[float] = []
        self.end_reason: str | None = None
        self.failure: str | None = None  # why a media task died, when one did
        self._next_ts: int | None = None
        self._inq: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue(
            self.config.max_queue_frames
        )
        self._outq: deque[tuple[bytes, float, bool]] = deque()
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._mark_seq = 0
        self._since_mark = 0
        self._first_send_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # right channel of the recording: the mu-law we sent, placed on the local clock where it played
        # (0xFF = silence), decoded only when a second of it is written out
        self._played_codes = bytearray()
        self._rec: DualWavWriter | None = (
            DualWavWriter(self.config.recording) if self.config.recording else None
        )
        self._rec_pos = 0
        self._inbound_offset: float | None = None  # local s - media s, for the recording

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._worker(), name=f"backend-{self.call_id}"),
            loop.create_task(self._sender(), name=f"sender-{self.call_id}"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # A direction that dies (a write to a reset socket, a backend that raised, MemoryError) must not
        # leave the call half-alive: the whole session ends, and the socket's watcher closes the stream,
        # so the reader takes the normal end-of-stream path.
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.failure = (
            self.failure or f"{task.get_name().split('-')[0]} failed: {exc.__class__.__name__}: {exc}"[:300]
        )
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
        if self._rec is not None:
            rec, self._rec = self._rec, None
            try:  # a full disk loses the recording, not the call's evidence
                self._rec = rec
                self._flush_recording(final=True)
            except Exception as exc:
                self.failure = self.failure or f"recording failed: {exc.__class__.__name__}: {exc}"[:300]
                log.exception("call %s: recording not finished", self.call_id)
            finally:
                self._rec = None
                with contextlib.suppress(Exception):
                    rec.close()

    @property
    def done(self) -> asyncio.Event:
        return self._done

    # -- inbound (called by the socket reader for each message, in order) ---------------------------

    def on_media(self, msg: Media, now: float) -> None:
        """Take one inbound media message. Raises `RemoteProtocolError` for a timestamp that cannot be
        real (ahead of the wall clock, or a jump past `MAX_GAP_MS`): the caller ends the stream."""
        rel = now - self.t0
        ts = msg.timestamp_ms
        ahead = self.config.max_media_ahead_s
        if ahead is not None and ts > (rel + ahead) * 1000.0:
            raise RemoteProtocolError(
                f"media.timestamp {ts} ms is {ts - rel * 1000.0:.0f} ms ahead of the "
                f"time since start (limit {ahead * 1000.0:.0f} ms)",
                field="media.timestamp",
            )
        if (
            ts - (self._next_ts or 0) > MAX_GAP_MS
        ):  # MediaStream refuses these first; a guard for other feeders
            raise RemoteProtocolError(
                f"media.timestamp jumped past the limit of {MAX_GAP_MS} ms", field="media.timestamp"
            )
        self.arrivals.append((rel, ts))
        payload = msg.payload
        if self._next_ts is not None and ts < self._next_ts:
            self.stats.out_of_order += 1  # late or repeated audio: its slot was already filled
            return
        frames: list[np.ndarray] = []
        if self._next_ts is not None and ts > self._next_ts:
            missing = ts - self._next_ts
            self.stats.gaps.append((self._next_ts, missing))
            frames += self.inbound.push_silence(missing * RATE // 1000)
            if missing >= LONG_GAP_MS and self._on_long_gap:
                self._on_long_gap(self._next_ts, missing)
        pos = ts * RATE // 1000
        if len(self.inbound_codes) < pos:
            self.inbound_codes.extend(b"\xff" * (pos - len(self.inbound_codes)))
        self.inbound_codes[pos : pos + len(payload)] = payload
        self._next_ts = ts + len(payload) * 1000 // RATE
        if self._inbound_offset is None:
            self._inbound_offset = rel - ts / 1000 - len(payload) / RATE  # sent after its last sample
        frames += self.inbound.push(payload)
        for frame in frames:
            self._enqueue(frame, now)

    def _enqueue(self, frame: np.ndarray, now: float) -> None:
        if self._inq.full():
            self._inq.get_nowait()  # the backend is behind: drop the oldest, keep the clock
            self.late_frames += 1
        self._inq.put_nowait((frame, now))

    def on_mark(self, name: str, now: float) -> None:
        self.playout.on_mark_echo(name, now - self.t0)

    def clear(self) -> None:
        """Barge-in: drop what Twilio has buffered and what we have not sent yet."""
        self._outq.clear()
        self.stream.send_clear()
        self.playout.on_clear(self._clock() - self.t0)
        self._wake.set()

    # -- worker: frames to the backend and back ------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            item = await self._inq.get()
            if item is None:
                return
            frame, arrived = item
            now = self._clock()
            self.stats.inbound_latency_s.append(now - arrived)
            self.frames_to_model += 1
            out = await self.backend.process(frame)
            if out.step_ms is not None:
                self.step_ms.append(out.step_ms)
            ready = self._clock()
            for i, f in enumerate(out.frames):
                for j, chunk in enumerate(self.outbound.push(f)):
                    self._outq.append((chunk, ready, i == 0 and j == 0))
            if out.text and self._on_text:
                for piece in out.text:
                    self._on_text((ready - self.t0) * 1000.0, piece)
            if out.frames:
                self._wake.set()
            if self.backend.ended:
                self.end_reason = self.backend.ended
                self._done.set()
                return

    # -- sender: paced chunks, marks, playout clock ---------------------------------------------------

    async def _sender(self) -> None:
        # One wake-up sends every chunk that pacing allows, and everything queued on the stream goes out
        # in one `send` (one socket write in the server): at 50 calls, a write per 20 ms chunk was a
        # tenth of the server's event loop and woke each caller once per chunk.
        cfg = self.config
        chunk_s = CHUNK_SAMPLES_8K / RATE
        while not self._done.is_set():
            wait = 0.0
            if self._outq:
                now = self._clock()
                if self._first_send_at is None:
                    self._first_send_at = now + cfg.jitter_buffer_s
                while self._outq:
                    wait = max(
                        self._first_send_at - now, self.playout.lead(now - self.t0) + chunk_s - cfg.max_lead_s
                    )
                    if wait > 0.0005:
                        break
                    self._send_chunk(now, wait)
                if self._rec is not None and (now - self.t0) - self._rec_pos / RATE > 1.0 + cfg.record_lag_s:
                    self._flush_recording(final=False)
            texts = self.stream.data_to_send()  # chunks and marks, or a clear with nothing else
            if texts:
                await self._send(texts)
            if not self._outq:
                self._wake.clear()
                await self._wake.wait()
            elif wait > 0.0005:
                await asyncio.sleep(wait)

    def _send_chunk(self, now: float, wait: float) -> None:
        chunk, ready, first_of_frame = self._outq.popleft()
        late = max(0.0, min(now - ready, -wait))  # since it was ready and pacing allowed it
        self.stats.send_lateness_s.append(late)
        if first_of_frame:
            self.stats.outbound_latency_s.append(now - ready)
            self.stats.outbound_added_s.append(late)
        self.stream.send_media(chunk)
        start, _ = self.playout.on_send(now - self.t0, len(chunk))
        if self._rec is not None:  # only the recording reads the played audio back
            self._place_played(chunk, start)
        self.sent_codes += chunk
        self._since_mark += 1
        if self._since_mark >= self.config.mark_every:
            self._mark_seq += 1
            name = f"m{self._mark_seq}"
            self.stream.send_mark(name)
            self.playout.mark_sent(name, now - self.t0)
            self._since_mark = 0

    def _place_played(self, chunk: bytes, start_s: float) -> None:
        at = int(round(start_s * RATE))
        codes = self._played_codes
        if at > len(codes):
            codes.extend(b"\xff" * (at - len(codes)))
        codes[at : at + len(chunk)] = chunk

    # -- recording -----------------------------------------------------------------------------------

    def _flush_recording(self, *, final: bool) -> None:
        assert self._rec is not None
        now_rel = self._clock() - self.t0
        upto = int((now_rel - (0 if final else self.config.record_lag_s)) * RATE)
        if final:
            upto = max(upto, self._played_end())
        if upto <= self._rec_pos:
            return
        right = np.zeros(upto - self._rec_pos, dtype=np.int16)
        have = self._played_codes[self._rec_pos : upto]
        if have:
            right[: len(have)] = ulaw_decode(bytes(have))
        left = np.zeros_like(right)
        if self._inbound_offset is not None:
            shift = int(round(self._inbound_offset * RATE))
            lo, hi = self._rec_pos - shift, upto - shift
            src = self.inbound_codes[max(lo, 0) : max(min(hi, len(self.inbound_codes)), 0)]
            if src:
                start = max(0, -lo)
                left[start : start + len(src)] = ulaw_decode(bytes(src))
        self._rec.write(left, right)
        self._rec_pos = upto

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
            inbound_pcm=ulaw_decode(bytes(self.inbound_codes)),
            inbound_arrivals=np.array(self.arrivals, dtype=np.float64).reshape(-1, 2),
            sent_pcm=ulaw_decode(bytes(self.sent_codes)),
            sends=sends.reshape(-1, 3),
            marks=[(e.name, e.sent_at, e.echoed_at, e.flushed) for e in self.playout.echoes],
            underruns=self.playout.underruns,
            frames_to_model=self.frames_to_model,
            step_ms=list(self.step_ms),
            late_frames=self.late_frames,
        )
