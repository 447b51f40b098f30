"""The playout-clock model: when does Twilio actually play the audio we send it?

Pure: no I/O, no clock reads. Callers pass `now`, seconds on one monotonic clock.

Facts it rests on (shared/reference/protocol.md C, G): Twilio plays outbound media in the order
received, in real time, and queues whatever arrives early; a `mark` is echoed when the audio sent
before it has finished playing (at once if nothing is buffered); `clear` drops the buffer and echoes
every pending mark, so an echo after a clear means *flushed*, not played.

Theory of operation:

- Chunk k, sent at s_k, starts playing at p_k = max(s_k + delay, e_{k-1}) and ends at
  e_k = p_k + n_k / rate. `delay` is what mark echoes teach us: it starts at 0 and becomes the
  (clamped >= 0) lateness of the last echo against our estimate, i.e. roughly the round trip. All
  estimates are therefore times *as observed here*; one clock cannot split the round trip into its
  two halves.
- `lead(now)` = audio queued ahead of playout = e_last - (now + delay). The session paces sending to
  keep it under a small maximum (default 0.1 s): more lead is more latency, none risks underruns.
- An underrun is a chunk sent after the previous one finished playing while audio was flowing. A
  talkspurt starts flowing at its first chunk and stops at `on_clear()` or `on_idle()` (the sender
  stopped on purpose), so silence between responses is not an underrun.
- A mark sits after all the audio sent before it; its expected echo time is the playout end of that
  audio. On the echo, the audio before the mark has ended *now*: `delay` moves by the error and the
  chunks after the mark are re-chained from `now`, so a 30 ms late echo moves every later estimate
  30 ms. Estimates for audio before the mark are history and are left alone.
- `on_clear(now)` cuts playout at now + delay: chunks not yet played by then are marked (partly)
  flushed, marks whose audio had not ended are flagged flushed, and the queue restarts empty.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

_EPS = 1e-9  # float slack, seconds: contiguous chunks must not count as underruns


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One outbound chunk as the metrics see it."""

    send_time: float
    playout_start: float
    n_samples: int
    rate: int
    played_samples: int  # < n_samples when a clear cut it short

    @property
    def flushed(self) -> bool:
        return self.played_samples < self.n_samples

    @property
    def playout_end(self) -> float:
        return self.playout_start + self.played_samples / self.rate


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str
    sent_at: float
    expected_at: float  # the estimate just before the echo arrived
    echoed_at: float
    flushed: bool  # True: a clear dropped the audio before the mark; it was never played

    @property
    def error(self) -> float:
        """Seconds the echo came later (+) or earlier (-) than estimated."""
        return self.echoed_at - self.expected_at


@dataclass(slots=True)
class _PendingMark:
    name: str
    sent_at: float
    position: int  # number of chunks sent before it
    expected_at: float
    epoch: int  # clears seen before it was sent
    flushed: bool = False


