"""The schema comes only from numbered migrations; re-running is a no-op; upgrades keep data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from orchestrator.errors import StoreError
from orchestrator.schema import MigrationFile, build_migrations, migration_files
from orchestrator.store import Store


def tables(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def test_schema_from_empty_and_rerun_is_noop(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    store = Store(db)
    assert {"runs", "calls", "events", "transitions", "metrics", "checks", "_sqlite_migrations"} <= tables(db)
    assert all(m["applied_at"] for m in store.migration_status())
    schema_before = list(store.conn.execute("SELECT sql FROM sqlite_master ORDER BY name"))
    assert store.migrate() == []
    store.close()
    again = Store(db)
    assert again.migrate() == []
    assert list(again.conn.execute("SELECT sql FROM sqlite_master ORDER BY name")) == schema_before
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_migration_on_old_database_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    files = migration_files()
    # an "old" database: only the first migration applied, with data in it
    old = sqlite_utils.Database(sqlite3.connect(db, isolation_level=None))
    build_migrations(files[:1]).apply(old)
    old["calls"].insert(
        {
            "id": "c_old",
            "direction": "outbound-api",
            "state": "completed",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
    )
    old.conn.close()
    assert "call_analysis" not in tables(db)
    store = Store(db)  # applies the rest
    assert "call_analysis" in tables(db)
    assert store.get_call("c_old")["state"] == "completed"


def test_old_backward_stream_stops_are_read_forward_after_upgrade(tmp_path: Path) -> None:
    """0004: history written when a stopped stream stepped back to in-progress means what it means now."""
    db = tmp_path / "o.db"
    files = migration_files()
    names = [f.name for f in files]
    old = sqlite_utils.Database(sqlite3.connect(db, isolation_level=None))
    build_migrations(files[: names.index("0004_forward_only_lifecycle")]).apply(old)
    at = "2026-01-01T00:00:00Z"
    moves = {
        "c_done": [
            "queued>ringing",
            "ringing>in-progress",
            "in-progress>streaming",
            "streaming>in-progress",
            "in-progress>completed",
        ],
        "c_twice": [
            "queued>ringing",
            "ringing>streaming",
            "streaming>in-progress",
            "in-progress>streaming",
            "streaming>in-progress",
            "in-progress>completed",
        ],
        "c_live": ["queued>in-progress", "in-progress>streaming", "streaming>in-progress"],
        "c_never": ["queued>in-progress", "in-progress>completed"],
    }
    final = {"c_done": "completed", "c_twice": "completed", "c_live": "in-progress", "c_never": "completed"}
    for cid, steps in moves.items():
        old["calls"].insert(
            {"id": cid, "direction": "outbound-api", "state": final[cid], "created_at": at, "updated_at": at}
        )
        for step in steps:
            a, b = step.split(">")
            old["transitions"].insert(
                {"call_id": cid, "from_state": a, "to_state": b, "trigger": "t", "at": at}
            )
    old["events"].insert_all(
        [
            {
                "call_id": "c_done",
                "source": "local",
                "type": "backend_ended",
                "at": at,
                "accepted": 0,
                "reason": "terminal: call already completed",
            },
            {
                "call_id": "c_done",
                "source": "status_callback",
                "type": "ringing",
                "at": at,
                "accepted": 0,
                "reason": "terminal: call already completed",
            },
        ]
    )
    old.conn.close()
    store = Store(db)
    got = {cid: [(t["from_state"], t["to_state"]) for t in store.transitions_for(cid)] for cid in moves}
    assert got == {
        "c_done": [
            ("queued", "ringing"),
            ("ringing", "in-progress"),
            ("in-progress", "streaming"),
            ("streaming", "completed"),
        ],
        "c_twice": [("queued", "ringing"), ("ringing", "streaming"), ("streaming", "completed")],
        "c_live": [("queued", "in-progress"), ("in-progress", "streaming")],
        "c_never": [("queued", "in-progress"), ("in-progress", "completed")],
    }
    assert {cid: store.get_call(cid)["state"] for cid in moves} == {**final, "c_live": "streaming"}
    verdicts = [tuple(r) for r in store.conn.execute("SELECT type, accepted, reason FROM events ORDER BY id")]
    # a note is kept as accepted; a real late callback stays refused
    assert verdicts == [("backend_ended", 1, None), ("ringing", 0, "terminal: call already completed")]


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    db = sqlite_utils.Database(sqlite3.connect(tmp_path / "x.db", isolation_level=None))
    bad = [
        MigrationFile("0001_ok", "CREATE TABLE a (x);"),
        MigrationFile("0002_bad", "CREATE TABLE b (x);\nINSERT INTO nowhere VALUES (1);"),
    ]
    with pytest.raises(sqlite3.OperationalError):
        build_migrations(bad).apply(db)
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in names and "b" not in names
    assert [m.name for m in build_migrations(bad).pending(db)] == ["0002_bad"]


def test_database_from_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES "
        "('orchestrator', '9999_future', 'x')"
    )
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer version"):
        Store(db)


def test_unreadable_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(db)
