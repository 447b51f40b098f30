"""Three `orchestrator serve --worker` processes of one session each over one PostgreSQL database, behind
the carrier emulator (each worker its own public URL, routed to its own port as a tunnel would).

Ten inbound calls arrive at once, their voice webhooks spread over the three workers: every call ends on
exactly one worker or is answered busy, three stream (one per worker), seven hear the spoken busy, and no
status callback is applied twice although they land on any worker. Then an outbound call placed with
`orchestrator call` (no local server: a session is claimed in the database) streams to its worker, that
worker is killed with SIGKILL mid-call, and the others adopt the call and settle it from the carrier's
REST API, within the stated time; `orchestrator workers` shows the dead one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from orchestrator.emulator import CallOptions, CarrierEmulator, Faults
from orchestrator.service import CallService
from orchestrator.stores import open_store
from tests.integration.engines import Engine

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("w1", "w2", "w3")
STALE_S = 5.0  # under load (the whole suite on 2 cores) a heartbeat can be late; not so late
SETTLE_TARGET_S = 30.0  # the bound; the design gives STALE_S + a heartbeat + one REST fetch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return None


class Workers:
    def __init__(self, tmp: Path, db: str, emulator_url: str, sid: str, token: str) -> None:
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp),
            "ORCHESTRATOR_DB": db,
            "TWILIO_ACCOUNT_SID": sid,
            "TWILIO_AUTH_TOKEN": token,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": emulator_url,
            "RECORDINGS_DIR": "off",
            "GREETING": "",
            "WORKER_HEARTBEAT_S": "0.5",
            "WORKER_STALE_S": str(STALE_S),
        }
        self.tmp = tmp
        self.ports = {name: _free_port() for name in NAMES}
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def url(self, name: str) -> str:
        return f"https://{name}.invalid"

    def start(self) -> None:
        for name, port in self.ports.items():
            args = ["serve", "--worker", name, "--capacity", "1", "--port", str(port)]
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", *args, "--public-url", self.url(name)],
                env=self.env,
                cwd=self.tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    async def ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = set(NAMES)
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                health = _health(self.ports[name])
                if health and (health.get("worker") or {}).get("name") == name:
                    waiting.discard(name)
                elif self.procs[name].poll() is not None:
                    raise AssertionError(f"{name} exited: {self.procs[name].communicate()[0]}")
            await asyncio.sleep(0.1)
        assert not waiting, f"not ready: {waiting}"

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command in its own process, off the event loop (the emulator answers it from here)."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> dict[str, str]:
        outs = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                outs[name] = proc.communicate(timeout=20)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                outs[name] = proc.communicate()[0]
        return outs


async def _until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_three_workers_share_calls_refuse_the_rest_and_settle_a_killed_ones(
    pg_engine: Engine, tmp_path: Path
) -> None:
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    emulator = CarrierEmulator(sid, token)
    emulator_url = await emulator.start()
    workers = Workers(tmp_path, pg_engine.target, emulator_url, sid, token)
    for name, port in workers.ports.items():
        emulator.webhooks.routes[workers.url(name)] = f"http://127.0.0.1:{port}"
    outs: dict[str, str] = {}
    store = open_store(pg_engine.target)
    try:
        workers.start()
        await workers.ready()

        # -- ten inbound calls at once, voice webhooks (and status callbacks) spread over the workers --
        options = CallOptions(ring_s=0.1, faults=Faults(hangup_after_stream_s=4))
        sids = []
        for i in range(10):
            base = workers.url(NAMES[i % 3])
            sids.append(
                await emulator.dial_in(
                    f"{base}/twilio/voice",
                    from_=f"+1415555{1000 + i}",
                    to="+15005550006",
                    options=options,
                    status_callback=f"{base}/twilio/status",
                )
            )
        truths = await asyncio.gather(*(emulator.wait_call(s, timeout=60) for s in sids))
        calls = [store.find_call(call_sid=s) for s in sids]
        assert all(c is not None for c in calls)
        streamed = [c for c in calls if c["worker"]]
        assert sorted(c["worker"] for c in streamed) == list(NAMES)  # one each: capacity 1
        for c in calls:
            events = store.events_for(c)
            busy = [e for e in events if e["type"] == "refused_busy"]
            if c["worker"]:
                assert not busy and c["stream_sid"]
            else:
                assert len(busy) == 1 and "every worker is busy: 3 of 3" in busy[0]["payload"]
                assert c["stream_sid"] is None
        await _until(
            lambda: all(store.find_call(call_sid=s)["state"] == "completed" for s in sids),
            20,
            "all completed",
        )
        assert sum(1 for t in truths if t.to_json().get("stream")) == 3
        applied = [
            (e["call_sid"], e["type"])
            for c in calls
            for e in store.events_for(c)
            if e["source"] == "status_callback" and e["accepted"]
        ]
        assert len(applied) == len(set(applied))  # no callback applied twice, whichever worker got it

        # -- an outbound call claimed in the database; its worker killed mid-call --
        placed = await workers.cli("call", "+14155550123", "--json")
        assert placed.returncode == 0, placed.stderr
        call_id = json.loads(placed.stdout)["id"]
        await _until(lambda: store.find_call(call_id=call_id)["state"] == "streaming", 20, "streaming")
        victim = store.find_call(call_id=call_id)["worker"]
        assert victim in NAMES
        workers.procs[victim].kill()  # SIGKILL: no shutdown, no last words
        killed_at = time.monotonic()
        await _until(
            lambda: store.find_call(call_id=call_id)["state"] == "completed", SETTLE_TARGET_S, "settled"
        )
        settle_s = time.monotonic() - killed_at
        print(f"killed worker's call settled {settle_s:.1f} s after SIGKILL (stale after {STALE_S} s)")
        call = store.find_call(call_id=call_id)
        assert call["worker"] != victim and "reconciled: the carrier reports completed" in call["end_reason"]
        lost = [e for e in store.events_for(call) if e["type"] == "worker_lost"]
        assert len(lost) == 1 and f'"worker": "{victim}"' in lost[0]["payload"]

        listed = await workers.cli("workers", "--json")
        assert listed.returncode == 0, listed.stderr
        status = {w["name"]: w["status"] for w in json.loads(listed.stdout)["workers"]}
        assert status == {n: ("dead" if n == victim else "up") for n in NAMES}
        assert CallService(store).document(call_id)["call"]["state"] == "completed"
    finally:
        outs = workers.stop()
        await emulator.stop()
        store.close()
    for name, out in outs.items():
        assert "Traceback" not in out, f"{name}:\n{out}"
