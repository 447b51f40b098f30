"""Reliability under faults and attack: crashes, callback storms, media fuzz, idle floods, a soak.

`orchestrator serve` runs as a real process on 127.0.0.1 (echo backend) with the carrier emulator in
this process as its Twilio (REST, signed callbacks, media streams, all on 127.0.0.1). Five parts:

- crash loop: calls placed through the REST path, the server killed with SIGKILL mid-call, restarted
  after a random pause. Every callback the server acknowledged (2xx) must be in the database
  afterwards; `PRAGMA integrity_check` after each crash; children left alive after each kill; calls
  still unfinished once the emulator's calls are over and reconciliation has had its turn;
- callback storm: calls whose callbacks arrive shuffled, duplicated and retried, `--in-flight` calls
  at once: 5xx answers, and final states that differ from the carrier's;
- media fuzz: streams that start properly and then send malformed and hostile frames (far-future
  timestamps, bad base64, huge numbers, garbage), beside one legitimate call that is also run alone
  first: the legitimate call's figures with and without the fuzz, /healthz latency during it;
- idle flood: a second server started under a small open-file limit (`--nofile`) and a flood of
  connections that send nothing: /healthz answered or not, what the connection limits did, and the
  "Too many open files" lines in the server's log;
- soak: calls back to back for `--soak-s`: the server's RSS over time, every call ended.

Prints figures, and the load average at the start and the end (the box is shared).

Usage: python benchmarks/reliability.py [--quick] [--crashes 13] [--storm-calls 1500] [--fuzz-s 30]
       [--flood 1000] [--nofile 1024] [--soak-s 180]
       (RELIABILITY_KEEP=1 keeps the servers' logs and databases and prints where)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, load, pct, proc_cpu_s, proc_rss_mb

ACCOUNT = "AC" + "d" * 32
TOKEN = "reliability-token-" + "2" * 16
FROM = "+15005550006"
TERMINAL = ("completed", "busy", "no-answer", "failed", "canceled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Server:
    """`orchestrator serve` in its own process, restartable on the same port and database."""

    def __init__(
        self, work: Path, name: str, emulator_url: str, *, nofile: int | None = None, echo_mode: str = "delay"
    ) -> None:
        self.name, self.port, self.nofile = name, free_port(), nofile
        self.public = f"https://{name}.reliability.invalid"
        self.db, self.log = work / f"{name}.db", work / f"{name}.log"
        self.env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "HOME": str(work),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": FROM,
            "TWILIO_API_BASE_URL": emulator_url,
            "PUBLIC_URL": self.public,
            "ORCHESTRATOR_DB": str(self.db),
            "RECORDINGS_DIR": str(work / f"{name}-recordings"),
            "GREETING": "",
            "BACKEND": "echo",
            "RECONCILE_INTERVAL_S": "2",
            "MAX_CALL_SECONDS": "120",
            "ECHO_MODE": echo_mode,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> Any:
        from orchestrator.settings import Settings

        return Settings(
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,
            twilio_from_number=FROM,
            twilio_api_base_url=self.env["TWILIO_API_BASE_URL"],
            public_url=self.public,
            db=self.db,
            host="127.0.0.1",
            port=self.port,
            greeting="",
            recordings_dir=None,
        )

    def _spawn(self) -> subprocess.Popen[bytes]:
        limit = self.nofile

        def low_limit() -> None:
            if limit:
                resource.setrlimit(
                    resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
                )

        with self.log.open("ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "orchestrator",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=self.db.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=low_limit,
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + 60
        while (await healthz(self.url))[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server did not start; see {self.log}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # its warm-up (analysis imports, the analysis worker)

    def kill9(self) -> list[int]:
        assert self.proc is not None
        kids = children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return kids

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def healthz(base: str, timeout_s: float = 2.0) -> tuple[int, float]:
    """(HTTP status or 0, seconds) of one GET /healthz on a fresh connection."""
    import aiohttp

    t = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(base + "/healthz") as resp,
        ):
            await resp.read()
            return resp.status, time.perf_counter() - t
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return 0, time.perf_counter() - t


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return list(con.execute(sql, args).fetchall())
    finally:
        con.close()


async def until(check: Any, timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every_s)
    return True


def place(server: Server, to: str) -> dict[str, Any]:
    """One call through the product's REST path (what `orchestrator call` does)."""
    from orchestrator.cli.call import place as place_call
    from orchestrator.service import CallService
    from orchestrator.store import Store

    service = CallService(Store(server.db))
    try:
        return place_call(
            server.settings(),
            service,
            to=to,
            from_=FROM,
            run=None,
            say="",
            timeout_s=30,
            record=False,
            check_server=False,
        )
    finally:
        service.store.close()


