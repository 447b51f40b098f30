"""The emulator's shared 20 ms frame clock: one timer for every stream, absolute deadlines, catch-up."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.emulator.clock import FRAME_S, FrameClock, grid_index, grid_time


def test_grid_instants_round_trip_without_float_drift() -> None:
    for n in (0, 1, 49, 50, 123_456, 86_400 * 50 * 100):  # up to 100 days of uptime
        assert grid_index(grid_time(n)) == n
    assert grid_index(grid_time(10) + 1e-6) == 11  # just after an instant: the next one


async def test_every_stream_is_ticked_once_per_instant_by_one_task() -> None:
    clock = FrameClock.current()
    assert FrameClock.current() is clock  # one per loop
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def ticker(name: str, stop_after: int):
        def tick(n: int) -> str | None:
            seen[name].append(n)
            return f"{name} done" if len(seen[name]) >= stop_after else None

        return tick

    tasks_before = len(asyncio.all_tasks())
    a = asyncio.create_task(clock.run(ticker("a", 5)))
    b = asyncio.create_task(clock.run(ticker("b", 3)))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks_before + 3  # a, b and a single clock task
    assert await asyncio.wait_for(a, 2) == "a done" and await asyncio.wait_for(b, 2) == "b done"
    for ns in seen.values():
        assert ns == list(range(ns[0], ns[0] + len(ns)))  # consecutive instants, none twice
    assert seen["b"][0] == seen["a"][0]  # both on the same grid instant


async def test_a_late_wake_up_hands_the_newest_due_instant_and_a_failing_stream_ends_alone() -> None:
    clock = FrameClock.current()
    calls: list[tuple[int, float]] = []

    def slow(n: int) -> str | None:
        calls.append((n, time.monotonic()))
        if len(calls) == 2:
            time.sleep(3.5 * FRAME_S)  # the loop is blocked past three instants
        return "ok" if len(calls) == 4 else None

    def broken(n: int) -> str | None:
        raise RuntimeError("stream failed")

    ok = asyncio.create_task(clock.run(slow))
    bad = asyncio.create_task(clock.run(broken))
    with pytest.raises(RuntimeError, match="stream failed"):
        await asyncio.wait_for(bad, 2)
    assert await asyncio.wait_for(ok, 2) == "ok"
    ns = [n for n, _ in calls]
    assert ns[2] - ns[1] >= 3  # the instants missed while blocked are handed over at once
    for n, at in calls:
        assert at >= grid_time(n) - 1e-3  # never called before its instant
