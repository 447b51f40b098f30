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


EXPECTED = {"serve", "call", "hangup", "calls", "show", "check", "report", "demo", "emulator", "migrate",
            "doctor", "models"}


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
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, env=env,
                          cwd=db.parent if db else None, timeout=60)


def test_unknown_call_is_one_line(tmp_path: Path) -> None:
    out = run("show", "c_nope", db=tmp_path / "x.db")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: no call with id or CallSid 'c_nope' (list them with `orchestrator calls`)"
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


def test_call_without_public_url_names_the_setting(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("")  # no .env settings
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "call", "+14155550100"], capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "ORCHESTRATOR_DB": str(tmp_path / "x.db")},
        cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "PUBLIC_URL is not set" in out.stderr and "Traceback" not in out.stderr


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
