"""What only a database shared by several processes must get right, against a real PostgreSQL server:
two stores judging the same retried callback at once apply it once, a call is not moved twice from
the same state, concurrent starts migrate once; and the one-line errors of a bad target.

Races are made certain, not hoped for: the first store holds its transaction open until the server
itself shows the second one waiting on a lock (pg_stat_activity), and only then lets go.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlsplit

import pytest

from orchestrator.errors import StoreError, StoreUnreachable
from orchestrator.schema import migration_files
from orchestrator.service import CallService
from orchestrator.store import utcnow
from orchestrator.stores import open_store, shown_target
from tests.integration.engines import Engine
from tests.integration.pg_server import PgCluster
from tests.integration.test_service_replay import SID, cb


def wait_for_lock_waiter(cluster: PgCluster, url: str, timeout_s: float = 20.0) -> None:
    """Return once some backend on `url`'s database waits on a lock (fail after `timeout_s`)."""
    import psycopg

    dbname = urlsplit(url).path.lstrip("/")
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                [dbname],
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    pytest.fail("the second store never waited on the first one's lock")


def new_call(store: Any) -> dict[str, Any]:
    call = store.create_call(direction="outbound-api", to_number=None, from_number=None)
    CallService(store).record(source="rest", type="queued", call_id=call["id"], call_sid=SID)
    return dict(call)


@pytest.mark.parametrize("first_commits", [True, False])
def test_two_stores_racing_on_one_dedupe_key(
    pg_engine: Engine, pg_cluster: PgCluster, first_commits: bool
) -> None:
    """The second waits for the first's claim: a duplicate if the first committed, the key's first if not."""
    one, two = pg_engine.open(), pg_engine.open()
    new_call(one)
    key = f"{SID}:1"
    answer: dict[str, bool] = {}

    def second() -> None:
        with two.transaction():
            eid = two.insert_event(
                source="status_callback", type="ringing", at=utcnow(), payload={}, dedupe_key=key
            )
            answer["seen"] = two.dedupe_seen(key, eid)

    class Abandon(Exception):
        pass

    with nullcontext() if first_commits else pytest.raises(Abandon):
        with one.transaction():
            eid = one.insert_event(
                source="status_callback", type="ringing", at=utcnow(), payload={}, dedupe_key=key
            )
            assert one.dedupe_seen(key, eid) is False
            racer = threading.Thread(target=second)
            racer.start()
            wait_for_lock_waiter(pg_cluster, pg_engine.target)  # it is blocked on our uncommitted claim
            assert "seen" not in answer
            if not first_commits:
                raise Abandon
    racer.join(timeout=30)
    assert answer == {"seen": first_commits}


def test_the_same_callbacks_through_two_stores_at_once_are_applied_once(pg_engine: Engine) -> None:
    """Two workers each receive every retried callback of 12 calls, at the same moment."""
    stores = [pg_engine.open(), pg_engine.open()]
    calls = []
    for i in range(12):
        call = stores[0].create_call(direction="outbound-api", to_number=None, from_number=None)
        CallService(stores[0]).record(
            source="rest", type="queued", call_id=call["id"], call_sid=f"CA{i:032d}"
        )
        calls.append(f"CA{i:032d}")
    sequence = ["initiated", "ringing", "in-progress", "completed"]
    barrier = threading.Barrier(2)

    def worker(store: Any) -> list[bool]:
        service = CallService(store)
        accepted = []
        for seq, status in enumerate(sequence):
            for sid in calls:
                barrier.wait(timeout=30)
                ev = {**cb(status, seq), "call_sid": sid, "dedupe_key": f"{sid}:{seq}"}
                accepted.append(service.record(**ev).accepted)
        return accepted

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(worker, stores))
    flat = [a for r in results for a in r]
    # initiated is a confirmation of queued (accepted, no move): each delivery pair has exactly one winner
    assert len(flat) == 2 * len(calls) * len(sequence)
    per_pair = [a + b for a, b in zip(results[0], results[1], strict=True)]
    assert per_pair == [1] * len(calls) * len(sequence)
    for sid in calls:
        call = stores[0].get_call(sid)
        assert call["state"] == "completed"
        moves = [(t["from_state"], t["to_state"]) for t in stores[1].transitions_for(call["id"])]
        assert moves == [("queued", "ringing"), ("ringing", "in-progress"), ("in-progress", "completed")]
        reasons = [e["reason"] for e in stores[1].events_for(call) if e["source"] == "status_callback"]
        assert sorted(r or "" for r in reasons) == [""] * 4 + ["duplicate"] * 4


