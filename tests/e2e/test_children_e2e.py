"""No child outlives `orchestrator serve` killed with SIGKILL: neither the analysis worker nor
multiprocessing's resource tracker (13 crashes once left 26 of them alive, ~130 MB)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_serve_e2e import ROOT, free_port


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a live process; None when it is gone or a zombie (dead, unreaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def children_of(pid: int) -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None and st[1] == pid:
            try:
                out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return out


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _stat(p) is not None]
    return alive


def test_no_child_survives_kill_9_of_the_server(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "TWILIO_AUTH_TOKEN": "t0k3n",
        "ORCHESTRATOR_DB": str(tmp_path / "serve.db"),
        "RECORDINGS_DIR": "off",
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kids: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        # the warm-up starts the analysis worker (and, with it, the resource tracker) half a second in
        while time.monotonic() < deadline:
            kids = children_of(proc.pid)
            if any("spawn_main" in c for c in kids.values()) and any(
                "resource_tracker" in c for c in kids.values()
            ):
                break
            time.sleep(0.1)
        assert any("spawn_main" in c for c in kids.values()), f"the analysis worker never started: {kids}"
        assert any("resource_tracker" in c for c in kids.values()), kids
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    survivors = wait_gone(list(kids), timeout_s=5.0)
    for pid in survivors:  # do not leave them behind for the next test either
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], {p: kids[p] for p in survivors}


_MIDDLE = """
import json, subprocess, sys, time
from orchestrator.children import dying_with_us
argv = json.loads(sys.argv[1])
child = subprocess.Popen(dying_with_us(argv) if sys.argv[2] == "wrapped" else argv)
print(child.pid, flush=True)
time.sleep(60)
"""
# only the parent watch, no PR_SET_PDEATHSIG: the path other systems (and odd thread setups) rely on
_WATCHED = "import os, time; from orchestrator.children import watch_parent; watch_parent(os.getppid()); time.sleep(60)"


@pytest.mark.parametrize(
    ("argv", "how"),
    [
        pytest.param([sys.executable, "-c", _WATCHED], "plain", id="parent-watch-alone"),
        pytest.param(["sleep", "60"], "wrapped", id="exec-wrapper (the tunnel program)"),
    ],
)
def test_an_orphaned_child_ends_itself(tmp_path: Path, argv: list[str], how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    middle = subprocess.Popen(
        [sys.executable, "-c", _MIDDLE, json.dumps(argv), how],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    try:
        time.sleep(0.5)  # the watch is running, the wrapper has exec'd
        assert _stat(child) is not None, "the child died while its parent lived"
    finally:
        os.kill(middle.pid, signal.SIGKILL)
        middle.wait(timeout=10)
    survivors = wait_gone([child], timeout_s=5.0)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
