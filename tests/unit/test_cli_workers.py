"""The workers' command line: `orchestrator workers` (table, JSON, --forget), `serve --worker` without a
public URL, and `orchestrator call` over a database with workers: a session claimed, or one line and
exit 3 when every worker is full (and no call row left behind)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator import exits
from orchestrator.cli import cli
from orchestrator.store import Store, iso, utcnow
from tests.unit.test_cli_errors import _carrier_env, closed_port, one_line_error


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith(("TWILIO_", "ORCHESTRATOR_", "MOSHI_", "WORKER_", "PUBLIC_URL", "BACKEND")):
            monkeypatch.delenv(key)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def planted(db: Path, *workers: tuple[str, int, float]) -> Store:
    """Workers (name, capacity, heartbeat age in s) in a new database."""
    store = Store(db)
    for name, capacity, age_s in workers:
        at = iso(utcnow() - timedelta(seconds=age_s))
        store.put_worker(
            name,
            public_url=f"https://{name}.example.test",
            backend="echo",
            capacity=capacity,
            host="box",
            pid=4242,
            started_at=at,
            heartbeat_at=at,
        )
    return store


def test_workers_lists_status_and_sessions(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    store = planted(db, ("a", 2, 0), ("gone", 1, 60))
    store.stop_worker("gone", at=iso(utcnow()))
    result = invoke("workers", "--db", str(db))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["name", "status", "sessions", "streams"]
    assert lines[2].split()[:3] == ["a", "up", "0/2"] and lines[3].split()[:2] == ["gone", "stopped"]
    doc = json.loads(invoke("workers", "--db", str(db), "--json").output)
    assert [(w["name"], w["status"], w["capacity"]) for w in doc["workers"]] == [
        ("a", "up", 2),
        ("gone", "stopped", 1),
    ]


def test_workers_empty_and_forget(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    Store(db)
    assert "no workers in this database" in invoke("workers", "--db", str(db)).output
    planted(db, ("a", 1, 0), ("dead", 1, 60))
    one_line_error(invoke("workers", "--db", str(db), "--forget", "a"), exits.USAGE, "worker 'a' is up")
    one_line_error(invoke("workers", "--db", str(db), "--forget", "zz"), exits.USAGE, "no worker named 'zz'")
    assert invoke("workers", "--db", str(db), "--forget", "dead").output == "forgot worker dead\n"
    assert [w["name"] for w in Store(db).list_workers()] == ["a"]


def test_serve_as_a_worker_needs_its_own_public_url(tmp_path: Path) -> None:
    env = {"TWILIO_AUTH_TOKEN": "t", "ORCHESTRATOR_DB": str(tmp_path / "s.db")}
    one_line_error(invoke("serve", "--worker", "a", env=env), exits.USAGE, "needs a public URL of its own")
    one_line_error(invoke("serve", "--worker", "no spaces", env=env), exits.USAGE, "a worker name is 1-40")


def test_call_with_every_worker_full_says_so_and_leaves_no_row(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    store = planted(db, ("a", 1, 0), ("dead", 3, 60))
    held = store.create_call(direction="outbound-api", to_number=None, from_number=None)
    store.update_call(held["id"], worker="a")
    env = _carrier_env(db, closed_port(), closed_port())  # no local server: none is asked
    result = invoke("call", "+14155550123", env=env)
    one_line_error(result, exits.UNAVAILABLE, "every worker is busy: 1 of 1 sessions in use on 1 worker")
    assert [c["id"] for c in Store(db).list_calls()] == [held["id"]]


def test_call_claims_a_worker_and_dials_with_its_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import bootstrap
    from orchestrator.twilio_rest import PlacedCall

    db = tmp_path / "calls.db"
    planted(db, ("a", 1, 0), ("b", 2, 0))
    dialled = {}

    def fake_place_call(client: object, **kw: object) -> PlacedCall:
        dialled.update(kw)
        return PlacedCall(sid="CA" + "7" * 32, status="queued")

    monkeypatch.setattr(bootstrap, "place_call", fake_place_call)
    result = invoke("call", "+14155550123", "--json", env=_carrier_env(db, closed_port(), closed_port()))
    assert result.exit_code == 0, result.output
    row = Store(db).get_call(json.loads(result.stdout)["id"])
    assert row["worker"] == "b"  # the most free sessions
    assert "wss://b.example.test/media" in str(dialled["twiml"])
    assert str(dialled["status_callback"]).startswith("https://b.example.test/twilio/status")
    shown = invoke("show", row["id"], "--db", str(db))
    assert shown.exit_code == 0 and "\nworker b\n" in shown.output
    assert json.loads(invoke("show", row["id"], "--db", str(db), "--json").output)["call"]["worker"] == "b"


class _DbDown(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "ok": False,
                "db": {"state": "unreachable", "since": "2026-12-04T10:00:00.000Z", "last_error": "x"},
            }
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_call_refuses_while_the_servers_database_is_away(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _DbDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = _carrier_env(tmp_path / "calls.db", int(server.server_address[1]), closed_port())
        result = invoke("call", "+14155550123", env=env)
    finally:
        server.shutdown()
        server.server_close()
    one_line_error(result, exits.UNAVAILABLE, "cannot reach its database since 2026-12-04T10:00:00.000Z")
    assert not (tmp_path / "calls.db").exists() or not Store(tmp_path / "calls.db").list_calls()


def test_doctor_says_how_the_workers_are(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    planted(db, ("a", 2, 0), ("b", 1, 0), ("gone", 1, 42))
    result = invoke("doctor", "--db", str(db), "--json")
    found = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    detail = found["database"]["detail"]
    assert "workers: 2 up (0/3 sessions), 1 dead (gone 42 s without a heartbeat" in detail
