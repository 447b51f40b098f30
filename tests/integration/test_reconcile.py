"""Unfinished calls settled from the carrier's REST answer (the carrier emulator's GET Calls/{sid}.json).

The case from the fault run: a call left `in-progress` by a crash, its `completed` callback sent while
the server was down (Twilio does not retry it). After the restart it must be settled with the
carrier's status and end time, and say so; when the carrier cannot say, it is marked with why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.emulator import CallOptions, CarrierEmulator
from orchestrator.reconcile import Reconciler
from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.store import Store, iso
from orchestrator.web.app import STATE, create_app
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def emulator() -> AsyncIterator[CarrierEmulator]:
    # its callbacks go to a port nobody listens on: our server is down while the call ends
    emu = CarrierEmulator(ACCOUNT_SID, AUTH_TOKEN, routes={PUBLIC_URL: f"http://127.0.0.1:{closed_port()}"})
    await emu.start()
    yield emu
    await emu.stop()


def our_call(settings: Settings, state: str, call_sid: str | None) -> dict[str, Any]:
    store = Store(settings.db)
    try:
        call = store.create_call(
            direction="outbound-api", to_number="+14155550100", from_number="+15005550006"
        )
        store.update_call(call["id"], state=state, call_sid=call_sid)
        return store.get_call(call["id"])
    finally:
        store.close()


async def finished_on_the_carrier(emu: CarrierEmulator, call_id: str) -> Any:
    placed = emu.place_call(
        to="+14155550100",
        from_="+15005550006",
        twiml="<Response><Say>Hello.</Say><Hangup/></Response>",
        status_callback=f"{PUBLIC_URL}/twilio/status?call_id={call_id}",
        events=["completed"],
        options=CallOptions(ring_s=0.1),
    )
    await emu.wait_call(placed.sid, timeout=30)
    assert placed.status == "completed" and placed.end_time is not None
    return placed


def doc(settings: Settings, call_id: str) -> dict[str, Any]:
    store = Store(settings.db)
    try:
        return CallService(store).document(call_id)
    finally:
        store.close()


async def until(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_a_call_left_in_progress_by_a_crash_is_settled_from_the_carriers_answer_after_restart(
    aiohttp_client: Any, settings: Settings, emulator: CarrierEmulator
) -> None:
    call = our_call(settings, "in-progress", None)
    placed = await finished_on_the_carrier(emulator, call["id"])
    store = Store(settings.db)
    store.update_call(call["id"], call_sid=placed.sid)  # what the REST create had stored before the crash
    store.close()
    # the completed callback never reached us
    assert [c["http_status"] for c in placed.truth.callbacks if c["event"] == "completed"] == [None, None]

    settings = dataclasses.replace(settings, twilio_api_base_url=emulator.base_url, reconcile_interval_s=60)
    await aiohttp_client(create_app(settings))  # the restart

    settled = await until(lambda: doc(settings, call["id"])["call"]["state"] == "completed")
    assert settled, doc(settings, call["id"])["events"]
    d = doc(settings, call["id"])
    ended = iso(placed.end_time.replace(microsecond=0))  # RFC 2822 carries whole seconds
    assert d["call"]["ended_at"] == ended
    assert d["call"]["end_reason"] == f"reconciled: the carrier reports completed, ended {ended}"
    assert d["transitions"][-1] == {
        "from": "in-progress",
        "to": "completed",
        "trigger": "reconcile:completed",
        "at": ended,
    }
    [event] = [e for e in d["events"] if e["source"] == "reconcile"]
    assert event["type"] == "completed" and event["accepted"]
    assert event["payload"]["carrier_status"] == "completed"
    assert event["payload"]["duration_s"] == placed.duration_s
    # and the call is evaluated like one that ended by its callback
    assert await until(lambda: doc(settings, call["id"])["checks"])


async def test_a_call_the_carrier_does_not_know_is_marked_with_why_and_asked_again(
    aiohttp_client: Any, settings: Settings, emulator: CarrierEmulator
) -> None:
    unknown_sid = "CA" + "e" * 32
    call = our_call(settings, "streaming", unknown_sid)
    no_sid = our_call(settings, "queued", None)
    settings = dataclasses.replace(settings, twilio_api_base_url=emulator.base_url, reconcile_interval_s=3600)
    client = await aiohttp_client(create_app(settings))

    def marks(call_id: str) -> list[tuple[str, Any]]:
        return [
            (e["type"], e["payload"].get("why"))
            for e in doc(settings, call_id)["events"]
            if e["source"] == "reconcile"
        ]

    assert await until(lambda: len(marks(call["id"])) == 2 and marks(no_sid["id"]))
    [(lost, _), (unsettled, why)] = marks(call["id"])
    assert (lost, unsettled) == ("stream_lost", "unsettled")
    assert why.startswith(f"carrier refused to fetch {unknown_sid}: 20404")
    # not guessed: the stream was lost, no more (a timeline event: the call stays `streaming`)
    assert doc(settings, call["id"])["call"]["state"] == "streaming"
    assert marks(no_sid["id"]) == [
        ("unsettled", "no CallSid was recorded for this call: the carrier cannot be asked")
    ]

    # the next round asks again, and says nothing new when nothing changed
    await Reconciler.for_state(client.server.app[STATE]).round()
    assert len(marks(call["id"])) == 2 and len(marks(no_sid["id"])) == 1


async def test_an_unreachable_carrier_is_asked_once_per_round_and_every_call_says_why(
    aiohttp_client: Any, settings: Settings
) -> None:
    calls = [our_call(settings, "in-progress", "CA" + str(i) * 32) for i in range(3)]
    settings = dataclasses.replace(
        settings, twilio_api_base_url=f"http://127.0.0.1:{closed_port()}", reconcile_interval_s=3600
    )
    client = await aiohttp_client(create_app(settings))
    state = client.server.app[STATE]
    reconciler = Reconciler.for_state(state)
    asked: list[str] = []
    real = reconciler.fetch
    assert real is not None

    def counting(sid: str) -> Any:
        asked.append(sid)
        return real(sid)

    reconciler.fetch = counting
    # the start round (same rules) may run meanwhile: wait until it has marked the calls, then count ours
    assert await until(lambda: all(doc(settings, c["id"])["events"] for c in calls))
    await state.service.run(lambda s: s.store.conn.execute("DELETE FROM events"))
    await reconciler.round()
    assert len(asked) == 1  # one refused connection, not one per call
    for c in calls:
        [event] = doc(settings, c["id"])["events"]
        assert event["type"] == "unsettled" and event["payload"]["why"].startswith("carrier unreachable: ")
        assert doc(settings, c["id"])["call"]["state"] == "in-progress"


async def test_reconciliation_runs_again_for_calls_that_went_quiet(
    aiohttp_client: Any, settings: Settings, emulator: CarrierEmulator
) -> None:
    call = our_call(settings, "in-progress", None)
    settings = dataclasses.replace(settings, twilio_api_base_url=emulator.base_url, reconcile_interval_s=0.3)
    await aiohttp_client(create_app(settings))
    # the server is up; the call ends on the carrier and its callback is lost on the way
    placed = await finished_on_the_carrier(emulator, call["id"])
    store = Store(settings.db)
    store.update_call(call["id"], call_sid=placed.sid)
    store.close()
    assert await until(lambda: doc(settings, call["id"])["call"]["state"] == "completed")
    d = doc(settings, call["id"])
    assert d["transitions"][-1]["trigger"] == "reconcile:completed"
    assert d["call"]["end_reason"].startswith("reconciled: the carrier reports completed, ended ")