# ---- crash loop --------------------------------------------------------------------------------------------


async def crash_loop(
    emu: Any, work: Path, crashes: int, calls_per_round: int, rng: random.Random
) -> dict[str, Any]:
    from orchestrator.emulator import CallOptions, Faults

    server = Server(work, "crash", emu.base_url)
    emu.webhooks.routes[server.public] = server.url
    emu.set_number("+15005550020", CallOptions(ring_s=0.2, faults=Faults(hangup_after_stream_s=3.0)))
    await server.start()
    sids, orphans, integrity_ok, recovery = [], 0, 0, []
    try:
        for _ in range(crashes):
            placed = [await asyncio.to_thread(place, server, "+15005550020") for _ in range(calls_per_round)]
            sids += [p["call_sid"] for p in placed]
            ids = [p["id"] for p in placed]
            await until(
                lambda ids=ids: any(
                    r[0] == "streaming"
                    for r in db_rows(
                        server.db, f"SELECT state FROM calls WHERE id IN ({','.join('?' * len(ids))})", *ids
                    )
                ),
                15,
            )
            await asyncio.sleep(rng.uniform(0.2, 1.2))  # mid-call
            kids = server.kill9()
            await asyncio.sleep(rng.uniform(0.5, 2.0))  # down: callbacks and streams fail meanwhile
            await until(lambda kids=kids: not any(alive(k) for k in kids), 5)
            orphans += sum(alive(k) for k in kids)
            for k in kids:
                if alive(k):
                    os.kill(k, signal.SIGKILL)
            integrity_ok += db_rows(server.db, "PRAGMA integrity_check")[0][0] == "ok"
            t = time.monotonic()
            await server.start()
            recovery.append(time.monotonic() - t)
        for sid in sids:
            await emu.wait_call(sid, timeout=60)
        unfinished_sql = "SELECT COUNT(*) FROM calls WHERE state NOT IN ('completed','busy','no-answer','failed','canceled')"
        await until(lambda: db_rows(server.db, unfinished_sql)[0][0] == 0, 30, every_s=0.5)
        unfinished = db_rows(server.db, unfinished_sql)[0][0]
    finally:
        server.stop()
    acked = {
        c["token"]
        for sid in sids
        for c in emu.calls[sid].truth.callbacks
        if c.get("http_status") and 200 <= c["http_status"] < 300
    }
    stored = {
        r[0]
        for r in db_rows(
            server.db,
            "SELECT json_extract(payload, '$._idempotency_token') FROM events "
            "WHERE source IN ('status_callback', 'stream_status')",
        )
    }
    failed_posts = sum(1 for sid in sids for c in emu.calls[sid].truth.callbacks if not c.get("http_status"))
    by_reconcile = db_rows(
        server.db,
        "SELECT COUNT(DISTINCT call_id) FROM transitions WHERE trigger LIKE 'reconcile:%' "
        "AND to_state IN ('completed','busy','no-answer','failed','canceled')",
    )[0][0]
    return {
        "crashes": crashes,
        "calls": len(sids),
        "acked": len(acked),
        "lost": len(acked - stored),
        "failed_posts": failed_posts,
        "integrity_ok": integrity_ok,
        "orphans": orphans,
        "unfinished": unfinished,
        "by_reconcile": by_reconcile,
        "restart_s": recovery,
    }


