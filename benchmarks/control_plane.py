"""Signed status callbacks per second with durable storage: SQLite, PostgreSQL with one worker and with
two, against a bare aiohttp handler, in the same run.

Servers, each in its own process on 127.0.0.1: the real app (`start_server`: signature check with the
twilio package's RequestValidator, the raw event stored on the writer thread, judged by the lifecycle,
the call row and its transition saved, 204) over
- SQLite (WAL, synchronous=NORMAL: the embedded default, no worker);
- PostgreSQL, one worker process (`serve --worker`: worker a of the next row, with b idle);
- PostgreSQL, two worker processes on that database, the load spread over their two ports round robin
  per request, as a load balancer in front of them would (one call's callbacks land on both workers;
  each worker has its own public URL, as `serve --worker` asks, and each request is signed for the
  worker it goes to);
and a bare aiohttp app whose handler reads the form and answers 204. PostgreSQL is a throwaway cluster
started here with its durable defaults (every commit waits for its WAL flush; SQLite's NORMAL does not
fsync each commit; `--synchronous-commit off` is the closer match), or `--pg URL` (a database it may
fill); without a server the PostgreSQL rows are skipped, saying why. The load comes from this process
over keep-alive connections: pre-signed requests (a realistic Twilio form: CallSid, CallStatus,
SequenceNumber, numbers, geography) for initiated, ringing, in-progress and completed of each call,
calls interleaved as Twilio's are (`interleaved`).

Two loads per server:
- saturation: `--concurrency` requests in flight, as many as it can; callbacks/s and latency p50/p99;
- fixed rate (open loop): `--rate` requests/s on a schedule for a few seconds; latency p50/p99 measured
  from each request's due time (so a server that falls behind is charged for the queue).
Beside each: the CPU ms per callback of the server's processes and of PostgreSQL's. After each run the
events table is counted: every callback stored exactly once, none applied twice (a SequenceNumber
accepted twice, by one worker or two), and none answered 2xx without being stored (Twilio does not
retry those). `accepted` is lower where a callback arrived after a later one of its call (the lifecycle
refuses it as stale): more often at a fixed rate that the server cannot keep up with.

Usage: python benchmarks/control_plane.py [--quick] [--calls 1500] [--concurrency 16] [--rate 1000]
       [--pg postgresql://...] [--synchronous-commit on|off]
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, pct, proc_cpu_s
from _common import load as load_now

ACCOUNT = "AC" + "c" * 32
TOKEN = "bench-token-" + "1" * 20
PUBLIC = "https://bench-tunnel.invalid"
STATUSES = ("initiated", "ringing", "in-progress", "completed")
BARE, SQLITE, PG1, PG2 = (
    "bare aiohttp handler",
    "orchestrator, SQLite",
    "orchestrator, PostgreSQL, 1 worker",
    "orchestrator, PostgreSQL, 2 workers",
)
Request = tuple[str, bytes, dict[str, str]]


# ---- server processes ----------------------------------------------------------------------------------


async def serve_real(target: str, port_file: Path, worker: str | None, public: str) -> None:
    from orchestrator.cli.serve import start_server
    from orchestrator.settings import Settings

    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        public_url=public,
        db=Path(target),  # a URL too: open_store mends what Path did to its `//`
        host="127.0.0.1",
        port=0,
        backend="echo",
        recordings_dir=None,
        greeting="",
        reconcile_interval_s=0,  # no carrier here to ask
        worker=worker,
    )
    server = await start_server(settings)
    from orchestrator.web.app import STATE

    state = server.app[STATE]
    await asyncio.wait_for(state.warmed.wait(), 60)  # load only once the import thread is done
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


def make_calls(target: str, n: int) -> list[str]:
    from orchestrator.stores import open_store

    store = open_store(target)
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
    return [str(i) for i in ids]


def interleaved(call_ids: list[str], window: int) -> list[tuple[str, int]]:
    """(call, status index) in sending order: blocks of `window` calls, each status of the block's calls
    before the next status, as Twilio's callbacks for many calls interleave (one call's come seconds
    apart). With `window` above the requests in flight, a call's callbacks mostly arrive in order and
    two workers rarely hold the same call at once; an odd `window` puts a call's consecutive callbacks
    on alternate workers under round robin."""
    out = []
    for start in range(0, len(call_ids), window):
        block = call_ids[start : start + window]
        out += [(cid, seq) for seq in range(len(STATUSES)) for cid in block]
    return out


def signed_requests(call_ids: list[str], window: int, publics: list[str]) -> list[Request]:
    """(path?query, form body, headers) per callback: 4 statuses per call, as Twilio would sign them,
    in `interleaved` order; request k for the public URL of the server it goes to, publics[k mod N]."""
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TOKEN)
    out = []
    for k, (cid, seq) in enumerate(interleaved(call_ids, window)):
        sid = "CA" + cid[2:].rjust(32, "0")  # unique per call row, as Twilio's CallSid is
        status = STATUSES[seq]
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
        sig = validator.compute_signature(publics[k % len(publics)] + path, params)
        out.append(
            (
                path,
                urlencode(params).encode(),
                {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
            )
        )
    return out


async def load(
    bases: list[str], reqs: list[Request], concurrency: int, rate: float | None
) -> tuple[float, list[float], int]:
    """(wall s, latencies s, non-2xx count). Request k goes to bases[k % len(bases)] (round robin, as a
    load balancer would spread them). rate None: closed loop at `concurrency`; else an open-loop schedule
    of `rate`/s (latency from each request's due time), at most `concurrency` * 4 in flight."""
    import aiohttp

    lat: list[float] = []
    bad = 0
    limit = concurrency if rate is None else concurrency * 4
    https = [aiohttp.ClientSession(b, connector=aiohttp.TCPConnector(limit=limit)) for b in bases]
    try:
        queue: asyncio.Queue[tuple[int, Request]] = asyncio.Queue()
        for k, r in enumerate(reqs):
            queue.put_nowait((k, r))
        t0 = time.perf_counter()

        async def one(k: int, r: Request) -> None:
            nonlocal bad
            due = t0 + k / rate if rate else time.perf_counter()
            if rate:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with https[k % len(https)].post(r[0], data=r[1], headers=r[2]) as resp:
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
    finally:
        for http in https:
            await http.close()


# ---- the servers under test ----------------------------------------------------------------------------


@dataclass
class Server:
    """One row of the table: its processes (one per port) and the database they store into (None: bare)."""

    name: str
    target: str | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    publics: list[str] = field(default_factory=list)  # each process' public URL, the one Twilio signs
    port_files: list[Path] = field(default_factory=list)


def _spawn(server: Server, work: Path, role: str, *args: str, public: str = PUBLIC) -> None:
    port_file = work / f"port-{len(list(work.glob('port-*')))}"
    port_file.touch()
    server.port_files.append(port_file)
    server.publics.append(public)
    server.procs.append(
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--role",
                role,
                "--public",
                public,
                *args,
                str(port_file),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    )


def _wait_ready(servers: list[Server], timeout_s: float = 120.0) -> None:
    """Every process listening (they start together: their imports and warm-ups overlap)."""
    deadline = time.monotonic() + timeout_s
    for s in servers:
        for proc, port_file in zip(s.procs, s.port_files, strict=True):
            while not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{s.name}: a server process did not start (exit {proc.poll()})")
                time.sleep(0.05)
            s.urls.append(f"http://127.0.0.1:{port_file.read_text()}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all, then wait for each: their shutdowns overlap."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def count_stored(target: str, call_ids: list[str]) -> tuple[int, int, int]:
    """(status_callback events stored for these calls, of which accepted, callbacks applied twice: a
    SequenceNumber of a call accepted more than once, by one worker or two)."""
    from orchestrator.stores import is_pg_url

    rows = "FROM events WHERE source = 'status_callback' AND call_id {ids}"
    counts = f"SELECT COUNT(*), SUM(accepted) {rows}"
    twice = f"SELECT COUNT(*) FROM (SELECT dedupe_key {rows} AND accepted = 1 GROUP BY dedupe_key HAVING COUNT(*) > 1) d"
    if is_pg_url(target):
        import psycopg

        with psycopg.connect(target) as pg:
            ids = "= ANY(%s)"
            total, accepted = pg.execute(counts.format(ids=ids), (call_ids,)).fetchone() or (0, 0)
            (applied_twice,) = pg.execute(twice.format(ids=ids), (call_ids,)).fetchone() or (0,)
    else:
        con = sqlite3.connect(target)
        try:
            con.execute("CREATE TEMP TABLE ids (id TEXT PRIMARY KEY)")
            con.executemany("INSERT INTO ids VALUES (?)", [(c,) for c in call_ids])
            ids = "IN (SELECT id FROM ids)"
            total, accepted = con.execute(counts.format(ids=ids)).fetchone()
            (applied_twice,) = con.execute(twice.format(ids=ids)).fetchone()
        finally:
            con.close()
    return int(total), int(accepted or 0), int(applied_twice)


def pg_database(given: str | None, commit: str) -> tuple[str | None, Any, str]:
    """(the database URL, the throwaway cluster to stop or None, a line saying what they are); no URL
    when PostgreSQL is not to be had here. `commit` is the sessions' synchronous_commit."""
    if given:
        url, cluster, what = given, None, "the given database"
    else:
        from tests.integration.pg_server import PgCluster, why_unavailable

        why = why_unavailable()
        if why:
            return None, None, f"no PostgreSQL here ({why}): its rows are skipped"
        cluster = PgCluster.start(fast=False)  # PostgreSQL's durable defaults: fsync on
        url = cluster.create_database("bench_cp")
        what = f"a throwaway cluster on 127.0.0.1:{cluster.port}, fsync on"
    if commit == "off":
        url += ("&" if "?" in url else "?") + "options=-csynchronous_commit%3Doff"
    wait = "each commit waits for its WAL flush" if commit == "on" else "commits do not wait for the flush"
    return url, cluster, f"PostgreSQL: {what}; synchronous_commit={commit} ({wait})"


def start_servers(work: Path, pg: str | None) -> list[Server]:
    """Every server process, started together (their imports and warm-ups overlap)."""
    from orchestrator.stores import open_store

    servers = [Server(BARE, None), Server(SQLITE, str(work / "bench.db"))]
    _spawn(servers[0], work, "bare")
    _spawn(servers[1], work, "real", str(work / "bench.db"))
    if pg:
        open_store(pg).close()  # migrated once here, not raced by two workers starting on an empty one
        servers.append(Server(PG2, pg))
        for name in ("a", "b"):  # each its own public URL, as `serve --worker` asks
            _spawn(
                servers[2], work, "real", "--worker", name, pg, public=f"https://{name}.bench-tunnel.invalid"
            )
    return servers


def with_one_worker(servers: list[Server]) -> list[Server]:
    """The rows to measure: the one-worker row is worker a of the two-worker row alone (b idles
    meanwhile, a heartbeat every 2 s), so both rows share one database and its growth."""
    both = next((s for s in servers if s.name == PG2), None)
    if both is None:
        return servers
    one = Server(PG1, both.target, procs=both.procs[:1], urls=both.urls[:1], publics=both.publics[:1])
    return [s for s in servers if s is not both] + [one, both]


# ---- the run -------------------------------------------------------------------------------------------


def cluster_pids(cluster: Any) -> list[int]:
    """The throwaway cluster's processes (the postmaster and its children); none for a server of
    someone else's (`--pg`), whose CPU is not ours to count."""
    if cluster is None or cluster.root is None:
        return []
    head = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            if ppid == head:
                kids.append(int(entry.name))
    return [head, *kids]


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_s(pid)
        except (OSError, IndexError):  # a backend that ended meanwhile: its share is lost
            pass
    return total


def measure(
    servers: list[Server], n_calls: int, concurrency: int, rate: float, cluster: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (load, server): callbacks/s, latency, non-2xx, the stored count, and the CPU the server's
    processes (and, on the throwaway PostgreSQL cluster, the database server's) spent per callback."""
    from orchestrator.stores import is_pg_url

    window = 4 * concurrency + 1  # odd, and more calls than requests in flight: see `interleaved`
    # Every call row first, before the load: the load then only ever reaches the server. The bare
    # handler is sent the SQLite row's requests (it stores nothing).
    call_sets = {
        (mode, s.name): make_calls(s.target, n_calls)
        for mode in ("saturation", "fixed rate")
        for s in servers
        if s.target
    }
    results = {}
    for mode, r in (("saturation", None), ("fixed rate", rate)):
        for s in servers:
            ids = call_sets[(mode, s.name if s.target else SQLITE)]
            reqs = signed_requests(ids, window, s.publics)
            mine = [p.pid for p in s.procs]
            on_pg = cluster is not None and s.target is not None and is_pg_url(s.target)
            cpu0, db0 = cpu_s(mine), cpu_s(cluster_pids(cluster)) if on_pg else 0.0
            wall, lat, bad = asyncio.run(load(s.urls, reqs, concurrency, r))
            # a backend started during the run counts from 0; one that ended meanwhile is lost
            cpu1, db1 = cpu_s(mine), cpu_s(cluster_pids(cluster)) if on_pg else 0.0
            results[(mode, s.name)] = {
                "rps": len(reqs) / wall,
                "p50": pct(lat, 50),
                "p99": pct(lat, 99),
                "bad": bad,
                "stored": count_stored(s.target, ids) if s.target else None,
                "sent": len(reqs),
                "cpu_ms": 1e3 * (cpu1 - cpu0) / len(reqs),
                "db_cpu_ms": 1e3 * (db1 - db0) / len(reqs) if on_pg else None,
            }
    return results


def print_results(
    results: dict[tuple[str, str], dict[str, Any]], n_calls: int, concurrency: int, rate: float
) -> None:
    print(
        f"{n_calls * 4} callbacks per run; saturation = {concurrency} in flight; fixed rate = {rate:g}/s open loop; "
        "CPU ms per callback: the server's processes, and PostgreSQL's"
    )
    print(
        f"{'load':11} {'server':36} {'callbacks/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>7} "
        f"{'CPU ms':>6} {'PG ms':>6}  stored (accepted) twice"
    )
    for (mode, name), v in results.items():
        st = f"{v['stored'][0]}/{v['sent']} ({v['stored'][1]}) {v['stored'][2]}" if v["stored"] else "-"
        db = f"{v['db_cpu_ms']:6.2f}" if v["db_cpu_ms"] is not None else f"{'-':>6}"
        print(
            f"{mode:11} {name:36} {v['rps']:11.0f} {v['p50']:8.2f} {v['p99']:8.2f} {v['bad']:7} "
            f"{v['cpu_ms']:6.2f} {db}  {st}"
        )
    sat = {name: v["rps"] for (mode, name), v in results.items() if mode == "saturation"}
    print(f"\nSaturation throughput: orchestrator on SQLite / bare = {sat[SQLITE] / sat[BARE]:.2f}")
    for name in (PG1, PG2):
        if name in sat:
            print(
                f"  {name[len('orchestrator, ') :]} / SQLite = {sat[name] / sat[SQLITE]:.2f} (target >= 0.5)"
            )
    if PG1 in sat and PG2 in sat:
        print(f"  PostgreSQL, 2 workers / 1 worker = {sat[PG2] / sat[PG1]:.2f} (target > 1)")
    once = all(v["stored"] is None or v["stored"][0] == v["sent"] for v in results.values())
    twice = sum(v["stored"][2] for v in results.values() if v["stored"])
    # a callback answered 2xx must be on disk: Twilio retries only the others
    lost = sum(max(0, v["sent"] - v["bad"] - v["stored"][0]) for v in results.values() if v["stored"])
    print(
        f"Every callback stored exactly once, in every row: {'yes' if once else 'NO'}; applied twice: {twice}; "
        f"answered 2xx but not stored: {lost}"
    )
    print(f"Machine at the end: {load_now()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): 50 calls, 200 callbacks")
    ap.add_argument("--calls", type=int, default=1500, help="calls per run (4 callbacks each)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rate", type=float, default=1000.0, help="open-loop rate, callbacks/s")
    ap.add_argument("--pg", help="an existing PostgreSQL database URL instead of a throwaway cluster")
    ap.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="PostgreSQL sessions' synchronous_commit: on (its durable default) or off (closer to SQLite's "
        "synchronous=NORMAL: a commit is not flushed one by one)",
    )
    ap.add_argument("--role", choices=["real", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--public", default=PUBLIC, help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "real":
        asyncio.run(serve_real(a.args[0], Path(a.args[1]), a.worker, a.public))
        return
    if a.role == "bare":
        asyncio.run(serve_bare(Path(a.args[0])))
        return
    n_calls = 50 if a.quick else a.calls
    header(
        "Control plane: signed status callbacks/s, SQLite and PostgreSQL vs a bare aiohttp handler", a.quick
    )
    pg, cluster, said = pg_database(a.pg, a.synchronous_commit)
    print(said)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
            servers = start_servers(Path(tmp), pg)
            try:
                _wait_ready(servers)
                results = measure(with_one_worker(servers), n_calls, a.concurrency, a.rate, cluster)
            finally:
                _stop([proc for s in servers for proc in s.procs])
    finally:
        if cluster is not None:
            cluster.stop()
    print_results(results, n_calls, a.concurrency, a.rate)


if __name__ == "__main__":
    main()
