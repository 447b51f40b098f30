"""Ctrl-C during `orchestrator demo`: one line, exit 130, no traceback from the analysis worker and
no warnings from the emulator; the calls are hung up and the database is left consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.store import Store
from tests.e2e.conftest import needs_espeak

ROOT = Path(__file__).resolve().parents[2]


@needs_espeak
def test_ctrl_c_during_the_demo_is_one_line_and_exit_130(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "demo", "--seconds", "30", "--db", str(db)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group, as a terminal's Ctrl-C reaches
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("placed ") or not line:
            break
    assert any(s.startswith("placed ") for s in seen), "".join(seen)
    time.sleep(2.0)  # the call is streaming, the analysis worker is up
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted")
    for noise in ("Traceback", "KeyboardInterrupt", "Warning", "Task was destroyed", "Unclosed"):
        assert noise not in err, err
    rows = Store(db, create=False).list_calls()
    assert len(rows) == 1 and rows[0]["call_sid"]  # placed, with its CallSid: no ghost row