# ---- callback storm ----------------------------------------------------------------------------------------


async def storm(emu: Any, server: Server, n_calls: int, in_flight: int) -> dict[str, Any]:
    from orchestrator.emulator import CallbackFaults, CallOptions, Faults
    from orchestrator.service import CallService
    from orchestrator.store import Store

    faults = Faults(
        callbacks=CallbackFaults(
            shuffle=True, duplicate=("ringing", "in-progress"), retry=("completed",), retry_after_s=0.2
        )
    )
    numbers = [
        "+15005550030",
        "+15005550002",
        "+15005550003",
        "+15005550004",
    ]  # answered, busy, no-answer, failed
    base = CallOptions(ring_s=0.05, initiate_s=0.01, faults=faults)
    for n in numbers:
        emu.set_number(
            n,
            base
            if n == numbers[0]
            else replace(
                base,
                answer={"+15005550002": "busy", "+15005550003": "no-answer", "+15005550004": "failed"}[n],
            ),
        )
    service = CallService(Store(server.db))
    gate = asyncio.Semaphore(in_flight)
    pairs: list[tuple[str, str]] = []

    async def one(i: int) -> None:
        async with gate:
            to = numbers[i % len(numbers)]
            row = service.store.create_call(
                direction="outbound-api", to_number=to, from_number=FROM, run="storm"
            )
            call = emu.place_call(
                to=to,
                from_=FROM,
                twiml="<Response><Hangup/></Response>",
                status_callback=f"{server.public}/twilio/status?call_id={row['id']}",
                events=["initiated", "ringing", "answered", "completed"],
            )
            service.record(
                source="rest",
                type="queued",
                call_id=row["id"],
                call_sid=call.sid,
                payload={"sid": call.sid, "status": "queued"},
            )
            pairs.append((row["id"], call.sid))
            await emu.wait_call(call.sid, timeout=60)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n_calls)))
    wall = time.perf_counter() - t
    sent = [c for _, sid in pairs for c in emu.calls[sid].truth.callbacks]

    def wrong() -> int:
        states = dict(
            db_rows(
                server.db,
                "SELECT id, state FROM calls WHERE run_id = (SELECT id FROM runs WHERE label = 'storm')",
            )
        )
        return sum(states.get(cid) != emu.calls[sid].status for cid, sid in pairs)

    await until(lambda: wrong() == 0, 10, every_s=0.5)
    service.store.close()
    return {
        "calls": n_calls,
        "in_flight": in_flight,
        "callbacks": len(sent),
        "per_s": len(sent) / wall,
        "duplicates": sum(c["delivery"] == "duplicate" for c in sent),
        "retries": sum(c["delivery"] == "retry" for c in sent),
        "5xx": sum((c.get("http_status") or 0) >= 500 for c in sent),
        "unanswered": sum(not c.get("http_status") for c in sent),
        "wrong_final": wrong(),
    }


# ---- media fuzz beside a legitimate call --------------------------------------------------------------------


def hostile_frame(rng: random.Random, stream_sid: str, seq: int) -> str | bytes:
    payload = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(160))).decode()
    media = {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20), "payload": payload}
    kind = rng.randrange(12)
    if kind == 0:
        media["timestamp"] = str(rng.choice([10**6, 10**9, 10**17, 10**18 - 1]))  # far future
    elif kind == 1:
        media["timestamp"] = rng.choice(["-20", "1e9", "NaN", "", "0x10", "٣"])
    elif kind == 2:
        media["payload"] = rng.choice(
            ["!!!", "A" * 1_000_001, "", base64.b64encode(os.urandom(40_000)).decode()]
        )
    elif kind == 3:
        media["chunk"] = str(10**30)
    elif kind == 4:
        return rng.choice(["", "null", "[]", "{", "\x00" * 100, "{" * 5000 + "}" * 5000])
    elif kind == 5:
        return os.urandom(rng.randrange(1, 2048))
    elif kind == 6:
        return json.dumps(
            {
                "event": rng.choice(["start", "stop", "mark", "dtmf", "clear", "x" * 300]),
                "streamSid": stream_sid,
                "sequenceNumber": str(seq),
            }
        )
    elif kind == 7:
        return json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32, "media": media})  # another stream
    frame = {
        "event": "media",
        "sequenceNumber": str(seq if kind != 8 else 10**17),
        "streamSid": stream_sid,
        "media": media,
    }
    return json.dumps(frame)


