"""The service on one writer thread, for the server: the event loop never waits on SQLite.

Every store access of the server goes through `AsyncService`: a coroutine per service operation
(`record`, `create_inbound_call`, `attach_stream`, ...), each executed as `CallService` code on the
writer thread and answered once its writes are committed.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.service import CallService, Recorded

if TYPE_CHECKING:
    from orchestrator.stores import AnyStore

T = TypeVar("T")


class AsyncService:
    """The service on one writer thread: every store access of the server goes through here.

    Group commit: the writer takes every job waiting in its queue (up to `batch`) and runs them inside
    one transaction, each job atomic on its own (`Store.transaction` nests as a savepoint), then commits
    once and only then answers them all. Under load that turns N commits into one; a lone job is
    committed at once. A job that raises has rolled back its own savepoint and gets its exception.

    Background jobs (`run(..., background=True)`: end-of-call evaluation, saving an analysis) yield to
    callbacks: they run one at a time, only when no request is waiting, so a burst of Twilio callbacks
    is never held behind them.
    """

    def __init__(self, store_factory: Callable[[], AnyStore], batch: int = 64) -> None:
        self._store_factory = store_factory
        self._batch = batch
        self._jobs: queue.PriorityQueue[tuple[int, int, Any, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.service: CallService | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._writer, args=(opened,), name="store-writer", daemon=True)
        self._thread.start()
        await opened

    def _writer(self, opened: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            service = self.service = CallService(self._store_factory())
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, opened, None, exc)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        store = service.store
        while True:
            prio, _, fn, fut = self._jobs.get()
            if fn is None:  # stop: queued last, so everything before it has run
                break
            jobs = [(fn, fut)]
            while prio == _FOREGROUND and len(jobs) < self._batch:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item[0] != _FOREGROUND:
                    self._jobs.put(item)  # background work and the stop wait for the next round
                    break
                jobs.append((item[2], item[3]))
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                with store.transaction():
                    for fn, fut in jobs:
                        try:
                            done.append((fut, fn(service), None))
                        except Exception as exc:  # the job's own error, for its caller
                            done.append((fut, None, exc))
            except BaseException as exc:  # the commit failed: nobody's writes are durable
                done = [(fut, None, exc) for _, fut in jobs]
            for fut, result, error in done:
                loop.call_soon_threadsafe(_settle, fut, result, error)
        store.close()

    async def run(self, fn: Callable[[CallService], T], *, background: bool = False) -> T:
        """Run `fn(service)` on the writer thread; returns once its writes are committed."""
        assert self._loop is not None and self._thread is not None, "AsyncService.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((_BACKGROUND if background else _FOREGROUND, next(self._seq), fn, fut))
        return await fut

    # -- the service's operations, as coroutines (see CallService for what each does) -----------------

    async def record(self, **kw: Any) -> Recorded:
        return await self.run(lambda s: s.record(**kw))

    async def create_inbound_call(self, **kw: Any) -> dict[str, Any]:
        return await self.run(lambda s: s.create_inbound_call(**kw))

    async def authorize_start(
        self, call_id: str, token: str | None, call_sid: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        return await self.run(lambda s: s.authorize_start(call_id, token, call_sid))

    async def attach_stream(self, call_id: str, *, stream_sid: str, recording_path: str | None) -> None:
        await self.run(
            lambda s: s.attach_stream(call_id, stream_sid=stream_sid, recording_path=recording_path)
        )

    async def note_backend_ended(self, call_id: str, reason: str) -> Recorded:
        return await self.run(lambda s: s.note_backend_ended(call_id, reason))

    async def unfinished_calls(
        self, *, quiet_before: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.run(lambda s: s.unfinished_calls(quiet_before=quiet_before, limit=limit))

    async def forget_recordings(self, removed: list[tuple[str, str]]) -> None:
        """Background work: yields to callbacks."""
        await self.run(lambda s: s.forget_recordings(removed), background=True)

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put((_STOP, next(self._seq), None, None))
            await asyncio.to_thread(self._thread.join)
            self._thread = None


_FOREGROUND, _BACKGROUND, _STOP = 0, 1, 2


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
