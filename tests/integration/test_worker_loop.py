"""The worker's loop in a server: it adopts a dead worker's call and settles it from the carrier, records
the loss once, re-registers when its row was removed, and after a failed heartbeat (the database away)
waits WORKER_STALE_S before adopting anything (the others' heartbeats may not be in yet)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bridge.backends.echo import EchoBackend
from orchestrator.rig import rig_settings
from orchestrator.store import Store, iso, utcnow
from orchestrator.twilio_rest import CarrierCall
from orchestrator.web.prom import Prom
from orchestrator.web.state import AppState
from orchestrator.web.worker_loop import WorkerLoop
from orchestrator.writer import AsyncService

STALE_S = 0.6


def plant_dead_worker_call(db: Path) -> str:
    store = Store(db)
    old = iso(utcnow() - timedelta(seconds=60))
    store.put_worker(
        "dead", public_url=None, backend="echo", capacity=1, host="h", pid=1, started_at=old, heartbeat_at=old
    )
    call = store.create_call(
        direction="outbound-api", to_number=None, from_number=None, call_sid="CA" + "d" * 32
    )
    store.update_call(call["id"], worker="dead", state="streaming")
    store.close()
    return str(call["id"])


async def make_state(tmp_path: Path) -> AppState:
    settings = rig_settings(
        tmp_path,
        worker="me",
        worker_heartbeat_s=0.05,
        worker_stale_s=STALE_S,
        public_url="https://me.invalid",
    )
    service = AsyncService(lambda: Store(settings.db))
    await service.start()
    return AppState(settings=settings, service=service, backend=EchoBackend(), prom=Prom())


def carrier_says_completed(sid: str) -> CarrierCall:
    ended = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    return CarrierCall(sid=sid, status="completed", start_time=ended, end_time=ended, duration_s=3)


async def run_loop(state: AppState, loop: WorkerLoop, until: Any, timeout_s: float = 10) -> None:
    from orchestrator import reconcile

    original = reconcile.Reconciler.for_state
    reconcile.Reconciler.for_state = classmethod(  # type: ignore[method-assign, assignment]
        lambda cls, st: cls(st, carrier_says_completed)
    )
    task = asyncio.create_task(loop.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await until():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        reconcile.Reconciler.for_state = original  # type: ignore[method-assign]


async def test_adopts_a_dead_workers_call_settles_it_and_re_registers(tmp_path: Path) -> None:
    state = await make_state(tmp_path)
    call_id = plant_dead_worker_call(state.settings.db)
    loop = WorkerLoop(state, capacity=2)
    await loop.start()
    await state.service.run(lambda s: s.store.forget_worker("me"))  # someone removed our row

    async def settled() -> bool:
        call = await state.service.run(lambda s: s.store.get_call(call_id))
        return bool(call["state"] == "completed")

    try:
        await run_loop(state, loop, settled)
        call = await state.service.run(lambda s: s.store.get_call(call_id))
        assert call["worker"] == "me" and "the carrier reports completed" in call["end_reason"]
        events = await state.service.run(lambda s: s.store.events_for(call))
        lost = [e for e in events if e["type"] == "worker_lost"]
        assert len(lost) == 1 and '"adopted_by": "me"' in lost[0]["payload"]
        me = await state.service.run(lambda s: s.store.get_worker("me"))
        assert me is not None and me["capacity"] == 2 and me["stopped_at"] is None  # registered again
    finally:
        await state.service.close()


async def test_no_adoption_until_stale_s_after_a_failed_heartbeat(tmp_path: Path) -> None:
    state = await make_state(tmp_path)
    call_id = plant_dead_worker_call(state.settings.db)
    loop = WorkerLoop(state, capacity=1)
    await loop.start()
    clock = asyncio.get_running_loop().time
    seen: dict[str, float] = {}
    real_beat, real_adopt = loop.beat, loop.adopt

    async def beat() -> None:
        if "failed" not in seen:
            seen["failed"] = clock()
            raise ConnectionError("database away")
        seen.setdefault("back", clock())
        await real_beat()

    async def adopt() -> list[dict[str, Any]]:
        seen.setdefault("adopted", clock())
        return await real_adopt()

    loop.beat, loop.adopt = beat, adopt  # type: ignore[method-assign]

    async def adopted() -> bool:
        call = await state.service.run(lambda s: s.store.get_call(call_id))
        return call["worker"] == "me"

    try:
        await run_loop(state, loop, adopted)
        assert seen["adopted"] - seen["back"] >= STALE_S
    finally:
        await state.service.close()
