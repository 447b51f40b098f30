"""Signed status callbacks per second with durable storage, against a bare aiohttp handler, in the same run.

Two servers, each alone in its own process on 127.0.0.1: the real app (`start_server`: signature check
with the twilio package's RequestValidator, the raw event stored in SQLite on the writer thread, judged
by the lifecycle, the call row and its transition saved, 204) and a bare aiohttp app whose handler reads
the form and answers 204. The load comes from this process over keep-alive connections: the same
pre-signed requests (a realistic Twilio form: CallSid, CallStatus, SequenceNumber, numbers, geography)
for initiated, ringing, in-progress and completed of each call.

Two loads per server:
- saturation: `--concurrency` requests in flight, as many as it can; callbacks/s and latency p50/p99;
- fixed rate (open loop): `--rate` requests/s on a schedule for a few seconds; latency p50/p99 measured
  from each request's due time (so a server that falls behind is charged for the queue).
After each run the events table is counted: every callback must be stored exactly once (nothing lost).

Usage: python benchmarks/control_plane.py [--quick] [--calls 1500] [--concurrency 16] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, pct

ACCOUNT = "AC" + "c" * 32
TOKEN = "bench-token-" + "1" * 20
PUBLIC = "https://bench-tunnel.invalid"
STATUSES = ("initiated", "ringing", "in-progress", "completed")


# ---- server processes ----------------------------------------------------------------------------------


async def serve_real(db: Path, port_file: Path) -> None:
    from orchestrator.cli.serve import start_server
    from orchestrator.settings import Settings

    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        public_url=PUBLIC,
        db=db,
        host="127.0.0.1",
        port=0,
        backend="echo",
        recordings_dir=None,
        greeting="",
        reconcile_interval_s=0,  # no carrier here to ask
    )
    server = await start_server(settings)
    from orchestrator.web.app import STATE

    await asyncio.wait_for(server.app[STATE].warmed.wait(), 60)  # load only once the import thread is done
    await _until_term(server.port, port_file)
    await server.stop()


async def serve_bare(port_file: Path) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/twilio/status", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await _until_term(runner.addresses[0][1], port_file)
    await runner.cleanup()


async def _until_term(port: int, port_file: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    port_file.write_text(str(port))  # noqa: ASYNC240 - once, at start
    await stop.wait()


# ---- load ----------------------------------------------------------------------------------------------


def make_calls(db: Path, n: int) -> list[str]:
    from orchestrator.store import Store

    store = Store(db)
    try:
        with store.transaction():
            ids = [
                store.create_call(
                    direction="outbound",
                    to_number="+15005550010",
                    from_number="+15005550006",
                    run="bench-control-plane",
                )["id"]
                for _ in range(n)
            ]
    finally:
        store.close()
    return ids


def signed_requests(call_ids: list[str]) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path?query, form body, headers) per callback: 4 statuses per call, as Twilio would sign them."""
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TOKEN)
    out = []
    for cid in call_ids:
        sid = "CA" + cid[2:].rjust(32, "0")  # unique per call row, as Twilio's CallSid is
        for seq, status in enumerate(STATUSES):
            params = {
                "AccountSid": ACCOUNT,
                "ApiVersion": "2010-04-01",
                "CallSid": sid,
                "CallStatus": status,
                "Called": "+15005550010",
                "Caller": "+15005550006",
                "Direction": "outbound-api",
                "From": "+15005550006",
                "To": "+15005550010",
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(seq),
                "Timestamp": "Tue, 24 Nov 2026 12:00:00 +0000",
                "FromCountry": "US",
                "ToCountry": "US",
                "CalledCountry": "US",
                "CallerCountry": "US",
            }
            if status == "completed":
                params.update(CallDuration="12", SipResponseCode="200", Duration="1")
            path = f"/twilio/status?call_id={cid}"
            sig = validator.compute_signature(PUBLIC + path, params)
            out.append(
                (
                    path,
                    urlencode(params).encode(),
                    {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
                )
            )
    return out


async def load(
    base: str, reqs: list[tuple[str, bytes, dict[str, str]]], concurrency: int, rate: float | None
) -> tuple[float, list[float], int]:
    """(wall s, latencies s, non-2xx count). rate None: closed loop at `concurrency`; else an open-loop
    schedule of `rate`/s (latency from each request's due time), at most `concurrency` * 4 in flight."""
    import aiohttp

    lat: list[float] = []
    bad = 0
    conn = aiohttp.TCPConnector(limit=concurrency if rate is None else concurrency * 4)
    async with aiohttp.ClientSession(base, connector=conn) as http:
        # Per call, in order (the lifecycle judges order), calls interleaved across workers.
        queue: asyncio.Queue[tuple[int, tuple[str, bytes, dict[str, str]]]] = asyncio.Queue()
        for k, r in enumerate(reqs):
            queue.put_nowait((k, r))
        t0 = time.perf_counter()

        async def one(k: int, r: tuple[str, bytes, dict[str, str]]) -> None:
            nonlocal bad
            due = t0 + k / rate if rate else time.perf_counter()
            if rate:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with http.post(r[0], data=r[1], headers=r[2]) as resp:
                await resp.read()
                bad += resp.status >= 300
            lat.append(time.perf_counter() - due)

        async def worker() -> None:
            while not queue.empty():
                k, r = queue.get_nowait()
                await one(k, r)

        if rate is None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            await asyncio.gather(*(one(k, r) for k, r in enumerate(reqs)))
        return time.perf_counter() - t0, lat, bad


def _spawn(role: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port_file = Path(args[-1])
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--role", role, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(400):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://127.0.0.1:{port_file.read_text()}"
        time.sleep(0.025)
    proc.kill()
    raise RuntimeError(f"{role} server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def count_stored(db: Path, call_ids: list[str]) -> tuple[int, int]:
    """(status_callback events stored for these calls, of which accepted)."""
    con = sqlite3.connect(db)
    try:
        con.execute("CREATE TEMP TABLE ids (id TEXT PRIMARY KEY)")
        con.executemany("INSERT INTO ids VALUES (?)", [(c,) for c in call_ids])
        total, accepted = con.execute(
            "SELECT COUNT(*), SUM(accepted) FROM events WHERE source = 'status_callback' "
            "AND call_id IN (SELECT id FROM ids)"
        ).fetchone()
        return int(total), int(accepted or 0)
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): 50 calls, 200 callbacks")
    ap.add_argument("--calls", type=int, default=1500, help="calls per run (4 callbacks each)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop rate, callbacks/s")
    ap.add_argument("--role", choices=["real", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "real":
        asyncio.run(serve_real(Path(a.args[0]), Path(a.args[1])))
        return
    if a.role == "bare":
        asyncio.run(serve_bare(Path(a.args[0])))
        return
    n_calls = 50 if a.quick else a.calls
    header("Control plane: signed status callbacks/s, durable storage vs a bare aiohttp handler", a.quick)
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        work = Path(tmp)
        db = work / "bench.db"
        # Every call row first, before the server runs: the load then only ever reaches the server.
        call_sets = {mode: make_calls(db, n_calls) for mode in ("saturation", "fixed rate")}
        real, real_url = _spawn("real", str(db), str(work / "real.port"))
        bare, bare_url = _spawn("bare", str(work / "bare.port"))
        results: dict[Any, Any] = {}
        try:
            for mode, rate in (("saturation", None), ("fixed rate", a.rate)):
                for name, url in (
                    ("bare aiohttp handler", bare_url),
                    ("orchestrator (signed, stored)", real_url),
                ):
                    ids = call_sets[mode]
                    reqs = signed_requests(ids)
                    wall, lat, bad = asyncio.run(load(url, reqs, a.concurrency, rate))
                    stored = count_stored(db, ids) if url == real_url else None
                    results[(mode, name)] = (
                        len(reqs) / wall,
                        pct(lat, 50),
                        pct(lat, 99),
                        bad,
                        stored,
                        len(reqs),
                    )
        finally:
            _stop(real)
            _stop(bare)
    print(
        f"{n_calls * 4} callbacks per run; saturation = {a.concurrency} in flight; fixed rate = {a.rate:g}/s open loop"
    )
    print(
        f"{'load':11} {'server':31} {'callbacks/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  stored (accepted)"
    )
    for (mode, name), (rps, p50, p99, bad, stored, sent) in results.items():
        st = f"{stored[0]}/{sent} ({stored[1]})" if stored else "-"
        print(f"{mode:11} {name:31} {rps:11.0f} {p50:8.2f} {p99:8.2f} {bad:8}  {st}")
    sat_bare = results[("saturation", "bare aiohttp handler")][0]
    sat_real = results[("saturation", "orchestrator (signed, stored)")][0]
    print(f"\nSaturation throughput: orchestrator / bare = {sat_real / sat_bare:.2f}")


if __name__ == "__main__":
    main()
