"""The service on one writer thread, for the server: the event loop never waits on the database.

Every store access of the server goes through `AsyncService`: a coroutine per service operation
(`record`, `create_inbound_call`, `attach_stream`, ...), each executed as `CallService` code on the
writer thread and answered once its writes are committed.

A database server that goes away (PostgreSQL restarting) loses nothing that was answered: the writer
keeps the jobs it holds, waits for the server with backoff and runs them again, and a job that has
waited DB_RETRY_S is answered StoreUnreachable instead (the web app answers that 503). `health()` is
what the writer last found, for /healthz. SQLite never takes that path.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from orchestrator.db_health import DbHealth, ServerStore
from orchestrator.errors import StoreUnreachable
from orchestrator.service import CallService, Recorded

if TYPE_CHECKING:
    from orchestrator.stores import AnyStore

T = TypeVar("T")


class _Job(NamedTuple):
    fn: Callable[[CallService], Any]
    fut: asyncio.Future[Any]
    queued: float  # time.monotonic() when it was queued: its DB_RETRY_S counts from there


class AsyncService:
    """The service on one writer thread: every store access of the server goes through here.

    Group commit: the writer takes every job waiting in its queue (up to `batch`) and runs them inside
    one transaction, each job atomic on its own (`Store.transaction` nests as a savepoint), then commits
    once and only then answers them all. Under load that turns N commits into one; a lone job is
    committed at once. A job that raises has rolled back its own savepoint and gets its exception.

    Background jobs (`run(..., background=True)`: end-of-call evaluation, saving an analysis) yield to
    callbacks: they run one at a time, only when no request is waiting, so a burst of Twilio callbacks
    is never held behind them.

    A lost server (`ServerStore.lost_connection`, never a job's own error) rolls the batch back and
    runs it again once `reconnect()` works, waiting 0.1 s doubling to 1 s between tries
    (orchestrator.db_health); a job queued `retry_s` ago is answered StoreUnreachable instead. Running a batch again is
    safe because nothing of it committed, and a job is only store work (CallService), so running it
    twice does nothing else twice.
    """

    def __init__(
        self, store_factory: Callable[[], AnyStore], batch: int = 64, *, retry_s: float = 10.0
    ) -> None:
        self._store_factory = store_factory
        self._batch = batch
        self._retry_s = retry_s
        self._jobs: queue.PriorityQueue[tuple[int, int, Any, Any, float]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health = DbHealth()
        self.service: CallService | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._writer, args=(opened,), name="store-writer", daemon=True)
        self._thread.start()
        await opened

    def health(self) -> dict[str, Any]:
        """The database as the writer last found it (DbHealth.snapshot), for /healthz."""
        return self._health.snapshot()

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
        server = store if isinstance(store, ServerStore) else None
        while True:
            try:  # while the server is gone, an idle writer keeps asking it, so /healthz sees it come back
                prio, _, fn, fut, queued = self._jobs.get(
                    timeout=self._health.delay if self._health.down else None
                )
            except queue.Empty:
                self._reconnect(server)
                continue
            if fn is None:  # stop: queued last, so everything before it has run
                break
            jobs = [_Job(fn, fut, queued)]
            while prio == _FOREGROUND and len(jobs) < self._batch:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item[0] != _FOREGROUND:
                    self._jobs.put(item)  # background work and the stop wait for the next round
                    break
                jobs.append(_Job(item[2], item[3], item[4]))
            self._commit(service, server, jobs)
        store.close()

    def _commit(self, service: CallService, server: ServerStore | None, jobs: list[_Job]) -> None:
        """Run `jobs` in one transaction and answer each once it committed; while the server is gone,
        wait for it (answering StoreUnreachable to a job that has waited its `retry_s`)."""
        while jobs:
            if self._health.down:
                now = time.monotonic()
                jobs = self._give_up_on(jobs, now)
                if not jobs:
                    return
                # the next try comes after the backoff, or sooner for a job's last chance
                time.sleep(
                    max(0.0, min(self._health.delay, min(j.queued for j in jobs) + self._retry_s - now))
                )
                if not self._reconnect(server):
                    continue
            try:
                try:
                    done = self._attempt(service, server, jobs)
                except _Aborted as aborted:
                    assert server is not None  # only PostgreSQL aborts a transaction on an error
                    done = self._after_abort(service, server, jobs, aborted)
                self._health.committed()
            except Exception as exc:
                if server is None or not server.lost_connection(exc):
                    done = [(job.fut, None, exc) for job in jobs]  # the commit failed: nothing is durable
                else:
                    # The transaction died with its connection, so none of it is durable and the batch
                    # runs again whole. A COMMIT whose answer was lost is the one ambiguous case: it may
                    # have committed. Running it again then finds a callback's dedupe key taken and
                    # stores it as a duplicate (accepted: false), so no event is applied twice; a job
                    # without such a key (a local note) can be stored twice, never lost.
                    self._health.lost(server.describe(exc))
                    continue
            except BaseException as exc:  # KeyboardInterrupt and the like: nobody's writes are durable
                done = [(job.fut, None, exc) for job in jobs]
            self._answer(done)
            return

    def _attempt(
        self, service: CallService, server: ServerStore | None, jobs: list[_Job]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Run `jobs` in one transaction; each job's own error is its answer.

        On PostgreSQL an error outside a savepoint aborts the whole transaction, and its COMMIT then
        rolls back without a word: answering the jobs before it would answer writes that are lost. So a
        job that leaves the transaction aborted ends the attempt (`_Aborted`): the jobs before it run
        again, then it alone (again if another transaction's lock beat it), then the rest."""
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        with service.store.transaction():
            for i, job in enumerate(jobs):
                try:
                    done.append((job.fut, job.fn(service), None))
                except Exception as exc:  # the job's own error, for its caller
                    if server is not None and server.lost_connection(exc):
                        raise  # not the job's: the connection, and the whole transaction with it, is gone
                    if server is not None and server.aborted():
                        raise _Aborted(i, exc) from exc
                    done.append((job.fut, None, exc))
            if server is not None and server.aborted():  # an error a job caught and kept to itself
                raise _Aborted(len(jobs) - 1, RuntimeError("the transaction was aborted"))
        return done

    def _after_abort(
        self, service: CallService, server: ServerStore, jobs: list[_Job], aborted: _Aborted
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """The batch rolled back at job `aborted.index`: the jobs before it again, then it alone (up to
        three times while its error is another transaction's doing), then the rest; their answers."""
        before, job, after = jobs[: aborted.index], jobs[aborted.index], jobs[aborted.index + 1 :]
        done = self._attempt_all(service, server, before)
        done += self._alone(service, server, job, aborted.error)
        return done + self._attempt_all(service, server, after)

    def _alone(
        self, service: CallService, server: ServerStore, job: _Job, error: BaseException
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """A job whose error aborted a batch, in a transaction of its own while that error was another
        transaction's doing (a deadlock: up to three tries); else its error is its answer."""
        for _ in range(3):
            if not server.transient(error):
                break
            try:
                return self._attempt(service, server, [job])
            except _Aborted as again:
                error = again.error
        return [(job.fut, None, error)]

    def _attempt_all(
        self, service: CallService, server: ServerStore, jobs: list[_Job]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        if not jobs:
            return []
        try:
            return self._attempt(service, server, jobs)
        except _Aborted as aborted:
            return self._after_abort(service, server, jobs, aborted)

    def _reconnect(self, server: ServerStore | None) -> bool:
        """One try at the lost server: True once it answers again."""
        assert server is not None, "only a server store is ever lost"
        self._health.retried()
        try:
            server.reconnect()
        except Exception as exc:
            self._health.lost(server.describe(exc))
            return False
        self._health.back()
        return True

    def _give_up_on(self, jobs: list[_Job], now: float) -> list[_Job]:
        """Answer StoreUnreachable to each job queued `retry_s` ago or more; the rest."""
        keep: list[_Job] = []
        late: list[_Job] = []
        for job in jobs:
            (late if job.queued + self._retry_s <= now else keep).append(job)
        if late:
            why = self._health.gave_up(len(late))
            message = (
                f"the database did not answer for {self._retry_s:g} s (DB_RETRY_S), nothing written: {why}"
            )
            self._answer([(job.fut, None, StoreUnreachable(message)) for job in late])
        return keep

    def _answer(self, done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        loop = self._loop
        assert loop is not None
        for fut, result, error in done:
            loop.call_soon_threadsafe(_settle, fut, result, error)

    async def run(self, fn: Callable[[CallService], T], *, background: bool = False) -> T:
        """Run `fn(service)` on the writer thread; returns once its writes are committed."""
        assert self._loop is not None and self._thread is not None, "AsyncService.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(
            (_BACKGROUND if background else _FOREGROUND, next(self._seq), fn, fut, time.monotonic())
        )
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
            self._jobs.put((_STOP, next(self._seq), None, None, time.monotonic()))
            await asyncio.to_thread(self._thread.join)
            self._thread = None


_FOREGROUND, _BACKGROUND, _STOP = 0, 1, 2


class _Aborted(Exception):
    """Job `index` left the batch's transaction aborted with `error` (PostgreSQL): nothing of it is kept."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"job {index} aborted the transaction: {error}")
        self.index, self.error = index, error


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
