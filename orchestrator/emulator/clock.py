"""The phones' shared 20 ms clock: one timer per event loop drives every emulated stream's frames.

Each stream used to sleep to its own deadline every 20 ms: at 50 calls, 2,500 timers a second, each a
heap push, a wake-up and a task step, which with the per-frame work made an emulator caller cost more
CPU than the server it loads (benchmarks/README.md). Here every stream's frame deadlines sit on one
grid of 20 ms instants on the monotonic clock, and one task wakes at each instant and runs the due
frames of every stream in turn. A stream's frames stay on absolute deadlines (a late wake-up runs the
frames it missed, in order, exactly as the per-stream ticker did), and the grid is shared, so a phone
starts its stream on the next grid instant (at most 20 ms after it is answered).

Pure asyncio; no I/O. Deadlines are kept as integer grid indices, so "due" never depends on float
rounding.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable

FRAME_S = 0.02
# Instants are n * FRAME_S in float seconds; t / FRAME_S of one is n to within 2e-7 for any monotonic
# reading below 10^7 s (115 days of uptime), so "at or after" allows a millionth of a frame (20 ns).
_EPS = 1e-6
_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock] = weakref.WeakKeyDictionary()

#: Called at each grid instant with the index of the newest due instant; returns why the stream is
#: done ticking, or None to go on.
Ticker = Callable[[int], str | None]


def grid_index(t: float) -> int:
    """The grid instant at or after monotonic time `t`."""
    return math.ceil(t / FRAME_S - _EPS)


def grid_time(n: int) -> float:
    return n * FRAME_S


class FrameClock:
    """One per event loop (`FrameClock.current()`). `await run(ticker)` until the ticker says why it ended."""

    def __init__(self) -> None:
        self._tickers: dict[Ticker, asyncio.Future[str]] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def current(cls) -> FrameClock:
        loop = asyncio.get_running_loop()
        clock = _CLOCKS.get(loop)
        if clock is None:
            clock = _CLOCKS[loop] = cls()
        return clock

    async def run(self, ticker: Ticker) -> str:
        """Call `ticker(n)` at every grid instant from now on; return its first non-None answer."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tickers[ticker] = done
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="emulator-frame-clock")
        try:
            return await done
        finally:
            self._tickers.pop(ticker, None)

    async def _run(self) -> None:
        n = grid_index(time.monotonic())
        while self._tickers:
            delay = grid_time(n) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # every instant that has passed by now is due (a late wake-up catches up in one turn)
            n = max(n, math.floor(time.monotonic() / FRAME_S + _EPS))
            for ticker, done in list(self._tickers.items()):
                if done.done():
                    continue
                try:
                    reason = ticker(n)
                except Exception as exc:  # the stream's own failure: end that stream, not the clock
                    done.set_exception(exc)
                    continue
                if reason is not None:
                    done.set_result(reason)
            n += 1
