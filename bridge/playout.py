"""The playout-clock model: when does Twilio actually play the audio we send it?

Pure: no I/O, no clock reads. Callers pass `now`, seconds on one monotonic clock.

Facts it rests on (shared/reference/protocol.md C, G): Twilio plays outbound media in the order
received, in real time, and queues whatever arrives early; a `mark` is echoed when the audio sent
before it has finished playing (at once if nothing is buffered); `clear` drops the buffer and echoes
every pending mark, so an echo after a clear means *flushed*, not played.

Theory of operation:

- Audio flows in *runs*: a run starts with the first chunk, after a `clear`, after `on_idle()`, or
  after an underrun, and lasts while every chunk is sent before the previous one finished playing.
  Within a run Twilio plays contiguously, so the true playout of the whole run is the run's *raw*
  chain (chunk k starts at max(send_k, end_{k-1}), i.e. as if Twilio were next door) shifted by one
  constant: the run's `offset` (network, Twilio's packetisation, whatever sits in between).
- Every mark echo measures that offset once, plus noise that can only be positive: an echo cannot come
  before the audio ended, but it can come later (the return path, and Twilio's 20 ms packet clock).
  So the run's offset is the *minimum* lateness seen over its echoes (lateness = echo time - raw end of
  the audio before the mark). One late echo does not move the estimates; an earlier one pulls the
  whole run in, history included: contiguous audio that ended earlier also started earlier. This keeps
  the played track a clean time shift of what was sent, which the echo meter depends on.
- A new run inherits the last offset as its first guess and refines it with its own echoes.
- The path is the same for every run; only Twilio's 20 ms packet phase differs between them. So no
  run's offset can be more than one packet later than the best offset any echo has shown: read back,
  a run's offset is capped at (the call's minimum measured offset + 20 ms). This matters for short runs
  whose only echo came late (a loaded box: an early run cut by an underrun, its one mark echoed 80 ms
  late), which would otherwise shift all of that run's audio, first audio included, by the lateness.
- `lead(now)` = audio queued ahead of playout = raw end of the run - now (the offset cancels: a chunk
  sent now would also land `offset` later). The session paces sending to keep it under a small
  maximum: more lead is more latency, none risks underruns.
- An underrun is a chunk sent after the run's audio finished playing while audio was flowing. Silence
  after `on_idle()` (the sender stopped on purpose) or a `clear` is not an underrun.
- `on_clear(now)` cuts playout at now + offset: chunks not yet played by then are marked (partly)
  flushed, marks whose audio had not ended are flagged flushed, and the next chunk starts a new run.
- An echo of a mark still pending when we sent a clear may have been sent back *by* the clear (Twilio
  echoes every pending mark at once), while its audio's last packet was still playing: up to a packet
  early. Such an echo refines a run's offset only while the run has no other measurement (it would
  otherwise pull a well-measured run, and a barge-in's stop time with it, up to 20 ms early).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

_EPS = 1e-9  # float slack, seconds: contiguous chunks must not count as underruns
PACKET_S = 0.02  # Twilio's packet clock: how far apart two runs' playout phases can be


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
    chunks_before: int = -1  # chunks sent before the mark (-1: not known)
    # still pending when we sent a clear: the echo may be the clear's, not a sign the audio had played
    cleared: bool = False

    @property
    def error(self) -> float:
        """Seconds the echo came later (+) or earlier (-) than estimated."""
        return self.echoed_at - self.expected_at


@dataclass(slots=True)
class _PendingMark:
    name: str
    sent_at: float
    run: int  # the run its audio belongs to
    raw_end: float  # raw playout end of the audio sent before it
    chunks_before: int = 0  # chunks sent before it
    flushed: bool = False
    cleared: bool = False  # still pending when a clear was sent: its echo may be the clear's


class PlayoutClock:
    """Estimates Twilio's playout of our outbound audio; see the module docstring."""

    def __init__(self) -> None:
        self.underruns = 0
        self.underrun_seconds = 0.0  # total playout gap inside flowing audio
        self.unknown_echoes = 0  # echoes of marks we never sent (or already echoed)
        self.lost_marks = 0  # marks skipped over by the echo of a later one
        self.echoes: list[MarkEcho] = []
        self.samples_sent = 0
        # One entry per chunk, in parallel lists: 50 chunks/s for a whole call stays compact.
        self._send: list[float] = []
        self._raw: list[float] = []  # raw start (no offset)
        self._run: list[int] = []
        self._n: list[int] = []
        self._rate: list[int] = []
        self._first: list[int] = []  # index of the chunk's first sample in the outbound stream
        self._played: list[int] = []
        self._offsets: list[float] = []  # per run
        self._measured: list[bool] = []  # per run: has an echo measured it yet
        self._raw_end: float | None = None  # raw playout end of the current run
        self._flowing = False
        self._marks: deque[_PendingMark] = deque()

    @property
    def delay(self) -> float:
        """The current run's offset: how much later than 'next door' our audio plays (seconds)."""
        return self._offsets[-1] if self._offsets else 0.0

    # -- sending --

    def on_send(self, now: float, n_samples: int, rate: int = 8000) -> tuple[float, float]:
        """Record a chunk sent at `now`; return its estimated (playout_start, playout_end)."""
        if n_samples < 0 or rate <= 0:
            raise ValueError(f"bad chunk: {n_samples} samples at {rate} Hz")
        if self._raw_end is None or not self._flowing:
            self._new_run()
            raw = now
        else:
            gap = now - self._raw_end
            if gap > _EPS:  # the run played out before this chunk came: an underrun, a new run
                self.underruns += 1
                self.underrun_seconds += gap
                self._new_run()
                raw = now
            else:
                raw = self._raw_end
        self._send.append(now)
        self._raw.append(raw)
        self._run.append(len(self._offsets) - 1)
        self._n.append(n_samples)
        self._rate.append(rate)
        self._first.append(self.samples_sent)
        self._played.append(n_samples)
        self.samples_sent += n_samples
        self._raw_end = raw + n_samples / rate
        self._flowing = True
        offset = self._offsets[-1]
        return raw + offset, self._raw_end + offset

    def _new_run(self) -> None:
        self._offsets.append(self.delay)  # inherit the last estimate until an echo measures this run
        self._measured.append(False)

    def lead(self, now: float) -> float:
        """Seconds of audio queued at Twilio ahead of playout (0 when it has run dry)."""
        if self._raw_end is None or not self._flowing:
            return 0.0
        return max(0.0, self._raw_end - now)

    def on_idle(self) -> None:
        """The sender stopped on purpose (end of a response): the next chunk is not an underrun."""
        self._flowing = False

    # -- marks and clear --

    def mark_sent(self, name: str, now: float) -> None:
        """Record a mark sent at `now`, after everything sent so far."""
        flowing = self._raw_end is not None and self._flowing
        raw_end = max(now, self._raw_end) if flowing and self._raw_end is not None else now
        run = len(self._offsets) - 1 if flowing else -1
        self._marks.append(_PendingMark(name, now, run, raw_end, len(self._send)))

    def on_mark_echo(self, name: str, now: float) -> MarkEcho | None:
        """Account for Twilio's echo of mark `name` at `now`; refine the run's offset unless flushed.

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
        offset = self._offsets[mark.run] if mark.run >= 0 else self.delay
        echo = MarkEcho(
            name, mark.sent_at, mark.raw_end + offset, now, mark.flushed, mark.chunks_before, mark.cleared
        )
        self.echoes.append(echo)
        run = mark.run if mark.run >= 0 else len(self._offsets) - 1
        ambiguous = mark.cleared and 0 <= run < len(self._measured) and self._measured[run]
        if not mark.flushed and not ambiguous:
            # clamped: playout cannot come before sending
            lateness = max(0.0, now - mark.raw_end)
            if mark.run < 0:  # nothing was queued: the echo measures the path alone
                if self._offsets:
                    self._offsets[-1] = (
                        lateness if not self._measured[-1] else min(self._offsets[-1], lateness)
                    )
            elif not self._measured[mark.run] or lateness < self._offsets[mark.run]:
                self._offsets[mark.run] = lateness
                self._measured[mark.run] = True
                if not self._measured[-1]:  # the current run has no measurement of its own yet
                    self._offsets[-1] = lateness
        return echo

    def on_clear(self, now: float) -> None:
        """Record a clear sent at `now`: buffered audio is dropped, pending marks come back flushed."""
        offset = self.delay
        cut = now + offset
        run = len(self._offsets) - 1
        k = len(self._send) - 1
        while k >= 0 and self._run[k] == run:
            played = math.floor((cut - (self._raw[k] + offset)) * self._rate[k] + 1e-6)
            self._played[k] = min(self._n[k], max(0, played))
            k -= 1
        for m in self._marks:
            m.cleared = True
            if m.run == run and m.raw_end + offset > cut + _EPS:
                m.flushed = True
        self._flowing = False

    # -- what the metrics read --

    def run_offsets(self) -> list[float]:
        """Each run's offset as the metrics read it: its own estimate, capped at the best measured + 1 packet."""
        measured = [o for o, m in zip(self._offsets, self._measured, strict=True) if m]
        if not measured:
            return list(self._offsets)
        cap = min(measured) + PACKET_S
        return [min(o, cap) for o in self._offsets]

    @property
    def chunks(self) -> list[ChunkRecord]:
        """Every chunk sent, in order, with its current playout estimate."""
        offsets = self.run_offsets()
        return [
            ChunkRecord(s, raw + offsets[run], n, rate, played)
            for s, raw, run, n, rate, played in zip(
                self._send, self._raw, self._run, self._n, self._rate, self._played, strict=True
            )
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
        return self._raw[k] + self.run_offsets()[self._run[k]] + offset / self._rate[k]