def test_a_call_read_in_a_transaction_is_locked_until_it_commits(
    pg_engine: Engine, pg_cluster: PgCluster
) -> None:
    """Two different callbacks for one call on two workers: the second reads the state the first left."""
    one, two = pg_engine.open(), pg_engine.open()
    call = new_call(one)
    seen: dict[str, str] = {}

    def second() -> None:
        with two.transaction():
            row = two.find_call(call_id=call["id"])
            assert row is not None
            seen["state"] = row["state"]

    with one.transaction():
        assert one.find_call(call_id=call["id"]) is not None
        racer = threading.Thread(target=second)
        racer.start()
        wait_for_lock_waiter(pg_cluster, pg_engine.target)
        one.update_call(call["id"], state="ringing")
    racer.join(timeout=30)
    assert seen == {"state": "ringing"}


def test_concurrent_starts_apply_each_migration_once(pg_engine: Engine) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: pg_engine.open(), range(4)))
    pg_engine.opened.extend(stores)
    rows = pg_engine.sql("SELECT name, count(*) FROM _orchestrator_migrations GROUP BY name ORDER BY name")
    assert rows == [(m.name, 1) for m in migration_files()]
    assert all(m["applied_at"] for m in stores[3].migration_status())


def test_one_store_serves_several_threads(pg_engine: Engine) -> None:
    store = pg_engine.open()
    cid = store.create_call(direction="outbound-api", to_number=None, from_number=None)["id"]

    def put(i: int) -> None:
        store.put_metrics(cid, {f"m{i}": float(i)}, {})
        with store.transaction():
            store.add_transcript(cid, [(float(i), f"piece {i}")])

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(put, range(30)))
    assert store.metrics_for(cid) == {f"m{i}": float(i) for i in range(30)}
    assert sorted(p["at_ms"] for p in store.transcript_for(cid)) == [float(i) for i in range(30)]


def test_a_database_with_none_of_our_tables_is_refused_for_reading(pg_engine: Engine) -> None:
    with pytest.raises(StoreError, match=r"no orchestrator tables in .* yet \(`orchestrator migrate`"):
        pg_engine.open(create=False)
    assert pg_engine.sql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [
        (0,)
    ]
    pg_engine.open().close()
    assert pg_engine.open(create=False, migrate=False).count_calls() == 0


def test_a_missing_database_is_one_line(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url("no_such_db")
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert str(err.value) == (
        f"PostgreSQL at 127.0.0.1:{urlsplit(url).port} has no database 'no_such_db': create it "
        "(createdb no_such_db) or check ORCHESTRATOR_DB"
    )


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    pytest.importorskip("psycopg")
    port = _closed_port()
    url = f"postgresql://orch:s3cret-Pw@127.0.0.1:{port}/calls"
    with pytest.raises(StoreUnreachable) as err:
        open_store(url)
    message = str(err.value)
    assert message == (
        f"cannot reach PostgreSQL at 127.0.0.1:{port} (connection refused): start it or check "
        f"ORCHESTRATOR_DB (postgresql://orch:***@127.0.0.1:{port}/calls)"
    )
    assert "\n" not in message and "s3cret" not in message
    assert "s3cret" not in shown_target(url) and "s3cret" not in shown_target(url + "?password=s3cret")


def test_a_malformed_url_is_one_line() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(
        StoreError, match=r"^ORCHESTRATOR_DB postgresql://u:\*\*\*@h/db\?bogus=1 is not a valid"
    ):
        open_store("postgresql://u:pw@h/db?bogus=1")
