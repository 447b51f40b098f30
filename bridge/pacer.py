"""The outbound pacer: which chunks and marks go to Twilio now, and when to look again.

Pure: no I/O, no clock reads, no sleeps. The caller passes `now` (seconds on one monotonic clock) and
sends what `poll(now)` returns, in order; it calls `poll` again at `wake_at`, or as soon as it has
queued more audio when `wake_at` is None. The asyncio driver (`bridge.session`) is a thin loop around it.

Rules (Twilio plays what it gets in order, in real time, and queues the rest: protocol.md C):

- **Lead.** Anything sent ahead of playout is latency. A chunk leaves only while the audio queued at
  Twilio after it (`PlayoutClock.lead`) stays within `max_lead_s`; otherwise it waits until enough has
  played out (a wait under `MIN_WAIT_S` is not worth a wake-up: that chunk goes now).
- **Jitter buffer.** The call's very first chunk, and the first after a `clear`, is held
  `jitter_buffer_s` after the pacer first sees audio queued: headroom against a backend frame that
  comes a little late, so it does not underrun.
- **Marks.** A mark follows every `mark_every`-th chunk: its echo confirms playout and recalibrates the
  playout clock.
- **Clear.** `clear(now)` drops what is still queued here; the playout clock cuts what Twilio had.

Every chunk sent is recorded on the `PlayoutClock`, and its lateness (how long after it was both ready
and allowed by pacing it left) in `send_lateness_s`; the first chunk of each backend step also adds its
latency from ready to wire (`outbound_latency_s`) and the part of it pacing did not ask for
(`outbound_added_s`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from bridge.framing import CHUNK_SAMPLES_8K
from bridge.playout import MarkEcho, PlayoutClock

RATE = 8000
CHUNK_S = CHUNK_SAMPLES_8K / RATE
#: A wait shorter than this sends now: waking the loop for half a millisecond costs more than it saves.
MIN_WAIT_S = 0.0005


@dataclass(frozen=True, slots=True)
class PacingConfig:
    max_lead_s: float = 0.10
    jitter_buffer_s: float = 0.02
    mark_every: int = 5  # chunks (100 ms)


class ChunkOut(NamedTuple):  # tuples: one per 20 ms chunk, cheaper to make than frozen dataclasses
    """A media chunk to send now."""

    payload: bytes
    playout_start: float  # its estimated playout start, seconds since the pacer's origin


class MarkOut(NamedTuple):
    """A mark to send now, after the chunks before it."""

    name: str


class Burst(NamedTuple):
    """What `poll` decided: send `sends` in order, then look again at `wake_at`."""

    sends: list[ChunkOut | MarkOut]
    wake_at: float | None  # None: nothing left queued; poll again once more audio is queued


class Pacer:
    """Paces one call's outbound chunks; see the module docstring.

    `origin` is the moment `start` was received: the playout clock and the chunk estimates count from it.
    """

    def __init__(self, config: PacingConfig | None = None, *, origin: float = 0.0) -> None:
        self.config = config or PacingConfig()
        self.origin = origin
        self.playout = PlayoutClock()
        self.marks_sent = 0
        self.send_lateness_s: list[float] = []
        self.outbound_latency_s: list[float] = []  # per backend step: ready -> its first chunk on the wire
        self.outbound_added_s: list[float] = []  # the same minus the deliberate hold (jitter buffer, lead)
        self._queue: deque[tuple[bytes, float, bool]] = deque()
        self._first_send_at: float | None = None
        self._since_mark = 0

    @property
    def queued(self) -> int:
        """Chunks waiting to be sent."""
        return len(self._queue)

    def queue(self, chunk: bytes, ready: float, first_of_step: bool = False) -> None:
        """Queue a chunk that became ready at `ready`; `first_of_step` marks a backend step's first chunk."""
        self._queue.append((chunk, ready, first_of_step))

    def poll(self, now: float) -> Burst:
        """Take every chunk (and the marks after them) that pacing allows at `now`."""
        sends: list[ChunkOut | MarkOut] = []
        queue = self._queue
        if not queue:
            return Burst(sends, None)
        cfg = self.config
        if self._first_send_at is None:
            self._first_send_at = now + cfg.jitter_buffer_s
        rel = now - self.origin
        wait = 0.0
        while queue:
            wait = max(self._first_send_at - now, self.playout.lead(rel) + CHUNK_S - cfg.max_lead_s)
            if wait > MIN_WAIT_S:
                break
            self._send_one(now, rel, wait, sends)
        return Burst(sends, now + wait if queue else None)

    def _send_one(self, now: float, rel: float, wait: float, sends: list[ChunkOut | MarkOut]) -> None:
        chunk, ready, first = self._queue.popleft()
        late = max(0.0, min(now - ready, -wait))  # since it was ready and pacing allowed it
        self.send_lateness_s.append(late)
        if first:
            self.outbound_latency_s.append(now - ready)
            self.outbound_added_s.append(late)
        start, _ = self.playout.on_send(rel, len(chunk))
        sends.append(ChunkOut(chunk, start))
        self._since_mark += 1
        if self._since_mark >= self.config.mark_every:
            self.marks_sent += 1
            name = f"m{self.marks_sent}"
            sends.append(MarkOut(name))
            self.playout.mark_sent(name, rel)
            self._since_mark = 0

    def clear(self, now: float) -> None:
        """Barge-in at `now`: drop what is queued here; the caller sends the `clear`.

        Twilio's buffer is then empty, as at the call's start: the next audio is held `jitter_buffer_s`
        again, or each frame would play out just as the next one comes and any lateness is an underrun
        (5-8 per barge-in on a loaded box before this)."""
        self._queue.clear()
        self._first_send_at = None
        self.playout.on_clear(now - self.origin)

    def on_mark_echo(self, name: str, now: float) -> MarkEcho | None:
        """Twilio echoed mark `name` at `now`."""
        return self.playout.on_mark_echo(name, now - self.origin)
