"""Every mistake gets one line, the documented exit code, and leaves nothing behind (issue 15).

In-process through click's runner (the same `LazyGroup.main` the console script runs), so a
traceback would show up as an exception in the result and coverage sees the command code.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator import exits
from orchestrator.cli import cli
from orchestrator.service import CallService
from orchestrator.store import Store

SID = "AC" + "0" * 31 + "1"


needs_hub = pytest.mark.skipif(
    importlib.util.find_spec("huggingface_hub") is None, reason="needs the moshi extra (huggingface_hub)"
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .env and no settings from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    import os

    for key in list(os.environ):
        if key.startswith(("TWILIO_", "ORCHESTRATOR_", "MOSHI_", "CHECK_", "PUBLIC_URL", "BACKEND")):
            monkeypatch.delenv(key)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=True)


def one_line_error(result: Result, code: int, *needles: str) -> str:
    """The result failed with `code`, one line `error: ...` on stderr (no traceback) holding `needles`."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def made_call(db: Path, *, run: str | None = None, state_events: tuple[str, ...] = ()) -> dict[str, Any]:
    service = CallService(Store(db))
    call = service.store.create_call(
        direction="outbound-api", to_number="+14155550100", from_number=None, run=run
    )
    sid = "CA" + call["id"][2:].ljust(32, "0")
    service.record(source="rest", type="queued", call_id=call["id"], call_sid=sid)
    for i, status in enumerate(state_events):
        service.record(source="status_callback", type=status, call_sid=sid, dedupe_key=f"{sid}:{i}")
    row = service.store.get_call(call["id"])
    service.store.close()
    return row


# -- bugs ---------------------------------------------------------------------------------------