async def fuzzer(
    url: str, public: str, db: Path, stop: Any, rng: random.Random, counts: dict[str, int]
) -> None:
    import websockets
    from twilio.request_validator import RequestValidator

    from orchestrator.store import Store
    from orchestrator.twiml import media_url

    signed = {"x-twilio-signature": RequestValidator(TOKEN).compute_signature(media_url(public), {})}
    while not stop.is_set():
        store = Store(db)
        call_sid, stream_sid = "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
        row = store.create_call(
            direction="outbound-api",
            to_number="+15005550040",
            from_number=FROM,
            run="fuzz",
            call_sid=call_sid,
            state="in-progress",
        )
        store.close()
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": ACCOUNT,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"call_id": row["id"], "token": row["token"]},
            },
        }
        try:
            async with websockets.connect(
                url.replace("http", "ws") + "/media", additional_headers=signed, max_size=None, open_timeout=5
            ) as ws:
                counts["streams"] += 1
                await ws.send(json.dumps(start))
                seq = 2
                while not stop.is_set():
                    await ws.send(hostile_frame(rng, stream_sid, seq))
                    counts["frames"] += 1
                    seq += 1
                    if seq % 8 == 0:
                        await asyncio.sleep(0)
        except (websockets.ConnectionClosed, websockets.InvalidStatus, OSError, asyncio.TimeoutError):
            counts["closed_by_server"] += 1


def fuzz_process(url: str, public: str, db: str, n: int, seed: float, stop: Any, out: Any) -> None:
    """The hostile peers in a process of their own: in the emulator's event loop they starved the
    legitimate caller's own 20 ms timers (its inbound jitter read 19 ms), which is not the server's doing."""
    counts = {"streams": 0, "frames": 0, "closed_by_server": 0}

    async def main() -> None:
        flag = asyncio.Event()

        async def watch() -> None:
            await asyncio.to_thread(stop.wait)  # a multiprocessing event: waited for in a thread
            flag.set()

        rng = random.Random(seed)
        await asyncio.gather(
            watch(),
            *(fuzzer(url, public, Path(db), flag, random.Random(rng.random()), counts) for _ in range(n)),
        )

    asyncio.run(main())
    out.put(counts)


async def legit_call(emu: Any, server: Server, seconds: float, spoken: bool) -> dict[str, Any]:
    from orchestrator.emulator import CallOptions, Faults, Turn

    turns = (
        (Turn(text="Hello, can you hear me? This is the real caller.", wait_for_answer=True),)
        if spoken
        else ()
    )
    emu.set_number(
        "+15005550050",
        CallOptions(
            ring_s=0.1, turns=turns, caller_start_s=0.3, faults=Faults(hangup_after_stream_s=seconds)
        ),
    )
    row = await asyncio.to_thread(place, server, "+15005550050")
    await emu.wait_call(row["call_sid"], timeout=seconds + 60)
    names = (
        "first_audio_heard_ms",
        "response_latency_ms_p50",
        "turns",
        "inbound_gap_ms_total",
        "inbound_jitter_ms",
        "outbound_underruns",
    )
    await until(
        lambda: (
            len(
                db_rows(server.db, "SELECT name FROM metrics WHERE call_id = ? AND name = 'turns'", row["id"])
            )
            > 0
        ),
        20,
    )
    metrics = dict(db_rows(server.db, "SELECT name, value FROM metrics WHERE call_id = ?", row["id"]))
    state = db_rows(server.db, "SELECT state FROM calls WHERE id = ?", row["id"])[0][0]
    return {"state": state, **{n: metrics.get(n) for n in names}}


