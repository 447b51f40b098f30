"""Workers over one database, on both engines: registration, liveness, claims that never give two calls the
last session (with real concurrent stores), adoption of a dead worker's calls by exactly one worker, and
the inbound voice webhook's claim."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from orchestrator.errors import SettingsError
from orchestrator.service import CallService
from orchestrator.store import iso, utcnow
from orchestrator.workers import (
    alive_since,
    busy_reason,
    claim,
    register,
    take_inbound,
    worker_status,
)
from tests.integration.engines import Engine

STALE_S = 10.0


def add_worker(store, name: str, capacity: int = 1, *, age_s: float = 0.0, pid: int = 1) -> None:
    at = iso(utcnow() - timedelta(seconds=age_s))
    store.put_worker(
        name,
        public_url=f"https://{name}.invalid",
        backend="echo",
        capacity=capacity,
        host="elsewhere",
        pid=pid,
        started_at=at,
        heartbeat_at=at,
    )


def new_call(store) -> dict:
    return store.create_call(direction="outbound-api", to_number="+14155550100", from_number="+14155550101")


def test_register_refuses_a_live_namesake_and_takes_over_a_dead_one(engine: Engine) -> None:
    service = CallService(engine.open())
    add_worker(service.store, "a")
    with pytest.raises(SettingsError, match="already running on elsewhere"):
        register(service, "a", public_url="https://a2.invalid", backend="echo", capacity=2, stale_s=STALE_S)
    add_worker(service.store, "b", age_s=STALE_S + 5)
    row = register(service, "b", public_url="https://b2.invalid", backend="echo", capacity=2, stale_s=STALE_S)
    assert (row["public_url"], row["capacity"], row["stopped_at"]) == ("https://b2.invalid", 2, None)
    assert worker_status(row, now=utcnow(), stale_s=STALE_S) == "up"


def test_liveness_heartbeat_and_stop(engine: Engine) -> None:
    store = engine.open()
    add_worker(store, "a")
    add_worker(store, "old", age_s=STALE_S + 1)
    now = utcnow()
    status = {w["name"]: worker_status(w, now=now, stale_s=STALE_S) for w in store.list_workers()}
    assert status == {"a": "up", "old": "dead"}
    assert store.heartbeat_worker("old", at=iso(utcnow()), in_use=2) is True
    assert worker_status(store.get_worker("old"), now=utcnow(), stale_s=STALE_S) == "up"
    assert store.get_worker("old")["in_use"] == 2
    store.stop_worker("a", at=iso(utcnow()))
    assert worker_status(store.get_worker("a"), now=utcnow(), stale_s=STALE_S) == "stopped"
    assert store.heartbeat_worker("a", at=iso(utcnow()), in_use=0) is False  # must register again
    assert store.heartbeat_worker("nobody", at=iso(utcnow()), in_use=0) is False


def test_claims_fill_the_freest_worker_and_refuse_when_full(engine: Engine) -> None:
    service = CallService(engine.open())
    store = service.store
    add_worker(store, "a", capacity=1)
    add_worker(store, "b", capacity=2)
    add_worker(store, "dead", capacity=5, age_s=STALE_S + 1)
    got = [claim(service, new_call(store), stale_s=STALE_S) for _ in range(4)]
    names = [w["name"] if w else None for w in got]
    assert names[:3].count("b") == 2 and names[:3].count("a") == 1 and names[3] is None
    why = busy_reason(store.list_workers(), now=utcnow(), stale_s=STALE_S)
    assert why == "every worker is busy: 3 of 3 sessions in use on 2 worker(s)"
    # a call that ends gives its session back, whoever records the end
    first = next(c for c in store.list_calls() if c["worker"] == "a")
    store.update_call(first["id"], state="completed")
    assert claim(service, new_call(store), stale_s=STALE_S)["name"] == "a"


def test_a_tie_goes_to_the_preferred_worker_and_a_held_session_is_kept(engine: Engine) -> None:
    service = CallService(engine.open())
    store = service.store
    for name in ("a", "b", "c"):
        add_worker(store, name, capacity=2)
    call = new_call(store)
    assert claim(service, call, stale_s=STALE_S, prefer="b")["name"] == "b"
    again = claim(service, store.get_call(call["id"]), stale_s=STALE_S, prefer="c")
    assert again["name"] == "b"
    assert sum(int(w["claimed"]) for w in store.list_workers()) == 1
    notes = [e for e in store.events_for(store.get_call(call["id"])) if e["type"] == "worker_claimed"]
    assert len(notes) == 1


def test_no_worker_up_says_so(engine: Engine) -> None:
    store = engine.open()
    assert "no worker is registered" in busy_reason([], now=utcnow(), stale_s=STALE_S)
    add_worker(store, "gone", age_s=42)
    why = busy_reason(store.list_workers(), now=utcnow(), stale_s=STALE_S)
    assert why.startswith("no worker is up: the last heartbeat was gone's, 42 s ago")
    assert claim(CallService(store), new_call(store), stale_s=STALE_S) is None


def test_concurrent_claims_never_share_the_last_session(engine: Engine) -> None:
    """Twelve callers on six threads, each with its own store (connection), for 3 sessions."""
    first = engine.open()
    for name in ("a", "b", "c"):
        add_worker(first, name, capacity=1)
    calls = [new_call(first) for _ in range(12)]
    local = threading.local()

    def one(call: dict) -> str | None:
        if not hasattr(local, "service"):
            local.service = CallService(engine.open())
        service = local.service
        with service.store.transaction():
            row = claim(service, service.store.get_call(call["id"]), stale_s=STALE_S)
        return row["name"] if row else None

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(one, calls))
    assert sorted(n for n in got if n) == ["a", "b", "c"]
    assert {w["name"]: int(w["claimed"]) for w in first.list_workers()} == {"a": 1, "b": 1, "c": 1}


def test_a_dead_workers_calls_are_adopted_once(engine: Engine) -> None:
    service = CallService(engine.open())
    store = service.store
    add_worker(store, "dead", capacity=3)
    held = [new_call(store) for _ in range(3)]
    for call in held:
        assert claim(service, call, stale_s=STALE_S)["name"] == "dead"
    store.update_call(held[2]["id"], state="completed")  # over: not adopted
    at = iso(utcnow() - timedelta(seconds=STALE_S + 1))
    store.put_worker(
        "dead", public_url=None, backend="echo", capacity=3, host="h", pid=1, started_at=at, heartbeat_at=at
    )
    add_worker(store, "x")
    add_worker(store, "y")
    other = engine.open()
    since = alive_since(utcnow(), STALE_S)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(
            lambda s_w: s_w[0].adopt_calls(s_w[1], alive_since=since), [(store, "x"), (other, "y")]
        )
    adopted = sorted(c["id"] for c in [*a, *b])
    assert adopted == sorted(c["id"] for c in held[:2])
    assert all(c["worker"] == "dead" for c in [*a, *b])  # returned as they were
    owners = {store.get_call(c["id"])["worker"] for c in held[:2]}
    assert owners <= {"x", "y"} and store.get_call(held[2]["id"])["worker"] == "dead"
    assert store.adopt_calls("x", alive_since=since) == []  # nothing left to adopt


def test_inbound_claims_a_worker_or_is_refused_busy(engine: Engine) -> None:
    service = CallService(engine.open())
    add_worker(service.store, "me", capacity=1)
    fields = {"to_number": "+14155550100", "from_number": "+14155550199", "backend": "echo"}
    fields |= {"facts": {}, "payload": {}, "say_text": "hello"}
    sid1, sid2 = "CA" + "1" * 32, "CA" + "2" * 32
    call, worker, why = take_inbound(service, "me", stale_s=STALE_S, call_sid=sid1, **fields)
    assert worker["name"] == "me" and why is None and call["worker"] == "me"
    retried = take_inbound(service, "me", stale_s=STALE_S, call_sid=sid1, **fields)
    assert retried[0]["id"] == call["id"] and retried[1]["name"] == "me"  # the webhook retried: same call
    busy, none, why = take_inbound(service, "me", stale_s=STALE_S, call_sid=sid2, **fields)
    assert none is None and why.startswith("every worker is busy: 1 of 1")
    assert busy["worker"] is None and busy["say_text"] is None
    refused = [e for e in service.store.events_for(busy) if e["type"] == "refused_busy"]
    assert len(refused) == 1 and why in refused[0]["payload"]
