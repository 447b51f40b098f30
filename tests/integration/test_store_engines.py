"""Every store behaviour, with the same assertions, against SQLite (`Store`) and PostgreSQL (`PgStore`).

The PostgreSQL half runs in a throwaway cluster (tests/integration/pg_server.py), a fresh database per
test. What is true is stated by the test itself (the values it wrote, the order it wrote them in, the
scenario tables of test_service_replay), never read back through the other engine.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.errors import StoreError, UnknownCall
from orchestrator.schema import migration_files
from orchestrator.service import CallService
from orchestrator.store import Store, iso
from orchestrator.store_pg import PgStore
from tests.integration.engines import Engine
from tests.integration.test_service_replay import SCENARIOS, SID, cb

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
CALL_KEYS = {
    "id", "call_sid", "run_id", "direction", "to_number", "from_number", "state", "created_at",
    "updated_at", "ended_at", "end_reason", "backend", "say_text", "token", "stream_sid",
    "recording_path", "facts", "worker",
}  # fmt: skip
EVENT_KEYS = {
    "id",
    "call_id",
    "call_sid",
    "source",
    "type",
    "at",
    "dedupe_key",
    "accepted",
    "reason",
    "payload",
}


def new_call(store: Any, **kw: Any) -> dict[str, Any]:
    return dict(
        store.create_call(
            direction="outbound-api", to_number="+14155550100", from_number="+14155550199", **kw
        )
    )


def test_the_right_engine_is_opened(engine: Engine) -> None:
    store = engine.open()
    assert isinstance(store, Store if engine.name == "sqlite" else PgStore)


def test_schema_from_empty_and_rerun_is_noop(engine: Engine) -> None:
    store = engine.open(migrate=False)
    names = [m.name for m in migration_files()]
    assert [m["name"] for m in store.migration_status()] == names
    assert all(m["applied_at"] is None for m in store.migration_status())
    assert store.migrate() == names
    status = store.migration_status()
    assert all(datetime.fromisoformat(m["applied_at"]).tzinfo is not None for m in status)
    assert store.migrate() == []
    store.close()
    again = engine.open()
    assert again.migrate() == []
    assert again.migration_status() == status


def test_create_find_get_update(engine: Engine) -> None:
    store = engine.open()
    call = new_call(store, run="r1", backend="echo", say_text="hello", facts={"tunnel": "up", "n": 2})
    assert set(call) == CALL_KEYS
    assert call["id"].startswith("c_") and len(call["id"]) == 18
    assert isinstance(call["run_id"], int) and store.run_label(call["run_id"]) == "r1"
    assert call["state"] == "queued" and call["call_sid"] is None and call["ended_at"] is None
    assert ISO_MS.match(call["created_at"]) and call["created_at"] == call["updated_at"]
    assert call["facts"] == '{"tunnel": "up", "n": 2}' and len(call["token"]) == 32
    assert store.ensure_run("r1") == call["run_id"] and store.ensure_run("r2") != call["run_id"]
    assert store.run_label(None) is None and store.run_label(10_000) is None

    store.update_call(call["id"], call_sid=SID, state="ringing", recording_path="/r/a.wav")
    by_sid = store.find_call(call_sid=SID)
    assert by_sid is not None and by_sid["id"] == call["id"] and by_sid["state"] == "ringing"
    assert by_sid["updated_at"] >= call["updated_at"]
    assert store.find_call(call_id=call["id"]) == by_sid == store.get_call(SID) == store.get_call(call["id"])
    assert store.find_call(call_id="c_nope") is None and store.find_call() is None
    assert store.get_call(call["id"][:8] + "…") == by_sid and store.get_call(SID[:10]) == by_sid
    with pytest.raises(ValueError, match="unknown call column"):
        store.update_call(call["id"], colour="red")
    with pytest.raises(UnknownCall, match="no call with id"):
        store.get_call("c_missing")

    store.forget_recording(call["id"], "/r/other.wav")  # a newer recording is left alone
    assert store.get_call(call["id"])["recording_path"] == "/r/a.wav"
    store.forget_recording(call["id"], "/r/a.wav")
    assert store.get_call(call["id"])["recording_path"] is None


def test_an_ambiguous_prefix_names_the_candidates(engine: Engine) -> None:
    store = engine.open()
    ids = [new_call(store)["id"] for _ in range(3)]
    for i, cid in enumerate(ids):  # force a shared start: c_abcd0, c_abcd1, c_abcd2
        store.update_call(cid, call_sid=f"CAabcd{i}" + "0" * 26)
    with pytest.raises(UnknownCall, match=r"start of 3 calls"):
        store.get_call("CAabcd")
    assert store.get_call("CAabcd1")["id"] == ids[1]


def test_events_judged_and_found_by_call_or_sid(engine: Engine) -> None:
    store = engine.open()
    call = new_call(store)
    store.update_call(call["id"], call_sid=SID)
    call = store.get_call(call["id"])
    first = store.insert_event(source="rest", type="queued", at=T0, payload={"a": 1}, call_id=call["id"])
    by_sid = store.insert_event(
        source="status_callback", type="ringing", at=T0 + timedelta(seconds=1), payload={"when": T0},
        call_sid=SID, dedupe_key=f"{SID}:1",
    )  # fmt: skip
    other = store.insert_event(source="rest", type="queued", at=T0, payload={}, call_sid="CA" + "9" * 32)
    assert isinstance(first, int) and first < by_sid < other
    store.judge_event(first, accepted=True, reason=None, call_id=None)
    store.judge_event(by_sid, accepted=False, reason="out of order", call_id=call["id"])
    events = store.events_for(call)
    assert [e["id"] for e in events] == [first, by_sid]
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [(e["accepted"], e["reason"], e["call_id"]) for e in events] == [
        (1, None, call["id"]),
        (0, "out of order", call["id"]),  # the verdict's call id fills in the missing one
    ]
    assert events[1]["at"] == "2026-12-03T12:00:01.000Z" and events[1]["dedupe_key"] == f"{SID}:1"
    assert events[1]["payload"] == '{"when": "2026-12-03 12:00:00+00:00"}'  # default=str, as written
    assert store.last_event(call["id"], "status_callback")["id"] == by_sid
    assert store.last_event(call["id"], "media") is None


def test_dedupe_counts_earlier_events_except_bad_signatures_and_errors(engine: Engine) -> None:
    store = engine.open()
    call = new_call(store)

    def event(key: str, reason: str | None = "n/a") -> int:
        eid = store.insert_event(source="status_callback", type="ringing", at=T0, payload={}, dedupe_key=key)
        if reason != "n/a":
            store.judge_event(eid, accepted=reason is None, reason=reason, call_id=call["id"])
        return eid

    a = event("k1", None)
    assert store.dedupe_seen("k1", a) is False  # the first of its key
    b = event("k1")
    assert store.dedupe_seen("k1", b) is True
    c = event("k2", "bad signature: X-Twilio-Signature")
    d = event("k2", "error: RuntimeError: boom")
    e = event("k2")
    assert (store.dedupe_seen("k2", c), store.dedupe_seen("k2", e)) == (False, False)
    assert d < e
    f = event("k3", "unknown call")  # refused for another reason: still the key's first delivery
    g = event("k3")
    assert store.dedupe_seen("k3", g) is True and f < g


def test_transitions_in_order(engine: Engine) -> None:
    store = engine.open()
    call = new_call(store)
    ev = store.insert_event(source="rest", type="queued", at=T0, payload={}, call_id=call["id"])
    for i, (a, b) in enumerate([("queued", "ringing"), ("ringing", "in-progress")]):
        store.record_transition(
            call["id"], from_state=a, to_state=b, trigger="t", at=T0 + timedelta(seconds=i),
            event_id=ev if i else None,
        )  # fmt: skip
    rows = store.transitions_for(call["id"])
    assert set(rows[0]) == {"id", "call_id", "from_state", "to_state", "trigger", "at", "event_id"}
    assert [(r["from_state"], r["to_state"], r["event_id"], r["at"]) for r in rows] == [
        ("queued", "ringing", None, "2026-12-03T12:00:00.000Z"),
        ("ringing", "in-progress", ev, "2026-12-03T12:00:01.000Z"),
    ]


def test_metrics_upsert_checks_analysis_transcript(engine: Engine) -> None:
    store = engine.open()
    cid = new_call(store)["id"]
    store.put_metrics(cid, {"latency_ms": 120, "jitter_ms": 0.8, "missing": None}, {"latency_ms": "ms"})
    store.put_metrics(cid, {"latency_ms": 95.5}, {"latency_ms": "ms"})
    metrics = store.metrics_for(cid)
    assert metrics == {"latency_ms": 95.5, "jitter_ms": 0.8}
    assert all(type(v) is float for v in metrics.values())
    assert store.metric_units_for(cid) == {"latency_ms": "ms"}

    store.add_check(cid, "answered", "fail", "no answer", "auto")
    store.add_check(cid, "answered", "pass", "answered at 2.1 s", "auto")  # replaces the automatic one
    store.add_check(cid, "answered", "fail", "I listened", "manual", note="heard nothing")
    store.add_check(cid, "echo", "unknown", "no audio", "auto")
    checks = store.checks_for(cid)
    assert [(c["criterion"], c["status"], c["decided_by"], c["note"]) for c in checks] == [
        ("answered", "pass", "auto", None),
        ("answered", "fail", "manual", "heard nothing"),
        ("echo", "unknown", "auto", None),
    ]
    assert set(checks[0]) == {"id", "call_id", "criterion", "status", "evidence", "decided_by", "note", "at"}
    # in a transaction, as the service writes them (alone, SQLite's delete would stand: its add_check is
    # two autocommitted statements, PgStore's one transaction)
    with pytest.raises(Exception), store.transaction():  # noqa: B017  (each engine's constraint error)
        store.add_check(cid, "answered", "maybe", "x", "auto")
    assert len(store.checks_for(cid)) == 3  # the refused check removed nothing

    assert store.analysis_for(cid) is None
    store.put_analysis(cid, {"turns": [1, 2], "echo_db": -31.5})
    store.put_analysis(cid, {"turns": [1, 2, 3], "z": {"a": None}, "b": 1})
    assert store.analysis_for(cid) == {"turns": [1, 2, 3], "z": {"a": None}, "b": 1}
    assert list(store.analysis_for(cid)) == ["turns", "z", "b"]  # key order as written

    store.add_transcript(cid, [])
    store.add_transcript(cid, [(1200, "hello"), (3400.5, "there")])
    store.add_transcript(cid, [(10.0, "later row, earlier time")])
    assert store.transcript_for(cid) == [
        {"at_ms": 1200.0, "text": "hello"},
        {"at_ms": 3400.5, "text": "there"},
        {"at_ms": 10.0, "text": "later row, earlier time"},
    ]


def test_list_count_unfinished(engine: Engine) -> None:
    store = engine.open()
    same = "2026-12-01T10:00:00.000Z"
    made = []
    for i, (run, state) in enumerate(
        [("a", "completed"), ("a", "ringing"), ("b", "streaming"), (None, "queued")]
    ):
        cid = new_call(store, run=run)["id"]
        store.update_call(cid, state=state, created_at=same if i < 3 else "2026-12-02T10:00:00.000Z")
        made.append(cid)
    assert store.count_calls() == 4
    listed = store.list_calls()
    assert [c["id"] for c in listed] == [made[3], made[2], made[1], made[0]]  # newest; ties: last made first
    assert set(listed[0]) == CALL_KEYS | {"run"} and [c["run"] for c in listed] == [None, "b", "a", "a"]
    assert [c["id"] for c in store.list_calls(run="a")] == [made[1], made[0]]
    assert [c["id"] for c in store.list_calls(state="streaming")] == [made[2]]
    assert [c["id"] for c in store.list_calls(since="2026-12-02T00:00:00.000Z")] == [made[3]]
    assert [c["id"] for c in store.list_calls(limit=2)] == [made[3], made[2]]
    assert store.list_calls(run="nobody") == []

    # updated_at is stamped by update_call itself: the test sets it beside the store (a tie on purpose)
    for cid, at in zip(made, ["05", "09", "05", "05"], strict=True):
        engine.sql(f"UPDATE calls SET updated_at = '2026-12-01T10:00:{at}.000Z' WHERE id = '{cid}'")
    unfinished = store.unfinished_calls()
    assert [c["id"] for c in unfinished] == [made[2], made[3], made[1]]  # least recently updated first
    assert set(unfinished[0]) == CALL_KEYS
    quiet = store.unfinished_calls(quiet_before="2026-12-01T10:00:09.000Z")
    assert [c["id"] for c in quiet] == [made[2], made[3]]
    assert [c["id"] for c in store.unfinished_calls(limit=1)] == [made[2]]


def test_transaction_is_all_or_nothing_and_a_savepoint_fails_alone(engine: Engine) -> None:
    store = engine.open()
    with pytest.raises(RuntimeError), store.transaction():
        cid = new_call(store, run="rolled-back")["id"]
        store.insert_event(source="rest", type="queued", at=T0, payload={}, call_id=cid)
        raise RuntimeError("a failure after the writes")
    assert store.count_calls() == 0 and store.list_calls(run="rolled-back") == []
    with store.transaction():
        kept = new_call(store)["id"]
        with pytest.raises(RuntimeError), store.savepoint():
            store.put_metrics(kept, {"x": 1.0}, {})
            raise RuntimeError("this part only")
        with store.transaction():  # nested: a savepoint, committed with the outer one
            store.add_check(kept, "answered", "pass", "e", "auto")
    assert store.count_calls() == 1 and store.metrics_for(kept) == {}
    assert [c["status"] for c in store.checks_for(kept)] == ["pass"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_service_scenarios_give_the_same_history(engine: Engine, name: str) -> None:
    """test_service_replay's scenarios, with their own expected states, transitions and rejections."""
    events, final, transitions, rejected = SCENARIOS[name]
    service = CallService(engine.open())
    store = service.store
    call = store.create_call(direction="outbound-api", to_number=None, from_number=None, run="replay")
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID, payload={"sid": SID})
    for ev in events:
        service.record(**ev)
    call = store.get_call(SID)
    assert call["state"] == final
    assert [(t["from_state"], t["to_state"]) for t in store.transitions_for(call["id"])] == transitions
    stored = store.events_for(call)
    assert len(stored) == len(events) + 1
    assert sum(1 for e in stored if e["accepted"] == 0) == rejected