def _fuzz_started(db: Path) -> bool:
    return bool(
        db_rows(db, "SELECT 1 FROM calls WHERE run_id = (SELECT id FROM runs WHERE label = 'fuzz') LIMIT 1")
    )


async def fuzz(
    emu: Any, server: Server, seconds: float, n_fuzzers: int, rng: random.Random
) -> dict[str, Any]:
    import shutil

    spoken = shutil.which("espeak-ng") is not None
    alone = await legit_call(emu, server, seconds, spoken)
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=fuzz_process,
        args=(server.url, server.public, str(server.db), n_fuzzers, rng.random(), stop, out),
        daemon=True,
    )
    probes: list[tuple[int, float]] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            probes.append(await healthz(server.url))
            await asyncio.sleep(0.2)

    cpu_before = proc_cpu_s(server.proc.pid) if server.proc is not None else 0.0
    proc.start()
    await until(lambda: not proc.is_alive() or _fuzz_started(server.db), 30)
    prober = asyncio.create_task(probe())
    try:
        beside = await legit_call(emu, server, seconds, spoken)
    finally:
        done.set()
        stop.set()
        counts = await asyncio.to_thread(out.get, True, 60)
        await asyncio.to_thread(proc.join, 30)
        await asyncio.gather(prober, return_exceptions=True)
    server_cpu = (proc_cpu_s(server.proc.pid) - cpu_before) if server.proc is not None else float("nan")
    # the fuzz calls' rows: ended here, so reconciliation does not ask the carrier about calls it never had
    with contextlib.closing(sqlite3.connect(server.db, timeout=10)) as con, con:
        con.execute(
            "UPDATE calls SET state = 'completed' WHERE run_id = (SELECT id FROM runs WHERE label = 'fuzz')"
        )
    assert server.proc is not None
    return {
        "alone": alone,
        "beside": beside,
        "spoken": spoken,
        **counts,
        "server_alive": server.proc.poll() is None,
        "server_cpu_s": server_cpu,
        "probes": len(probes),
        "probes_ok": sum(s == 200 for s, _ in probes),
        "healthz_p50_ms": pct((t for _, t in probes), 50),
        "healthz_max_ms": max((t for _, t in probes), default=0) * 1e3,
    }


# ---- idle-connection flood under a small file limit ---------------------------------------------------------


async def flood(server: Server, n: int) -> dict[str, Any]:
    held: list[asyncio.StreamWriter] = []
    refused = 0

    async def connect() -> None:
        nonlocal refused
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 10)
            held.append(w)
        except (OSError, asyncio.TimeoutError):
            refused += 1

    t = time.monotonic()
    for i in range(0, n, 50):  # 50 at a time, as a flood would
        await asyncio.gather(*(connect() for _ in range(min(50, n - i))))
    connect_s = time.monotonic() - t
    await asyncio.sleep(0.5)
    probes = [await healthz(server.url) for _ in range(10)]
    metrics = await metrics_text(server.url)
    for w in held:
        w.close()
    log = server.log.read_bytes()
    return {
        "opened": len(held),
        "connect_errors": refused,
        "connect_s": connect_s,
        "probes_ok": sum(s == 200 for s, _ in probes),
        "healthz_p50_ms": pct((t for _, t in probes), 50),
        "healthz_max_ms": max(t for _, t in probes) * 1e3,
        "limit": _metric(metrics, "orchestrator_connection_limit"),
        "shed": sum(
            _metric(metrics, f'orchestrator_connections_closed_total{{why="{w}"}}')
            for w in ("shed_idle", "shed_reading")
        ),
        "refused": _metric(metrics, 'orchestrator_connections_closed_total{why="refused"}'),
        "emfile_lines": log.count(b"Too many open files"),
        "log_kb": len(log) / 1024,
    }


async def metrics_text(base: str) -> str:
    import aiohttp

    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(base + "/metrics") as resp,
        ):
            return await resp.text()
    return ""


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


# ---- soak ---------------------------------------------------------------------------------------------------


