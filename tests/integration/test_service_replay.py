"""Realistic event sequences through the service into a real SQLite file, read back by a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.service import CallService
from orchestrator.store import Store

ROOT = Path(__file__).resolve().parents[2]
SID = "CA" + "ab" * 16


def cb(status: str, seq: int, token: str | None = None) -> dict[str, Any]:
    return {
        "source": "status_callback",
        "type": status,
        "call_sid": SID,
        "dedupe_key": token or f"{SID}:{seq}",
        "payload": {"CallStatus": status, "SequenceNumber": str(seq)},
    }


def media(kind: str) -> dict[str, Any]:
    return {"source": "media", "type": kind, "call_sid": SID, "payload": {"event": kind}}


SCENARIOS: dict[str, tuple[list[dict[str, Any]], str, list[tuple[str, str]], int]] = {
    # name: (events after `queued`, final state, transitions, number of rejected events)
    "completed": (
        [
            cb("initiated", 0),
            cb("ringing", 1),
            cb("in-progress", 2),
            media("start"),
            media("stop"),
            cb("completed", 3),
        ],
        "completed",
        [
            ("queued", "ringing"),
            ("ringing", "in-progress"),
            ("in-progress", "streaming"),
            ("streaming", "completed"),
        ],
        0,
    ),
    "busy": (
        [cb("initiated", 0), cb("ringing", 1), cb("busy", 2)],
        "busy",
        [("queued", "ringing"), ("ringing", "busy")],
        0,
    ),
    "no-answer": (
        [cb("initiated", 0), cb("ringing", 1), cb("no-answer", 3)],
        "no-answer",
        [("queued", "ringing"), ("ringing", "no-answer")],
        0,
    ),
    "failed": ([cb("initiated", 0), cb("failed", 1)], "failed", [("queued", "failed")], 0),
    "canceled-while-ringing": (
        [cb("initiated", 0), cb("ringing", 1), cb("canceled", 2)],
        "canceled",
        [("queued", "ringing"), ("ringing", "canceled")],
        0,
    ),
    "stream-before-answered": (
        [
            cb("initiated", 0),
            cb("ringing", 1),
            media("start"),
            cb("in-progress", 2),
            media("stop"),
            cb("completed", 4),
        ],
        "completed",
        [("queued", "ringing"), ("ringing", "streaming"), ("streaming", "completed")],
        1,
    ),
    "duplicates-and-shuffled": (
        [
            cb("ringing", 1),
            cb("initiated", 0),
            cb("ringing", 1, token=None),
            cb("in-progress", 2),
            cb("in-progress", 2),
            cb("completed", 5),
            cb("ringing", 1),
            cb("completed", 5),
            cb("failed", 6),
        ],
        "completed",
        [("queued", "ringing"), ("ringing", "in-progress"), ("in-progress", "completed")],
        5,
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_replay_and_reopen_in_new_process(tmp_path: Path, name: str) -> None:
    events, final, transitions, rejected = SCENARIOS[name]
    db = tmp_path / "calls.db"
    service = CallService(Store(db))
    call = service.store.create_call(
        direction="outbound-api", to_number="+14155550100", from_number="+14155550199", run="replay"
    )
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID, payload={"sid": SID})
    for ev in events:
        service.record(**ev)
    doc = service.document(call["id"])
    assert doc["call"]["state"] == final
    assert [(t["from"], t["to"]) for t in doc["transitions"]] == transitions
    assert len(doc["events"]) == len(events) + 1  # every raw event kept, accepted or not
    assert sum(1 for e in doc["events"] if e["accepted"] is False) == rejected
    service.store.close()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "show", SID, "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    again = json.loads(out.stdout)
    assert again["call"] == doc["call"]
    assert again["transitions"] == doc["transitions"]
    assert again["events"] == doc["events"]


def test_duplicate_is_stored_with_reason_and_no_second_transition(tmp_path: Path) -> None:
    service = CallService(Store(tmp_path / "d.db"))
    call = service.store.create_call(direction="outbound-api", to_number=None, from_number=None)
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID)
    first = service.record(**cb("ringing", 1))
    again = service.record(**cb("ringing", 1))
    assert first.accepted and first.changed
    assert not again.accepted and again.reason == "duplicate"
    assert len(service.store.transitions_for(call["id"])) == 1


def test_unknown_call_is_stored_and_reported(tmp_path: Path) -> None:
    service = CallService(Store(tmp_path / "u.db"))
    rec = service.record(
        source="status_callback", type="ringing", call_sid="CA" + "0" * 32, payload={"x": "1"}
    )
    assert not rec.accepted and rec.reason == "unknown call" and rec.call is None
    row = service.store.db.execute("SELECT source, type, accepted, reason FROM events").fetchone()
    assert tuple(row) == ("status_callback", "ringing", 0, "unknown call")


def test_restart_reconciles_live_calls(tmp_path: Path) -> None:
    from orchestrator.reconcile import CarrierAnswer, reconcile_call

    db = tmp_path / "r.db"
    service = CallService(Store(db))
    call = service.store.create_call(direction="outbound-api", to_number=None, from_number=None)
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID)
    service.record(**media("start"))
    assert service.store.get_call(SID)["state"] == "streaming"
    service.store.close()

    restarted = CallService(Store(db))  # a new process would do exactly this at start
    assert restarted.store.get_call(SID)["state"] == "streaming"  # loaded back at its stored state
    # no carrier to ask: the stream is known lost, how the call ended is not (marked, not guessed)
    done = reconcile_call(
        restarted, call["id"], CarrierAnswer(None, "the carrier cannot be asked"), max_call_seconds=300
    )
    assert [r.call["state"] for r in done if r.call] == ["streaming", "streaming"]  # forward only
    events = restarted.store.events_for(restarted.store.get_call(SID))
    assert [(e["source"], e["type"], e["accepted"]) for e in events[-2:]] == [
        ("reconcile", "stream_lost", 1),
        ("reconcile", "unsettled", 1),
    ]
    # the next round knows the stream is already gone: not lost twice, and unsettled only when why changes
    again = reconcile_call(
        restarted, call["id"], CarrierAnswer(None, "the carrier cannot be asked"), max_call_seconds=300
    )
    assert again == []
    # a late real callback then settles it
    late = restarted.record(**cb("completed", 3))
    assert late.accepted and restarted.store.get_call(SID)["state"] == "completed"


@pytest.mark.parametrize("terminal_first", [False, True])
def test_notes_are_stored_as_they_are_and_never_move_the_state(tmp_path: Path, terminal_first: bool) -> None:
    service = CallService(Store(tmp_path / "n.db"))
    call = service.store.create_call(direction="outbound-api", to_number=None, from_number=None)
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=SID)
    service.record(**media("start"))
    if terminal_first:  # the carrier's end can beat the media's own end
        service.record(**cb("completed", 3))
    state = service.store.get_call(SID)["state"]
    notes = [("local", "backend_ended"), ("local", "refused_busy"), ("media", "long_gap")]
    for source, kind in notes:
        rec = service.record(source=source, type=kind, call_id=call["id"], payload={"reason": "x"})
        assert rec.accepted and rec.reason is None and rec.outcome is None and not rec.changed
    assert service.store.get_call(SID)["state"] == state
    rows = service.store.db.execute(
        "SELECT source, type, accepted, reason FROM events WHERE source IN ('local', 'media') AND type != 'start'"
    ).fetchall()
    assert [tuple(r) for r in rows] == [(s, k, 1, None) for s, k in notes]


def test_a_failing_judgement_keeps_the_raw_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import lifecycle

    service = CallService(Store(tmp_path / "e.db"))
    call = service.store.create_call(direction="outbound-api", to_number=None, from_number=None)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(lifecycle, "handle", broken)
    with pytest.raises(RuntimeError):
        service.record(
            source="status_callback",
            type="ringing",
            call_id=call["id"],
            call_sid=SID,
            dedupe_key=f"{SID}:1",
            payload={"CallStatus": "ringing"},
        )
    rows = service.store.events_for(service.store.get_call(call["id"]))
    assert [(r["type"], r["accepted"], r["reason"]) for r in rows] == [
        ("ringing", 0, "error: RuntimeError: judge exploded")
    ]
    assert service.store.get_call(call["id"])["state"] == "queued"  # nothing half-applied
    monkeypatch.undo()
    retry = service.record(
        source="status_callback",
        type="ringing",
        call_id=call["id"],
        call_sid=SID,
        dedupe_key=f"{SID}:1",
        payload={"CallStatus": "ringing"},
    )
    assert retry.accepted  # Twilio's retry of the failed one is not taken for a duplicate