def test_since_filters_calls_and_report_despite_the_runs_join(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    old, new = made_call(db, run="nightly"), made_call(db, run="nightly")
    store = Store(db)
    store.conn.execute("UPDATE calls SET created_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", [old["id"]])
    store.close()
    listed = invoke("calls", "--db", str(db), "--since", "2026-01-01", "--json")
    assert listed.exit_code == 0, listed.output
    assert [c["id"] for c in json.loads(listed.stdout)["calls"]] == [new["id"]]
    aged = invoke("calls", "--db", str(db), "--since", "7d", "--run", "nightly", "--json")
    assert [c["id"] for c in json.loads(aged.stdout)["calls"]] == [new["id"]]
    report = invoke("report", "--db", str(db), "--since", "2026-01-01T00:00", "--format", "json")
    assert report.exit_code == 0, report.output
    assert [c["id"] for r in json.loads(report.stdout)["runs"] for c in r["calls"]] == [new["id"]]


@pytest.mark.parametrize("command", ["calls", "report"])
def test_since_nonsense_is_refused_before_opening_anything(tmp_path: Path, command: str) -> None:
    db = tmp_path / "never.db"
    result = invoke(command, "--db", str(db), "--since", "yesterday")
    one_line_error(result, exits.USAGE, "--since", "'yesterday' is not a time", "7d")
    assert not db.exists()


def test_ensure_run_survives_dialers_racing_for_a_new_label(tmp_path: Path) -> None:
    """Select-then-insert lost this race ('UNIQUE constraint failed: runs.label') in 4 of 10 demos."""
    db = tmp_path / "race.db"
    Store(db).close()
    stores = [Store(db) for _ in range(6)]
    errors: list[BaseException] = []
    ids: dict[str, set[int]] = {}
    for round_ in range(25):
        label = f"run-{round_}"
        barrier = threading.Barrier(len(stores))

        def dial(store: Store, label: str = label, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                ids.setdefault(label, set()).add(store.ensure_run(label))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=dial, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert all(len(v) == 1 for v in ids.values()) and len(ids) == 25
    for s in stores:
        s.close()


READ_ONLY = [
    ("calls",),
    ("show", "c_0123456789abcdef"),
    ("check", "c_0123456789abcdef"),
    ("report",),
    ("hangup", "c_0123456789abcdef"),
    ("check", "--recompute"),
    ("workers",),
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_read_only_commands_never_create_a_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "missing" / "dir" / "x.db"
    result = invoke(*args, "--db", str(db))
    one_line_error(result, exits.USAGE, f"no database at {db}", "--db / ORCHESTRATOR_DB")
    assert not (tmp_path / "missing").exists()


def test_migrate_list_and_doctor_create_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "x.db"
    listed = invoke("migrate", "--list", "--db", str(db))
    assert listed.exit_code == 0 and "does not exist yet" in listed.stdout and "pending" in listed.stdout
    doctor = invoke("doctor", "--db", str(db), "--json")
    finding = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}["database"]
    assert finding["ok"] is True and "not created yet" in finding["detail"]
    assert not (tmp_path / "missing").exists()


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('mine')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("args", [("calls",), ("migrate",), ("demo", "--seconds", "5")], ids=lambda a: a[0])
def test_another_applications_sqlite_file_is_refused_untouched(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "notes.db"
    _foreign(db)
    before = db.read_bytes()
    result = invoke(*args, "--db", str(db))
    one_line_error(result, exits.USAGE, "another application's SQLite database (tables notes)")
    assert db.read_bytes() == before  # no schema added, not even the WAL journal mode
    assert not (tmp_path / "notes.db-wal").exists()


def test_sqlite_file_refused_through_the_environment_too(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    _foreign(db)
    result = invoke("calls", env={"ORCHESTRATOR_DB": str(db)})
    one_line_error(result, exits.USAGE, str(db), "not ours")


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"busy": False, "backend": "echo"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    """A stand-in for `orchestrator serve`'s /healthz (the call command asks it first)."""
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _carrier_env(db: Path, port: int, carrier_port: int) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "secret",
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{carrier_port}",
        "PUBLIC_URL": "https://tunnel.example.test",
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(port),
        "ORCHESTRATOR_DB": str(db),
    }


def test_unreachable_carrier_leaves_a_failed_call_with_the_reason(tmp_path: Path, health_server: int) -> None:
    db = tmp_path / "calls.db"
    carrier = closed_port()
    result = invoke("call", "+14155550123", env=_carrier_env(db, health_server, carrier))
    one_line_error(
        result,
        exits.UNAVAILABLE,
        "carrier unreachable",
        f"127.0.0.1:{carrier}",
        "orchestrator emulator",
        "stored as a failed call",
    )
    rows = Store(db, create=False).list_calls()
    assert [(r["state"], r["call_sid"]) for r in rows] == [("failed", None)]  # no ghost `queued` row
    assert "carrier unreachable" in rows[0]["end_reason"]


def test_call_with_no_server_running_makes_no_database(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    result = invoke("call", "+14155550123", env=_carrier_env(db, closed_port(), closed_port()))
    one_line_error(result, exits.USAGE, "no server answers", "orchestrator serve")
    assert not db.exists()  # said before anything was opened: no file, no call row


def test_hangup_with_the_carrier_unreachable_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    row = made_call(db, state_events=("ringing",))
    result = invoke("hangup", row["id"][:10], env=_carrier_env(db, 1, closed_port()))
    one_line_error(result, exits.UNAVAILABLE, "carrier unreachable")


# -- tracebacks a user saw ------------------------------------------------------------------------


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        served = invoke(
            "serve", "--port", port, "--db", str(tmp_path / "s.db"), env={"TWILIO_AUTH_TOKEN": "x"}
        )
        one_line_error(served, exits.UNAVAILABLE, f"port {port} on 127.0.0.1 is already in use", "--port")
        emulated = invoke("emulator", "--port", port, "--account-sid", SID, "--auth-token", "x")
        one_line_error(emulated, exits.UNAVAILABLE, "carrier emulator", "already in use")


@pytest.mark.parametrize(
    ("host", "why"),
    [("no-such-host.invalid", "does not resolve"), ("192.0.2.1", "is not an address of this machine")],
)
def test_host_that_is_not_ours_is_one_line(tmp_path: Path, host: str, why: str) -> None:
    result = invoke(
        "serve", "--host", host, "--port", "0", "--db", str(tmp_path / "s.db"), env={"TWILIO_AUTH_TOKEN": "x"}
    )
    one_line_error(result, exits.UNAVAILABLE, why)


@needs_hub
def test_missing_moshi_model_is_one_line(tmp_path: Path) -> None:
    """MissingModelFile is a BackendError, not an OrchestratorError: still one line with the fix."""
    result = invoke(
        "serve",
        "--backend",
        "moshi",
        "--port",
        "0",
        "--db",
        str(tmp_path / "s.db"),
        env={"TWILIO_AUTH_TOKEN": "x", "MOSHI_HF_REPO": "nobody/never-cached-mlx-q4"},
    )
    one_line_error(
        result,
        exits.USAGE,
        "is not in the local Hugging Face cache",
        "orchestrator models pull --repo nobody/never-cached-mlx-q4",
    )


@pytest.mark.parametrize("command", [("report",), ("demo", "--seconds", "5")], ids=lambda a: a[0])
def test_out_into_a_missing_folder_is_refused_before_any_work(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    out = tmp_path / "no" / "such" / "report.html"
    db = tmp_path / "c.db"
    made_call(db)
    before = db.stat().st_mtime_ns
    result = invoke(*command, "--out", str(out), "--db", str(db))
    one_line_error(result, exits.USAGE, "--out", "does not exist")
    assert not (tmp_path / "no").exists() and db.stat().st_mtime_ns == before


@needs_hub
def test_bad_moshi_quantize_is_one_line() -> None:
    result = invoke("models", "list", env={"MOSHI_QUANTIZE": "7"})
    one_line_error(result, exits.USAGE, "MOSHI_QUANTIZE", "'7'")


def test_analysis_workers_ignore_ctrl_c() -> None:
    """Ctrl-C reaches the whole process group; a worker's KeyboardInterrupt traceback was printed."""
    import multiprocessing
    import os
    import signal
    import time

    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_worker, args=(os.getpid(), ready, done))
    proc.start()
    try:
        assert ready.wait(30)
        os.kill(proc.pid or 0, signal.SIGINT)
        time.sleep(0.5)
        assert proc.is_alive()
        done.set()
        proc.join(10)
        assert proc.exitcode == 0  # a KeyboardInterrupt would have ended it with 1
    finally:
        if proc.is_alive():
            proc.kill()


def _worker(parent: int, ready: Any, done: Any) -> None:
    from orchestrator.children import child_init

    child_init(parent)
    ready.set()
    done.wait(20)


# -- exit codes and validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("demo", "--seconds", "-5"), "--seconds"),
        (("demo", "--jitter-ms", "-10"), "--jitter-ms"),
        (("demo", "--echo-path-ms", "-1"), "--echo-path-ms"),
        (("demo", "--calls", "0"), "--calls"),
        (("emulator", "--account-sid", "bad", "--auth-token", "x"), "AC followed by 32 hex digits"),
        (("emulator", "--account-sid", SID, "--auth-token", "x", "--jitter-ms", "-1"), "--jitter-ms"),
        (("models", "pull", "--repo", "foo"), "OWNER/NAME"),
        (("calls", "--state", "bogus"), "--state"),
        (("calls", "--limit", "0"), "--limit"),
        (("serve", "--port", "99999"), "'--port': 99999"),
        (("call", "12"), "TO='12' is not an E.164"),
    ],
)
def test_nonsense_is_refused_in_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    result = invoke(*args, "--db", str(tmp_path / "x.db")) if args[0] in ("calls", "call") else invoke(*args)
    line = one_line_error(result, exits.USAGE, needle)
    assert "ORCHESTRATOR_PORT" not in line and "TWILIO_ACCOUNT_SID" not in line
    assert not (tmp_path / "x.db").exists()


def test_json_failures_are_json(tmp_path: Path) -> None:
    result = invoke("calls", "--db", str(tmp_path / "x.db"), "--json")
    assert result.exit_code == exits.USAGE
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == exits.USAGE and doc["error"].startswith("no database at")


def test_filters_that_match_nothing_are_not_an_empty_database(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    made_call(db)
    result = invoke("calls", "--db", str(db), "--state", "busy")
    assert result.exit_code == 0 and "no calls match (the database holds 1" in result.stdout


def test_serve_refuses_an_http_public_url_now(tmp_path: Path) -> None:
    result = invoke(
        "serve",
        "--public-url",
        "http://tunnel.example.test",
        "--db",
        str(tmp_path / "s.db"),
        env={"TWILIO_AUTH_TOKEN": "x"},
    )
    one_line_error(result, exits.USAGE, "must be https")
    assert not (tmp_path / "s.db").exists()


def test_emulator_reads_its_credentials_from_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TWILIO_ACCOUNT_SID=not-a-sid\nTWILIO_AUTH_TOKEN=x\n")
    result = invoke("emulator")
    one_line_error(result, exits.USAGE, "'not-a-sid' is not an Account SID")  # it was read from .env


def test_call_wait_exits_1_when_the_call_did_not_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.cli import call as call_cli

    db = tmp_path / "c.db"
    row = made_call(db, state_events=("ringing", "busy"))
    monkeypatch.setattr(call_cli, "place", lambda *a, **k: row)  # the dialing itself is tested end to end
    monkeypatch.setattr(call_cli, "require_server", lambda settings: {"backend": "echo"})
    result = invoke("call", "+14155550123", "--wait", "--db", str(db), env=_carrier_env(db, 1, 1))
    assert result.exit_code == exits.OUTCOME, result.output
    assert f"call {row['id']}" in result.stdout and ": busy" in result.stdout
    assert "busy" in result.stderr  # the progress line


def test_every_command_says_what_its_exit_codes_mean() -> None:
    from orchestrator.cli import _register_optional

    _register_optional()
    for name in (
        "call",
        "hangup",
        "serve",
        "demo",
        "doctor",
        "report",
        "emulator",
        "calls",
        "show",
        "check",
        "migrate",
        "models pull",
        "models list",
    ):
        result = invoke(*name.split(), "--help")
        assert "Exit codes: 0 done" in result.stdout and "2 nothing done" in result.stdout, name
    assert "1 with --wait: the call ended busy" in invoke("call", "--help").stdout
    assert "1 something needs fixing" in invoke("doctor", "--help").stdout
    assert "1 the calls ran but a criterion FAILed" in invoke("demo", "--help").stdout


def test_doctor_lists_every_bad_setting_and_threshold_and_exits_1(tmp_path: Path) -> None:
    env = {
        "ORCHESTRATOR_PORT": "99999",
        "BACKEND": "nope",
        "CHECK_MIN_TURNS": "two",
        "CHECK_BOGUS": "1",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "x",
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{closed_port()}",
    }
    result = invoke("doctor", "--db", str(tmp_path / "d.db"), env=env)
    assert result.exit_code == exits.OUTCOME
    fixes = [line for line in result.stdout.splitlines() if line.startswith("FIX")]
    text = "\n".join(fixes)
    for needle in (
        "ORCHESTRATOR_PORT=99999",
        "BACKEND='nope'",
        "CHECK_MIN_TURNS",
        "CHECK_BOGUS",
        "did not answer",
    ):
        assert needle in text, needle
    assert not (tmp_path / "d.db").exists()


def test_doctor_recommends_only_an_installed_tunnel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = invoke("doctor", "--db", str(tmp_path / "d.db"), "--json")
    public = {f["check"]: f for f in json.loads(result.stdout)["findings"]}["public url"]
    assert "neither is installed" in public["detail"] and "(cloudflared is installed)" not in public["detail"]


def test_demo_exit_code_follows_failed_criteria() -> None:
    from orchestrator.cli.demo import failed_criteria
    from orchestrator.report import build_report
    from orchestrator.report.samples import sample_docs

    docs = sample_docs()  # c1 clean; c2 echo and a manual fail; c3 busy; c4 create refused
    failed = failed_criteria(build_report(docs, "sample"))
    assert {call for call, _ in failed} == {"c2", "c3", "c4"}
    assert ("c3", "answered_ivr_heard") in failed and ("c4", "call_initiated") in failed
    assert failed_criteria(build_report(docs[:1], "sample")) == []


@needs_hub
def test_models_pull_offline_says_so_without_a_false_config_note(tmp_path: Path) -> None:
    from bridge.backends.moshi_loader import MoshiConfig
    from orchestrator.cli.models import _fetch_error, pull_files

    said: list[str] = []
    config = MoshiConfig.from_env({}, cache_dir=tmp_path / "hub")
    with pytest.raises(Exception) as caught:
        pull_files(config, echo=said.append, endpoint=f"http://127.0.0.1:{closed_port()}")
    assert said == []  # not "has no config.json; the built-in config will be used"
    error = _fetch_error(config.hf_repo, caught.value)
    assert error.exit_code == exits.UNAVAILABLE and "did not answer" in error.format_message()


# -- reading the output ---------------------------------------------------------------------------


def test_show_takes_the_shortened_ids_the_report_prints(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    row = made_call(db)
    short = row["id"][:11] + "…"  # orchestrator.report.text._short
    shown = invoke("show", short, "--db", str(db), "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["call"]["id"] == row["id"]
    assert invoke("show", row["call_sid"][:12], "--db", str(db)).exit_code == 0


def test_an_ambiguous_prefix_names_the_candidates(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    a, b = made_call(db), made_call(db)
    one_line_error(invoke("show", "c_", "--db", str(db)), exits.USAGE, "no call")  # too short to guess
    store = Store(db)
    store.conn.execute(
        "UPDATE calls SET id = 'c_aaaa' || substr(id, 7) WHERE id IN (?, ?)", [a["id"], b["id"]]
    )
    store.close()
    result = invoke("show", "c_aaaa", "--db", str(db))
    one_line_error(result, exits.USAGE, "is the start of 2 calls", "give more of the id")


def test_show_reads_like_the_report(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    row = made_call(db, state_events=("ringing", "in-progress", "completed"))
    store = Store(db)
    store.put_metrics(
        row["id"],
        {
            "turns": 2.0,
            "first_audio_ms": 412.4,
            "echo_detected": 0.0,
            "inbound_rms_dbfs": -23.44,
            "outbound_clip_ratio": 0.005,
        },
        {
            "turns": "count",
            "first_audio_ms": "ms",
            "echo_detected": "bool",
            "inbound_rms_dbfs": "dBFS",
            "outbound_clip_ratio": "ratio",
        },
    )
    store.update_call(row["id"], recording_path=str(tmp_path / "c.wav"))
    store.close()
    text = invoke("show", row["id"], "--db", str(db)).stdout
    metrics = {
        line.split()[0]: " ".join(line.split()[1:])
        for line in text.split("metrics:")[1].split("\n\n")[0].strip().splitlines()
    }
    assert metrics == {
        "turns": "2",
        "first_audio_ms": "412 ms",
        "echo_detected": "no",
        "inbound_rms_dbfs": "-23.4 dBFS",
        "outbound_clip_ratio": "0.50 %",
    }
    assert f"recording {tmp_path / 'c.wav'}" in text
    timeline = text.split("timeline (since created):")[1].split("\n\n")[0].strip().splitlines()
    assert timeline and all(line.split()[0].startswith("+") and line.split()[1] == "s" for line in timeline)


def test_check_with_only_a_call_lists_its_checks(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    row = made_call(db)
    store = Store(db)
    store.add_check(row["id"], "call_initiated", "pass", "carrier accepted the create", "auto")
    store.close()
    result = invoke("check", row["id"], "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "call_initiated" in result.stdout and "carrier accepted the create" in result.stdout
    missing = invoke("check", row["id"], "call_initiated", "--db", str(db))
    one_line_error(missing, exits.USAGE, "give a VERDICT for call_initiated")


def test_check_usage_line_does_not_spill_the_criteria() -> None:
    text = invoke("check", "--help").stdout
    usage = text.split("\n\n")[0]
    assert (
        usage.startswith("Usage: ")
        and "[CRITERION] [VERDICT]" in usage
        and "model_loads_quickly" not in usage
    )
    from orchestrator.cli import CRITERIA

    assert all(c in " ".join(text.split()) for c in CRITERIA)  # listed in the help instead


def test_migrate_says_what_it_did_and_list_shows_the_table(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    first = invoke("migrate", "--db", str(db))
    assert first.exit_code == 0 and "applied 5 migration(s): 0001_initial" in first.stdout
    again = invoke("migrate", "--db", str(db))
    assert "schema already up to date" in again.stdout and "applied" not in again.stdout.split(":")[-1]
    listed = invoke("migrate", "--db", str(db), "--list")
    assert "migration" in listed.stdout.splitlines()[1] and "0003_event_lookup_indexes" in listed.stdout


def test_help_lists_commands_without_importing_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from orchestrator.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('orchestrator.emulator', 'scipy', 'orchestrator.cli.demo', 'aiohttp') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "emulator  Run a local Twilio stand-in" in out.stdout


def test_lazy_help_matches_each_commands_own_first_sentence() -> None:
    from orchestrator.cli import _register_optional
    from orchestrator.cli.commands import LAZY_HELP

    _register_optional()
    for name, text in LAZY_HELP.items():
        assert cli.commands[name].get_short_help_str(300) == text, name


@pytest.mark.parametrize(("typo", "meant"), [("dmeo", "demo"), ("modles", "models"), ("reprot", "report")])
def test_a_mistyped_command_gets_a_suggestion(typo: str, meant: str) -> None:
    one_line_error(invoke(typo), exits.USAGE, f"no command {typo!r}; did you mean {meant}?")


class _Carrier(BaseHTTPRequestHandler):
    """Answers Twilio's call update as a carrier that has not ended the call yet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sid = self.path.rsplit("/", 1)[-1].removesuffix(".json")
        body = json.dumps({"sid": sid, "status": "in-progress", "account_sid": SID}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_hangup_says_the_call_is_ending_not_that_it_failed(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Carrier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        db = tmp_path / "calls.db"
        row = made_call(db, state_events=("ringing", "in-progress"))
        result = invoke("hangup", row["id"], env=_carrier_env(db, 1, int(server.server_address[1])))
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "done, it will end in a moment" in result.stdout and "answered in-progress" not in result.stdout


def test_models_without_the_moshi_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The base install (the demo's) has no Hugging Face client: `models` says which extra adds it."""
    import orchestrator.cli.models as models_cli
    import orchestrator.cli.models_common as models_common

    real = importlib.util.find_spec
    monkeypatch.setattr(
        models_common.importlib.util,  # the `models` commands' extra check lives there
        "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real(name, *a),
    )
    for args in (("models", "list"), ("models", "pull")):
        result = invoke(*args, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
        one_line_error(result, exits.USAGE, "needs the moshi extra", "pip install -e '.[moshi]'")
    assert not (tmp_path / "hub").exists()
    status = models_cli.model_status()
    assert not status["ready"] and "huggingface_hub" in status["missing_packages"]
    assert status["fix"] == "pip install -e '.[moshi]'"
