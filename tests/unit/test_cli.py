"""Every command documents itself; user errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from orchestrator.cli import _register_optional, cli

ROOT = Path(__file__).resolve().parents[2]
_register_optional()


def all_commands() -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in cli.commands.items():
        out.append((name, cmd))
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
    return out


EXPECTED = {
    "serve",
    "call",
    "hangup",
    "calls",
    "show",
    "check",
    "report",
    "demo",
    "emulator",
    "migrate",
    "doctor",
    "models",
}


def test_every_stable_command_exists() -> None:
    assert EXPECTED <= set(cli.commands)


@pytest.mark.parametrize(("name", "cmd"), all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_command_has_help_and_example(name: str, cmd: click.Command) -> None:
    assert cmd.help and len(cmd.help.strip()) > 20, f"{name} has no help"
    if not isinstance(cmd, click.Group):
        assert "Example:" in cmd.help, f"{name} has no Example"
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"


def run(*args: str, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if db is not None:
        env["ORCHESTRATOR_DB"] = str(db)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=db.parent if db else None,
        timeout=60,
    )


def test_unknown_call_is_one_line(tmp_path: Path) -> None:
    from orchestrator.store import Store

    Store(tmp_path / "x.db").close()
    out = run("show", "c_nope", db=tmp_path / "x.db")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "error: no call with id or CallSid 'c_nope' (list them with `orchestrator calls`)"
    )
    assert "Traceback" not in out.stderr


def test_unreadable_database_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    out = run("calls", db=bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "bad.db" in out.stderr


def test_bad_criterion_is_rejected(tmp_path: Path) -> None:
    out = run("check", "c_x", "not_a_criterion", "pass", db=tmp_path / "x.db")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not_a_criterion" in out.stderr


def test_call_without_settings_names_the_setting(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("")  # no .env settings
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "call", "+14155550100"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "ORCHESTRATOR_DB": str(tmp_path / "x.db")},
        cwd=tmp_path,
        timeout=60,
    )
    assert (
        out.returncode == 2
        and "TWILIO_ACCOUNT_SID is not set" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_manual_verdict_is_kept_beside_automatic(tmp_path: Path) -> None:
    from orchestrator.store import Store

    db = tmp_path / "m.db"
    store = Store(db)
    call = store.create_call(direction="outbound-api", to_number=None, from_number=None)
    store.add_check(call["id"], "caller_hears_model", "fail", "no speech sent", "auto")
    store.close()
    out = run("check", call["id"], "caller_hears_model", "pass", "--note", "heard it on my phone", db=db)
    assert out.returncode == 0, out.stderr
    doc = json.loads(run("show", call["id"], "--json", db=db).stdout)
    checks = {(c["decided_by"], c["status"]) for c in doc["checks"] if c["criterion"] == "caller_hears_model"}
    assert checks == {("auto", "fail"), ("manual", "pass")}


def test_migrate_list_json(tmp_path: Path) -> None:
    out = run("migrate", "--list", "--json", db=tmp_path / "n.db")
    doc = json.loads(out.stdout)
    assert [m["name"] for m in doc["migrations"]][:2] == ["0001_initial", "0002_analysis_transcript"]


def test_recompute_decides_every_criterion_from_stored_evidence(tmp_path: Path) -> None:
    from orchestrator.service import CallService
    from orchestrator.store import Store

    db = tmp_path / "r.db"
    service = CallService(Store(db))
    call = service.store.create_call(direction="outbound-api", to_number="+14155550100", from_number=None)
    service.record(source="rest", type="queued", call_id=call["id"], call_sid="CA" + "7" * 32)
    service.record(source="status_callback", type="busy", call_sid="CA" + "7" * 32, dedupe_key="x:2")
    service.store.close()
    out = run("check", "--recompute", "--json", db=db)
    assert out.returncode == 0, out.stderr
    verdicts = {v["criterion"]: v for v in json.loads(out.stdout)["recomputed"][call["id"]]}
    assert len(verdicts) == 11
    assert verdicts["call_initiated"]["status"] == "pass"
    assert (
        verdicts["answered_ivr_heard"]["status"] == "fail"
        and "busy" in verdicts["answered_ivr_heard"]["evidence"]
    )
    doc = json.loads(run("show", call["id"], "--json", db=db).stdout)
    assert {c["criterion"] for c in doc["checks"] if c["decided_by"] == "auto"} == set(verdicts)


def test_doctor_names_what_to_fix(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "ORCHESTRATOR_DB": str(tmp_path / "d.db")}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    findings = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    assert findings["twilio credentials"]["ok"] is False
    assert "TWILIO_ACCOUNT_SID" in findings["twilio credentials"]["detail"]
    assert findings["public url"]["ok"] is False and "PUBLIC_URL" in findings["public url"]["detail"]
    assert findings["database"]["ok"] is True