def test_a_retried_callback_is_a_duplicate(engine: Engine) -> None:
    service = CallService(engine.open())
    call = service.store.create_call(direction="outbound-api", to_number=None, from_number=None)
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID)
    first = service.record(**cb("ringing", 1))
    again = service.record(**cb("ringing", 1))
    assert first.accepted and first.changed
    assert not again.accepted and again.reason == "duplicate"
    assert len(service.store.transitions_for(call["id"])) == 1


def test_newer_schema_is_refused_untouched(engine: Engine) -> None:
    engine.open().close()
    engine.sql(
        f"INSERT INTO {engine.migrations_table} (migration_set, name, applied_at) "
        "VALUES ('orchestrator', '9999_future', 'x')"
    )
    with pytest.raises(StoreError, match=r"newer version \(unknown migrations: 9999_future\)"):
        engine.open()
    assert engine.sql("SELECT count(*) FROM calls") == [(0,)]


def test_another_applications_database_is_refused_untouched(engine: Engine) -> None:
    engine.sql("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(StoreError, match=r"another application's .*customers"):
        engine.open()
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if engine.name == "sqlite"
        else "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    assert engine.sql(tables) == [("customers",)]


def test_upgrade_reads_old_backward_stream_stops_forward(engine: Engine) -> None:
    """0004 on an old database (0001-0003 applied, history written the old way), on each engine."""
    names = [m.name for m in migration_files()]
    engine.apply_first(names.index("0004_forward_only_lifecycle"))
    at = "2026-01-01T00:00:00Z"
    rows = {"c_done": ("completed", "queued>ringing ringing>streaming streaming>in-progress in-progress>completed"),
            "c_live": ("in-progress", "queued>in-progress in-progress>streaming streaming>in-progress")}  # fmt: skip
    script = []
    for cid, (state, steps) in rows.items():
        script.append(
            f"INSERT INTO calls (id, direction, state, created_at, updated_at) "
            f"VALUES ('{cid}', 'outbound-api', '{state}', '{at}', '{at}')"
        )
        for step in steps.split():
            a, b = step.split(">")
            script.append(
                "INSERT INTO transitions (call_id, from_state, to_state, trigger, at) "
                f"VALUES ('{cid}', '{a}', '{b}', 't', '{at}')"
            )
    script.append(
        "INSERT INTO events (call_id, source, type, at, accepted, reason) VALUES "
        f"('c_done', 'local', 'backend_ended', '{at}', 0, 'terminal: call already completed')"
    )
    engine.sql(";\n".join(script))
    store = engine.open()
    assert [m["applied_at"] is not None for m in store.migration_status()] == [True] * len(names)
    got = {cid: [(t["from_state"], t["to_state"]) for t in store.transitions_for(cid)] for cid in rows}
    assert got == {
        "c_done": [("queued", "ringing"), ("ringing", "streaming"), ("streaming", "completed")],
        "c_live": [("queued", "in-progress"), ("in-progress", "streaming")],
    }
    assert (
        store.get_call("c_live")["state"] == "streaming" and store.get_call("c_done")["state"] == "completed"
    )
    assert [(e["accepted"], e["reason"]) for e in store.events_for(store.get_call("c_done"))] == [(1, None)]


def test_timestamps_are_the_same_strings(engine: Engine) -> None:
    store = engine.open()
    at = datetime(2026, 12, 3, 13, 4, 5, 678_901, tzinfo=timezone(timedelta(hours=2)))
    cid = new_call(store)["id"]
    eid = store.insert_event(source="rest", type="x", at=at, payload={}, call_id=cid)
    [row] = [e for e in store.events_for(store.get_call(cid)) if e["id"] == eid]
    assert row["at"] == iso(at) == "2026-12-03T11:04:05.678Z"


async def test_the_writer_threads_group_commit(engine: Engine) -> None:
    """test_async_service's batch on each engine: each job atomic, all committed before the answers."""
    import asyncio

    from orchestrator.writer import AsyncService

    service = AsyncService(engine.open)
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
        # answered means committed: another connection sees it all, and nothing of the failed job
        assert engine.sql("SELECT count(*) FROM events WHERE type = 'ringing'") == [(40,)]
        assert engine.sql("SELECT count(*) FROM checks") == [(0,)]
        assert engine.sql("SELECT count(*) FROM transitions") == [(1,)]
    finally:
        await service.close()
