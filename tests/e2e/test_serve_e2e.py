"""`orchestrator serve` as a process: ready, records where it listens, stops cleanly on SIGTERM; and a
server stopped mid-call records the open call as interrupted (nothing left 'streaming')."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.emulator import CallOptions, Faults
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.service import CallService
from orchestrator.store import Store
from orchestrator.web.app import STATE

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_process_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    db = tmp_path / "serve.db"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "TWILIO_AUTH_TOKEN": "t0k3n",
        "ORCHESTRATOR_DB": str(db),
        "RECORDINGS_DIR": "off",
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--port",
            str(port),
            "--public-url",
            "https://serve-test.invalid",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    health = json.loads(r.read())
            except OSError:
                time.sleep(0.05)
        assert health is not None and health["ok"] and health["backend"] == "echo"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"listening on http://127.0.0.1:{port}" in out and "Traceback" not in out
    facts = CallService(Store(db)).server_facts()
    assert facts["server_listening"] == f"127.0.0.1:{port}"
    assert facts["public_url"] == "https://serve-test.invalid"


async def test_server_stopped_mid_call_records_it_as_interrupted(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, backend="echo", greeting="")
    async with LocalRig(settings, tmp_path / "truth") as rig:
        rig.emulator.set_defaults(CallOptions(ring_s=0.1, faults=Faults(hangup_after_stream_s=30)))
        row = await rig.place()
        live = rig.server.app[STATE].sessions
        for _ in range(400):  # mid-call: streaming, and the media session is up (the stream-started
            # callback can arrive before the WebSocket's `start` has been handled)
            if row["id"] in live and rig.service.store.get_call(row["id"])["state"] == "streaming":
                break
            await asyncio.sleep(0.05)
        assert row["id"] in live
        await rig.server.stop()  # what SIGTERM does in `orchestrator serve`
        call = rig.service.store.get_call(row["id"])
        assert call["state"] == "failed"
        assert call["end_reason"] == "interrupted: server shutting down"
        doc = rig.service.document(row["id"])
        assert any(e["source"] == "local" and e["type"] == "interrupted" for e in doc["events"])
        rig.server.stop = _noop  # type: ignore[method-assign]  # already stopped; the rig's exit calls it


async def _noop() -> None:
    return None
