"""The writer thread's group commit: many jobs per transaction, each atomic, answered after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator.service import CallService
from orchestrator.store import Store
from orchestrator.writer import AsyncService


def count(db: Path, sql: str) -> int:
    con = sqlite3.connect(db)  # a separate connection sees only what is committed
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


async def test_batched_jobs_are_atomic_each_and_committed_before_the_answer(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    service = AsyncService(lambda: Store(db))
    await service.start()
    try:
        call = await service.run(
            lambda s: s.store.create_call(direction="outbound-api", to_number=None, from_number=None)
        )

        def failing(s: CallService) -> None:
            with s.store.transaction():
                s.store.add_check(call["id"], "call_initiated", "pass", "will be rolled back", "auto")
                raise RuntimeError("job failed halfway")

        jobs: list[Any] = [
            service.record(
                source="status_callback",
                type="ringing",
                call_id=call["id"],
                dedupe_key=f"k{i}",
                payload={"i": i},
            )
            for i in range(40)
        ]
        jobs.insert(20, service.run(failing))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, RuntimeError) for r in results) == 1
        # everything answered is on disk, for another connection too; the failed job left nothing
        assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'ringing'") == 40
        assert count(db, "SELECT COUNT(*) FROM checks") == 0
        assert count(db, "SELECT COUNT(*) FROM transitions") == 1  # queued -> ringing once; the rest stale
        # background work still runs, after the foreground jobs
        done = await service.run(lambda s: s.store.get_call(call["id"])["state"], background=True)
        assert done == "ringing"
    finally:
        await service.close()


async def test_a_failing_judgement_in_a_batch_keeps_its_raw_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator import lifecycle

    db = tmp_path / "e.db"
    service = AsyncService(lambda: Store(db))
    await service.start()
    try:
        call = await service.run(
            lambda s: s.store.create_call(direction="outbound-api", to_number=None, from_number=None)
        )

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("judge exploded")

        monkeypatch.setattr(lifecycle, "handle", broken)
        with pytest.raises(RuntimeError):
            await service.record(source="status_callback", type="ringing", call_id=call["id"], dedupe_key="x")
        assert count(db, "SELECT COUNT(*) FROM events WHERE reason LIKE 'error: RuntimeError%'") == 1
    finally:
        await service.close()
