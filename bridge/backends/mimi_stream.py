"""Driving rustymimi's `StreamTokenizer`: bounded work, liveness that load cannot fool, a quiet hang-up.

Theory of operation. A `StreamTokenizer` runs its encoder and its decoder each on a Rust thread fed by
an unbounded channel, and both hand their heavy work (convolutions, matmuls) to one rayon pool shared
by every tokenizer in the process. A thread answers each frame with one output, or fails on it and
prints `error in encoder thread ...` on stderr; a bad first input (a wrong shape) poisons its streaming
state and then every frame fails, so `get_*()` returns None forever. A thread that panics disconnects
its channel and `get_*()` raises. One `CodecStage` drives one direction:

- Work is bounded: at most `max_pending` frames queued. Each queued frame is 80 ms more delay, and
  work still queued at hang-up keeps running and takes the CPU (the shared pool) from the next call.
  A frame beyond the bound is dropped and counted: a codec slower than real time cannot catch up.
- Liveness is work outstanding against progress, on two clocks. A stage with frames pending and no
  output is dead once `dead_after_s` of wall time *and* `dead_after_s` of this process's CPU time have
  passed since its last output. On a busy machine a live thread can wait seconds for a core, but it
  cannot let this process spend seconds of CPU (the model, the other direction, the shared pool)
  without finishing one step of ~0.05-0.1 s; a thread that fails every frame produces nothing however
  much CPU the rest spends. Silence for `stalled_after_s` of wall time alone also ends it (a stuck
  thread in an otherwise idle process spends no CPU), reported as stalled, not dead.
- At hang-up the tokenizer is retired, not dropped (`retire`): a daemon thread keeps taking its outputs
  until the queued frames are done (a stage judged dead is not waited for), because a Rust thread
  finishing a frame after its receiver is gone prints `sending on a closed channel`.

Backtraces. The threads print errors with `{err:?}`, and anyhow appends a stack backtrace (~37 lines)
to each when RUST_BACKTRACE=1 was set at the first error. `quiet_error_backtraces()` sets
RUST_LIB_BACKTRACE=0 unless the user chose a value: errors print one line, panics keep theirs.

Never waits for the codec on the caller's thread except in `wait_one` (warm-up only).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from bridge.backends.base import BackendError

__all__ = ["CodecStage", "Retirement", "Stall", "quiet_error_backtraces", "retire"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def quiet_error_backtraces() -> None:
    """Make rustymimi's thread errors one line each; call before the first StreamTokenizer exists.

    Rust decides once per process, at the first captured error, from RUST_LIB_BACKTRACE (else
    RUST_BACKTRACE); so this must run before any rustymimi thread has failed. A value the user set is
    kept (RUST_LIB_BACKTRACE=1 brings the backtraces back for debugging).
    """
    os.environ.setdefault("RUST_LIB_BACKTRACE", "0")


@dataclass(frozen=True, slots=True)
class Stall:
    """A stage with frames pending that has produced nothing for too long, and how long on each clock."""

    stage: str
    wall_s: float
    cpu_s: float
    pending: int
    dead: bool  # True: the process had CPU and the thread still produced nothing

    def reason(self) -> str:
        if self.dead:
            return (
                f"tokenizer_dead: the Mimi {self.stage} thread returned nothing for {self.wall_s:.1f} s "
                f"while this process used {self.cpu_s:.1f} s of CPU, with {self.pending} frame(s) pending"
            )
        return (
            f"tokenizer_stalled: the Mimi {self.stage} thread returned nothing for {self.wall_s:.1f} s "
            f"with {self.pending} frame(s) pending; this process got only {self.cpu_s:.1f} s of CPU in "
            f"that time (the machine is overloaded, or the thread is stuck)"
        )


class CodecStage:
    """One direction of a StreamTokenizer (encoder or decoder): submit, poll, bound, judge liveness.

    Not thread-safe: one thread uses it at a time (the model worker, then the retiring thread).
    """

    def __init__(
        self,
        name: str,
        put: Callable[[NDArray[Any]], Any],
        get: Callable[[], NDArray[Any] | None],
        *,
        dead_after_s: float,
        stalled_after_s: float,
        max_pending: int,
        clock: Clock = time.monotonic,
        cpu_clock: Clock = time.process_time,  # every thread of the process, Rust ones included
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.name = name
        self.pending = 0  # frames submitted and not yet answered
        self.dropped = 0  # frames refused because `max_pending` were already queued
        self._put = put
        self._get = get
        self._dead_after_s = dead_after_s
        self._stalled_after_s = max(stalled_after_s, dead_after_s)
        self._max_pending = max_pending
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._progress_at = (clock(), cpu_clock())

    def _progressed(self) -> None:
        self._progress_at = (self._clock(), self._cpu_clock())

    def submit(self, item: NDArray[Any]) -> bool:
        """Queue one frame; False (and counted in `dropped`) when `max_pending` are already queued."""
        if self.pending >= self._max_pending:
            self.dropped += 1
            return False
        if self.pending == 0:
            self._progressed()  # the silence before this frame was no one's fault
        self._put(item)
        self.pending += 1
        return True

    def drain(self) -> Iterator[NDArray[Any]]:
        """Everything the thread has finished so far, without waiting."""
        while (item := self._get()) is not None:
            self.pending = max(0, self.pending - 1)
            self._progressed()
            yield item

    def wait_one(self, timeout_s: float) -> NDArray[Any]:
        """Block (warm-up only) until one output, or BackendError after timeout_s of wall time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for item in self.drain():
                return item
            time.sleep(0.002)
        raise BackendError(f"Mimi {self.name} produced nothing within {timeout_s:.1f} s during warm-up")

    def silent_for(self) -> float:
        """Wall seconds since the last output (or since work began after an idle spell)."""
        return self._clock() - self._progress_at[0]

    def stall(self) -> Stall | None:
        """The stall, when frames are pending and the last output is too long ago; else None."""
        if self.pending == 0:
            return None
        wall = self.silent_for()
        cpu = self._cpu_clock() - self._progress_at[1]
        dead = wall >= self._dead_after_s and cpu >= self._dead_after_s
        if dead or wall >= self._stalled_after_s:
            return Stall(self.name, wall, cpu, self.pending, dead)
        return None