async def soak(emu: Any, server: Server, seconds: float, callers: int, call_s: float) -> dict[str, Any]:
    from orchestrator.emulator import CallOptions, Faults

    emu.set_number("+15005550060", CallOptions(ring_s=0.1, faults=Faults(hangup_after_stream_s=call_s)))
    assert server.proc is not None
    pid = server.proc.pid
    rss = [proc_rss_mb(pid)]
    cpu0, t0 = proc_cpu_s(pid), time.monotonic()
    placed: list[dict[str, Any]] = []

    async def caller() -> None:
        while time.monotonic() - t0 < seconds:
            row = await asyncio.to_thread(place, server, "+15005550060")
            placed.append(row)
            await emu.wait_call(row["call_sid"], timeout=call_s + 60)

    async def sample() -> None:
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(1.0)
            rss.append(proc_rss_mb(pid))

    await asyncio.gather(sample(), *(caller() for _ in range(callers)))
    ids = [r["id"] for r in placed]
    sql = f"SELECT COUNT(*) FROM calls WHERE state IN {TERMINAL} AND id IN ({','.join('?' * len(ids))})"
    await until(lambda: db_rows(server.db, sql, *ids)[0][0] == len(ids), 15, every_s=0.5)
    return {
        "calls": len(ids),
        "ended": db_rows(server.db, sql, *ids)[0][0],
        "rss_first": rss[0],
        "rss_max": max(rss),
        "rss_last": proc_rss_mb(pid),
        "cpu_s": proc_cpu_s(pid) - cpu0,
        "wall_s": time.monotonic() - t0,
    }


# ---- main ---------------------------------------------------------------------------------------------------