class PlayoutClock:
    """Estimates Twilio's playout of our outbound audio; see the module docstring."""

    def __init__(self) -> None:
        self.delay = 0.0  # learned from mark echoes; seconds
        self.underruns = 0
        self.underrun_seconds = 0.0  # total playout gap inside talkspurts
        self.unknown_echoes = 0  # echoes of marks we never sent (or already echoed)
        self.lost_marks = 0  # marks skipped over by the echo of a later one
        self.echoes: list[MarkEcho] = []
        self.samples_sent = 0
        # One entry per chunk, in parallel lists: 50 chunks/s for a whole call stays compact.
        self._send: list[float] = []
        self._start: list[float] = []
        self._n: list[int] = []
        self._rate: list[int] = []
        self._first: list[int] = []  # index of the chunk's first sample in the outbound stream
        self._played: list[int] = []
        self._end: float | None = None  # playout end of the last chunk (or the cut of a clear)
        self._flowing = False
        self._epoch = 0
        self._epoch_first = 0  # first chunk index sent after the last clear
        self._floor = 0.0  # where the last clear cut playout; nothing after it plays earlier
        self._marks: deque[_PendingMark] = deque()

    # -- sending --

    def on_send(self, now: float, n_samples: int, rate: int = 8000) -> tuple[float, float]:
        """Record a chunk sent at `now`; return its estimated (playout_start, playout_end)."""
        if n_samples < 0 or rate <= 0:
            raise ValueError(f"bad chunk: {n_samples} samples at {rate} Hz")
        earliest = now + self.delay
        if self._end is None:
            start = earliest
        else:
            gap = earliest - self._end
            if self._flowing and gap > _EPS:
                self.underruns += 1
                self.underrun_seconds += gap
            start = max(earliest, self._end)
        self._send.append(now)
        self._start.append(start)
        self._n.append(n_samples)
        self._rate.append(rate)
        self._first.append(self.samples_sent)
        self._played.append(n_samples)
        self.samples_sent += n_samples
        self._end = start + n_samples / rate
        self._flowing = True
        return start, self._end

    def lead(self, now: float) -> float:
        """Seconds of audio queued at Twilio ahead of playout (0 when it has run dry)."""
        if self._end is None:
            return 0.0
        return max(0.0, self._end - (now + self.delay))

    def on_idle(self) -> None:
        """The sender stopped on purpose (end of a response): the next chunk is not an underrun."""
        self._flowing = False

    # -- marks and clear --

    def mark_sent(self, name: str, now: float) -> None:
        """Record a mark sent at `now`, after everything sent so far."""
        expected = now + self.delay if self._end is None else max(now + self.delay, self._end)
        self._marks.append(_PendingMark(name, now, len(self._send), expected, self._epoch))

    def on_mark_echo(self, name: str, now: float) -> MarkEcho | None:
        """Account for Twilio's echo of mark `name` at `now`; recalibrate unless it was flushed.

        Returns None (and counts `unknown_echoes`) for a name with no pending mark. Pending marks
        sent before it are dropped as lost: Twilio echoes marks in order.
        """
        mark = next((m for m in self._marks if m.name == name), None)
        if mark is None:
            self.unknown_echoes += 1
            return None
        while self._marks[0] is not mark:
            self._marks.popleft()
            self.lost_marks += 1
        self._marks.popleft()
        echo = MarkEcho(name, mark.sent_at, mark.expected_at, now, mark.flushed)
        self.echoes.append(echo)
        if not mark.flushed:
            self.delay = max(0.0, self.delay + echo.error)
            if mark.epoch == self._epoch:
                self._rechain(max(mark.position, self._epoch_first), now)
            else:  # audio of an older epoch: only the delay changed; the cut stays where it was
                self._rechain(self._epoch_first, self._floor)
        return echo

    def on_clear(self, now: float) -> None:
        """Record a clear sent at `now`: buffered audio is dropped, pending marks come back flushed."""
        cut = now + self.delay
        for k in range(self._epoch_first, len(self._send)):
            rate = self._rate[k]
            played = math.floor((cut - self._start[k]) * rate + 1e-6)
            self._played[k] = min(self._n[k], max(0, played))
        for m in self._marks:
            if m.epoch == self._epoch and m.expected_at > cut + _EPS:
                m.flushed = True
        self._epoch += 1
        self._epoch_first = len(self._send)
        self._end = self._floor = cut
        self._flowing = False

    def _rechain(self, first: int, prev_end: float) -> None:
        """Recompute playout of chunks `first`.. after the audio before them ended at `prev_end`."""
        ends = {first: prev_end}  # playout end of the audio before chunk k, for the marks
        for k in range(first, len(self._send)):
            self._start[k] = max(self._send[k] + self.delay, prev_end)
            prev_end = self._start[k] + self._n[k] / self._rate[k]
            ends[k + 1] = prev_end
        self._end = prev_end
        for m in self._marks:
            if m.epoch == self._epoch and m.position >= first:
                m.expected_at = max(m.sent_at + self.delay, ends[m.position])

    # -- what the metrics read --

    @property
    def chunks(self) -> list[ChunkRecord]:
        """Every chunk sent, in order, with its current playout estimate."""
        return [
            ChunkRecord(*row)
            for row in zip(self._send, self._start, self._n, self._rate, self._played, strict=True)
        ]

    @property
    def pending_marks(self) -> list[str]:
        return [m.name for m in self._marks]

    def playout_time_of_sample(self, index: int) -> float | None:
        """Estimated playout time of outbound sample `index` (0-based over all samples sent).

        None when a clear flushed that sample; IndexError when it was never sent.
        """
        if not 0 <= index < self.samples_sent:
            raise IndexError(f"sample {index} not sent (sent {self.samples_sent})")
        k = bisect_right(self._first, index) - 1  # the last chunk starting at or before it: never empty
        offset = index - self._first[k]
        if offset >= self._played[k]:
            return None
        return self._start[k] + offset / self._rate[k]