class Retirement(threading.Thread):
    """The daemon thread `retire` starts; `left` is what was still pending when it let go (after join)."""

    def __init__(self, stages: Sequence[CodecStage], after: Future[Any] | None, wait_s: float) -> None:
        super().__init__(name="mimi-retire", daemon=True)
        self.left: dict[str, int] | None = None  # None while running
        self._stages = stages
        self._after = after
        self._wait_s = wait_s

    def run(self) -> None:
        if self._after is not None:
            try:
                self._after.result(timeout=self._wait_s)
            except BaseException:  # a failed, cancelled or hung step: drain what is there anyway
                pass
        stages = self._stages
        while True:
            for stage in stages:
                for _ in stage.drain():
                    pass
            if not any(stage.pending and stage.stall() is None for stage in stages):
                break
            time.sleep(0.01)
        self.left = {stage.name: stage.pending for stage in stages if stage.pending}
        if self.left:
            log.info("Mimi tokenizer released with frames still pending (a dead thread): %s", self.left)
        self._stages = ()  # the last reference to the tokenizer goes with them


def retire(stages: Sequence[CodecStage], after: Future[Any] | None, wait_s: float) -> Retirement:
    """Keep a finished call's tokenizer (held by its stages) alive until its queued frames are done.

    A daemon thread waits up to `wait_s` for the call's last worker step (`after`), then takes and
    discards outputs for as long as some stage has frames pending and is still alive by `stall()`. A
    stage already dead (a poisoned thread never answers, and sends nothing) is not waited for, but its
    live sibling is: a frame it finished after the tokenizer was dropped would print an error.
    """
    thread = Retirement(stages, after, wait_s)
    thread.start()
    return thread