async def run(a: argparse.Namespace) -> None:
    from orchestrator.emulator import CarrierEmulator

    rng = random.Random(a.seed)
    logging.getLogger("orchestrator.emulator").setLevel(
        logging.ERROR
    )  # callbacks to a killed server fail, by design
    with contextlib.suppress(ValueError, OSError):  # the flood needs descriptors on this side too
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.flood + 512)), hard))
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        if os.environ.get("RELIABILITY_KEEP"):  # debugging: keep the servers' logs and databases
            tmp = tempfile.mkdtemp(prefix="bench-reliability-kept-")
            print(f"  (keeping {tmp})")
        work = Path(tmp)
        emu = CarrierEmulator(ACCOUNT, TOKEN)
        await emu.start()
        try:
            t = time.monotonic()
            crash = await crash_loop(emu, work, a.crashes, a.calls_per_crash, rng)
            print(
                f"crash loop ({time.monotonic() - t:.0f} s): {crash['crashes']} kill -9 mid-call, "
                f"{crash['calls']} calls, restart {pct(crash['restart_s'], 50):.0f} ms p50 to /healthz"
            )
            print(
                f"  callbacks acknowledged {crash['acked']}, of them lost {crash['lost']}; "
                f"callbacks that found the server down {crash['failed_posts']}"
            )
            print(
                f"  integrity_check ok {crash['integrity_ok']}/{crash['crashes']}; children alive after kill "
                f"{crash['orphans']}; calls unfinished at the end {crash['unfinished']} "
                f"(settled by reconciliation: {crash['by_reconcile']})"
            )

            # the parrot takes turns, so the legitimate call has response latencies to compare
            server = Server(work, "main", emu.base_url, nofile=a.nofile, echo_mode="turns")
            emu.webhooks.routes[server.public] = server.url
            await server.start()
            try:
                t = time.monotonic()
                st = await storm(emu, server, a.storm_calls, a.in_flight)
                print(
                    f"\ncallback storm ({time.monotonic() - t:.0f} s): {st['calls']} calls, {st['in_flight']} "
                    f"in flight, {st['callbacks']} callbacks ({st['per_s']:.0f}/s), shuffled, "
                    f"{st['duplicates'] / max(1, st['callbacks']):.0%} duplicates, "
                    f"{st['retries'] / max(1, st['callbacks']):.0%} retries"
                )
                print(
                    f"  5xx {st['5xx']}, unanswered {st['unanswered']}, wrong final states {st['wrong_final']}"
                )

                t = time.monotonic()
                fz = await fuzz(emu, server, a.fuzz_s, a.fuzzers, rng)
                print(
                    f"\nmedia fuzz ({time.monotonic() - t:.0f} s): {fz['frames']} hostile frames over "
                    f"{fz['streams']} streams ({a.fuzzers} at a time, from a process of their own), server "
                    f"alive {fz['server_alive']}, server CPU {fz['server_cpu_s']:.1f} s; /healthz "
                    f"{fz['probes_ok']}/{fz['probes']} ok, p50 {fz['healthz_p50_ms']:.1f} ms, "
                    f"max {fz['healthz_max_ms']:.1f} ms"
                )
                print(
                    f"  the legitimate call{' (spoken caller)' if fz['spoken'] else ' (silent caller)'}:"
                    f"{'alone':>14} {'beside the fuzz':>16}"
                )
                for name in fz["alone"]:
                    cells = [fz[k][name] for k in ("alone", "beside")]
                    shown = [c if isinstance(c, str) else "-" if c is None else f"{c:.1f}" for c in cells]
                    print(f"    {name:30} {shown[0]:>14} {shown[1]:>16}")

                t = time.monotonic()
                fl = await flood(server, a.flood)
                print(
                    f"\nidle flood ({time.monotonic() - t:.0f} s): {fl['opened']} idle connections opened in "
                    f"{fl['connect_s']:.1f} s (+{fl['connect_errors']} failed to connect) against a file limit "
                    f"of {a.nofile}; connection limit {fl['limit']:.0f}"
                )
                print(
                    f"  /healthz {fl['probes_ok']}/10 ok, p50 {fl['healthz_p50_ms']:.1f} ms, max "
                    f"{fl['healthz_max_ms']:.1f} ms; shed {fl['shed']:.0f}, refused {fl['refused']:.0f}; "
                    f"'Too many open files' in the log {fl['emfile_lines']} (log {fl['log_kb']:.0f} KB)"
                )

                t = time.monotonic()
                sk = await soak(emu, server, a.soak_s, a.soak_callers, a.soak_call_s)
                print(
                    f"\nsoak ({sk['wall_s']:.0f} s, {a.soak_callers} callers, {a.soak_call_s:g} s calls): "
                    f"{sk['calls']} calls, {sk['ended']} ended; server RSS {sk['rss_first']:.0f} -> max "
                    f"{sk['rss_max']:.0f} -> {sk['rss_last']:.0f} MB; server CPU {sk['cpu_s']:.1f} s"
                )
            finally:
                server.stop()
        finally:
            await emu.stop()
    print(f"\nat the end: {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): every part, well under a minute")
    ap.add_argument("--crashes", type=int, default=13, help="kill -9 rounds")
    ap.add_argument("--calls-per-crash", type=int, default=3)
    ap.add_argument("--storm-calls", type=int, default=1500)
    ap.add_argument("--in-flight", type=int, default=32, help="storm calls at once")
    ap.add_argument(
        "--fuzz-s", type=float, default=30.0, help="length of the legitimate call (and of the fuzz)"
    )
    ap.add_argument("--fuzzers", type=int, default=4, help="hostile streams at a time")
    ap.add_argument("--flood", type=int, default=1000, help="idle connections")
    ap.add_argument("--nofile", type=int, default=1024, help="the second server's open-file limit")
    ap.add_argument("--soak-s", type=float, default=180.0)
    ap.add_argument("--soak-callers", type=int, default=4)
    ap.add_argument("--soak-call-s", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    if a.quick:
        a.crashes, a.calls_per_crash, a.storm_calls, a.fuzz_s, a.fuzzers = 1, 2, 40, 6.0, 2
        a.flood, a.nofile, a.soak_s, a.soak_callers, a.soak_call_s = 250, 256, 4.0, 2, 1.5
    header("Reliability: crash loop, callback storm, media fuzz, idle flood, soak (127.0.0.1)", a.quick)
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
