"""The writer's group commit on PostgreSQL, where an error outside a savepoint aborts the whole transaction
and its COMMIT then rolls back without a word: no job may be answered success for writes that were lost.

A job whose error aborts the batch is answered its error and the others' writes are kept; two writers
whose batches lock the same calls in opposite order deadlock, and the victim's job is run again alone,
so every job succeeds and every write is there (a naive writer answered 204 for callbacks it lost)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from orchestrator.service import CallService
from orchestrator.writer import AsyncService
from tests.integration.engines import Engine


def _new_call(label: str) -> Any:
    def job(s: CallService) -> str:
        return str(s.store.create_call(direction="outbound-api", to_number=None, from_number=label)["id"])

    return job


def _hold(seconds: float) -> Any:
    def job(s: CallService) -> None:
        time.sleep(seconds)  # the writer is busy: what is queued meanwhile forms one batch

    return job


async def test_a_job_that_aborts_the_batch_fails_alone(pg_engine: Engine) -> None:
    writer = AsyncService(lambda: pg_engine.open())
    await writer.start()
    try:

        def bad(s: CallService) -> None:
            s.store._exec("SELECT 1 / 0")  # outside any savepoint: the transaction is aborted

        hold = asyncio.ensure_future(writer.run(_hold(0.3)))
        await asyncio.sleep(0.05)
        results = await asyncio.gather(
            writer.run(_new_call("+1000")),
            writer.run(bad),
            writer.run(_new_call("+1001")),
            return_exceptions=True,
        )
        await hold
        first, error, last = results
        assert isinstance(error, Exception) and "division by zero" in str(error)
        store = pg_engine.open()
        assert store.find_call(call_id=first) is not None  # answered success: really stored
        assert store.find_call(call_id=last) is not None
    finally:
        await writer.close()


async def test_two_writers_deadlocking_lose_nothing(pg_engine: Engine) -> None:
    setup = pg_engine.open()
    x = setup.create_call(direction="outbound-api", to_number=None, from_number=None)["id"]
    y = setup.create_call(direction="outbound-api", to_number=None, from_number=None)["id"]
    writers = [AsyncService(lambda: pg_engine.open()) for _ in range(2)]
    for w in writers:
        await w.start()
    both_hold_one = threading.Barrier(2, timeout=10)

    def lock_then(first: str, second: str, tag: str) -> Any:
        tries = {"n": 0}

        def job(s: CallService) -> str:
            tries["n"] += 1
            s.store.find_call(call_id=first)  # FOR UPDATE inside the batch's transaction
            if tries["n"] == 1:
                try:
                    both_hold_one.wait()
                except threading.BrokenBarrierError:
                    pass
            s.store.find_call(call_id=second)
            s.store.update_call(second, end_reason=tag)
            return tag

        return job

    try:
        got = await asyncio.gather(
            writers[0].run(lock_then(x, y, "a")),
            writers[1].run(lock_then(y, x, "b")),
            return_exceptions=True,
        )
    finally:
        for w in writers:
            await w.close()
    assert got == ["a", "b"], got  # the deadlock's victim ran again, alone, after the winner committed
    store = pg_engine.open()
    assert {store.get_call(x)["end_reason"], store.get_call(y)["end_reason"]} == {"a", "b"}


@pytest.fixture(autouse=True)
def _quiet_deadlock_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR")
