"""Concurrent calls on one server process: send lateness, bridge-added latency, loss, CPU and memory per call.

The server (`start_server`, echo backend in delay mode, recordings on as by default) runs alone in its own
process. Callers come from the carrier emulator in other processes (2 from 50 calls up): each places its
calls through the emulator's Python API (signed status callbacks, signed media handshake through the
emulated tunnel, a `media` frame every 20 ms on absolute deadlines, Twilio's playout buffer with marks).
Rounds of increasing size run on the same server, so memory that does not come back shows across rounds.

Per round it prints, from the sessions' own records (collected in the server process as each call ends):
- outbound send lateness p50/p99/max: a chunk's send time minus when it was both ready and allowed by
  pacing (target p99 < 20 ms);
- bridge-added latency per direction p50/p99 (target p99 < 5 ms at 50 calls): inbound = the last
  sample of a model frame handed to the session -> that frame taken by the backend worker; outbound =
  backend frame out -> its first chunk on the wire, minus the deliberate pacing hold. The resampler's
  algorithmic delay (1.25 ms each way, nothing withheld) is not in these; it is printed once;
- transit: the caller's due time of a frame (its 20 ms deadline) -> the server's read loop handling it,
  across processes on one monotonic clock; includes the caller process' own lateness and the kernel;
- lost frames: frames the emulator wrote minus frames the session received, plus frames the session
  dropped (backend behind) and timestamp gaps; marks sent by the server vs echoed back by the phone;
- server CPU % over the steady window (all calls streaming) and ms CPU per call-second; RSS idle
  before, at full concurrency, and idle after the round: per-call memory and growth across rounds.

`--workers 1,2` runs the rounds once per entry instead: that many `serve --worker` processes on one
PostgreSQL database (a throwaway cluster, durable defaults), each with its own port and public URL,
the calls spread over them evenly (call i held by worker i mod N and streaming to it, its row made
here as `orchestrator call` would claim it). Server CPU and RSS are then the sum over the workers, and
a last table puts each round's send lateness side by side. What two workers do on two cores: each
event loop and GIL carries half the streams, so send lateness falls while one process' loop is what
runs late (on a shared box measured 25 calls p99 24.7 -> 12.5 ms; at 100 calls one process fell
behind and lost frames, two lost none; benchmarks/README.md); they add no core, so once the two cores
are busy (workers, callers, PostgreSQL) lateness rises for both, and each worker holds its own ~140
MiB idle. On a box shared with other work, two processes also get a larger share of its CPU: read
the server CPU column beside the lateness.

Usage: python benchmarks/concurrency.py [--quick] [--calls 25,50,100,150] [--seconds 20] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, header, pct, proc_cpu_s, proc_cpu_split_s, proc_rss_mb, steal_s

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-token-" + "0" * 20
PUBLIC = "https://bench-tunnel.invalid"


# ---- the server process ------------------------------------------------------------------------------


def _summary(live: Any) -> dict[str, Any]:
    s = live.session
    return {
        "call_id": live.call["id"],
        "call_sid": live.start.call_sid,
        "t0": s.t0,
        "arrivals": [[round(s.t0 + rel, 6), ts] for rel, ts in s.arrivals],
        "inbound": s.stats.inbound_latency_s,
        "outbound_added": s.stats.outbound_added_s,
        "lateness": s.stats.send_lateness_s,
        "late_frames": s.late_frames,
        "gaps": len(s.stats.gaps),
        "marks_sent": s._mark_seq,
        "chunks_sent": len(s.sent_codes) // 160,
        "underruns": s.playout.underruns,
    }


async def serve(
    db: str, port_file: Path, stats_file: Path, recordings: Path, worker: str | None, public: str
) -> None:
    from orchestrator.cli.serve import start_server
    from orchestrator.settings import Settings
    from orchestrator.web.app import STATE

    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        public_url=public,
        db=Path(db),  # a URL too: open_store mends what Path did to its `//`
        worker=worker,
        worker_capacity=10_000 if worker else None,  # rounds are claimed by the bench, not refused busy
        host="127.0.0.1",
        port=0,
        backend="echo",
        echo_mode="delay",
        recordings_dir=recordings,
        greeting="",
        max_call_seconds=3600,
        reconcile_interval_s=0,  # no carrier here to ask
    )
    server = await start_server(settings)
    state = server.app[STATE]
    await asyncio.wait_for(state.warmed.wait(), 60)  # the first round must not share the GIL with imports
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    port_file.write_text(str(server.port))  # noqa: ASYNC240 - once, at start
    seen: dict[str, Any] = {}
    with stats_file.open("a") as out:
        while not stop.is_set():
            for cid, live in list(state.sessions.items()):
                seen.setdefault(cid, live)
            for cid in [c for c in seen if c not in state.sessions]:
                out.write(json.dumps(_summary(seen.pop(cid))) + "\n")
                out.flush()
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass
    await server.stop()


# ---- a caller process --------------------------------------------------------------------------------


async def call(spec_file: Path, out_file: Path) -> None:
    from orchestrator.emulator import CallOptions, CarrierEmulator, Faults
    from orchestrator.twiml import stream_twiml

    spec = json.loads(spec_file.read_text())  # noqa: ASYNC240 - once, before any call
    emu = CarrierEmulator(ACCOUNT, TOKEN, routes=spec["routes"])
    await emu.start()
    seconds = spec["seconds"]
    emu.set_defaults(CallOptions(ring_s=0.2, faults=Faults(hangup_after_stream_s=seconds)))
    sids = []
    for c in spec["calls"]:
        twiml = stream_twiml(c["public"], call_id=c["id"], token=c["token"], say=None)
        placed = emu.place_call(
            to="+15005550010",
            from_="+15005550006",
            twiml=twiml,
            status_callback=f"{c['public']}/twilio/status?call_id={c['id']}",
            events=["initiated", "ringing", "answered", "completed"],
        )
        sids.append(placed.sid)
        await asyncio.sleep(spec["stagger_s"])
    truths = await asyncio.gather(
        *(emu.wait_call(sid, timeout=seconds + 60) for sid in sids), return_exceptions=True
    )
    await emu.stop()
    rows: list[dict[str, Any]] = []
    for sid, t in zip(sids, truths, strict=True):
        if isinstance(t, BaseException):
            rows.append({"call_sid": sid, "error": repr(t)})
            continue
        st = t.stream or {}
        rows.append(
            {
                "call_sid": sid,
                "status": t.status,
                "frames_sent": st.get("frames_sent", 0),
                "frames_lost": len(st.get("frames_lost") or []),
                "marks": len(st.get("marks") or []),
                "t0": (st.get("start_sent") or {}).get("mono"),
                "max_send_lateness_ms": st.get("max_send_lateness_ms"),
                "error": st.get("error"),
            }
        )
    out_file.write_text(json.dumps(rows))  # noqa: ASYNC240 - once, after every call


# ---- the driver ----------------------------------------------------------------------------------------


def _py(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def make_calls(db: str, n: int, workers: list[str | None]) -> list[dict[str, Any]]:
    """n call rows, call i held by workers[i mod N] (as `orchestrator call` claims a session for it;
    None: no worker). Each row's id, token and the worker."""
    from orchestrator.stores import open_store

    store = open_store(db)
    try:
        with store.transaction():
            rows = []
            for i in range(n):
                row = store.create_call(
                    direction="outbound",
                    to_number="+15005550010",
                    from_number="+15005550006",
                    run="bench-concurrency",
                    backend="echo",
                )
                worker = workers[i % len(workers)]
                if worker:
                    store.update_call(row["id"], worker=worker)
                rows.append({"id": row["id"], "token": row["token"], "server": i % len(workers)})
    finally:
        store.close()
    return rows


@dataclass
class Servers:
    """The server processes of one pass (one, or N workers on one database) and where they write."""

    db: str
    names: list[str | None] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    publics: list[str] = field(default_factory=list)
    stats_files: list[Path] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def _sum(read: Any, pids: list[int]) -> Any:
    """A /proc reading summed over the processes (tuples element by element)."""
    values = [read(pid) for pid in pids]
    return tuple(map(sum, zip(*values, strict=True))) if isinstance(values[0], tuple) else sum(values)


def run_round(n: int, seconds: float, servers: Servers, work: Path) -> dict[str, Any]:
    calls = make_calls(servers.db, n, servers.names)
    for c in calls:  # call i on server i mod N: an even spread
        c["public"] = servers.publics[c.pop("server")]
    pids = servers.pids()
    procs = 1 if n < 50 else 2
    stagger = min(2.0, 0.04 * n) / n
    idle_rss = _sum(proc_rss_mb, pids)
    started = time.monotonic()
    children = []
    for k in range(procs):
        spec, out = work / f"spec-{n}-{k}.json", work / f"truth-{n}-{k}.json"
        spec.write_text(
            json.dumps(
                {
                    "routes": dict(zip(servers.publics, servers.urls, strict=True)),
                    "calls": calls[k::procs],
                    "seconds": seconds,
                    "stagger_s": stagger * procs,
                }
            )
        )
        children.append((subprocess.Popen(_py("--role", "call", str(spec), str(out)), env=_env()), out))
    samples = []  # (t, server cpu s, rss MiB, server (user, sys) s, callers' cpu s, steal s)
    deadline = started + seconds + 90
    while any(p.poll() is None for p, _ in children) and time.monotonic() < deadline:
        callers = 0.0
        for p, _ in children:
            try:
                callers += proc_cpu_s(p.pid)
            except (OSError, IndexError):  # exited between poll and read: its last reading is lost
                pass
        samples.append(
            (
                time.monotonic() - started,
                _sum(proc_cpu_s, pids),
                _sum(proc_rss_mb, pids),
                _sum(proc_cpu_split_s, pids),
                callers,
                steal_s(),
            )
        )
        time.sleep(0.5)
    for p, _ in children:
        if p.poll() is None:
            p.kill()
    truths = [row for _, out in children if out.exists() for row in json.loads(out.read_text())]
    ids = {c["id"] for c in calls}
    sessions: list[dict[str, Any]] = []
    for _ in range(120):  # sessions are written as each call's media ends
        lines = [line for f in servers.stats_files for line in f.read_text().splitlines()]
        sessions = [s for s in map(json.loads, lines) if s["call_id"] in ids]
        if len(sessions) >= n:
            break
        time.sleep(0.25)
    # steady window: every call streaming (after ring + stagger), before the first hang-up
    lo, hi = 0.2 + min(2.0, 0.04 * n) + 1.0, 0.2 + seconds - 0.5
    win = [s for s in samples if lo <= s[0] <= hi]
    nan = float("nan")
    span = win[-1][0] - win[0][0] if len(win) > 1 else nan
    cpu_pct = 100 * (win[-1][1] - win[0][1]) / span if len(win) > 1 else nan
    sys_pct = 100 * (win[-1][3][1] - win[0][3][1]) / span if len(win) > 1 else nan
    callers_pct = 100 * (win[-1][4] - win[0][4]) / span if len(win) > 1 else nan
    # steal over the machine's CPUs: the share of the box other guests took while we measured
    steal_pct = 100 * (win[-1][5] - win[0][5]) / span / (os.cpu_count() or 1) if len(win) > 1 else nan
    peak_rss = max((s[2] for s in win), default=float("nan"))
    time.sleep(3.0)  # let the post-call analysis finish before the idle reading
    return {
        "n": n,
        "truths": truths,
        "sessions": sessions,
        "cpu_pct": cpu_pct,
        "sys_pct": sys_pct,
        "callers_pct": callers_pct,
        "steal_pct": steal_pct,
        "idle_rss": idle_rss,
        "peak_rss": peak_rss,
        "after_rss": _sum(proc_rss_mb, pids),
    }


def report(r: dict[str, Any], seconds: float) -> dict[str, float]:
    ss, tt = r["sessions"], r["truths"]
    by_sid = {t["call_sid"]: t for t in tt}
    late = [x for s in ss for x in s["lateness"]]
    inbound = [x for s in ss for x in s["inbound"]]
    outbound = [x for s in ss for x in s["outbound_added"]]
    transit = []
    lost = sum(t.get("frames_lost", 0) for t in tt)  # injected by the emulator: none are configured
    missing = 0
    for s in ss:
        t = by_sid.get(s["call_sid"])
        if t and t.get("t0"):
            transit += [at - (t["t0"] + ts / 1000) for at, ts in s["arrivals"]]
            missing += max(0, t["frames_sent"] - len(s["arrivals"]))
    dropped = sum(s["late_frames"] + s["gaps"] for s in ss)
    marks_sent, marks_echoed = sum(s["marks_sent"] for s in ss), sum(t.get("marks", 0) for t in tt)
    errors = [t for t in tt if t.get("error") or t.get("status") != "completed"]
    n = r["n"]
    row = {
        "n": n,
        "sessions": len(ss),
        "late_p50": pct(late, 50),
        "late_p99": pct(late, 99),
        "late_max": pct(late, 100),
        "in_p50": pct(inbound, 50),
        "in_p99": pct(inbound, 99),
        "out_p50": pct(outbound, 50),
        "out_p99": pct(outbound, 99),
        "transit_p50": pct(transit, 50),
        "transit_p99": pct(transit, 99),
        "lost": missing + dropped + lost,
        "cpu_pct": r["cpu_pct"],
        "cpu_ms_per_call_s": 10 * r["cpu_pct"] / n,
        "idle_rss": r["idle_rss"],
        "peak_rss": r["peak_rss"],
        "after_rss": r["after_rss"],
        "per_call_mb": (r["peak_rss"] - r["idle_rss"]) / n,
        "caller_late_max": max((t.get("max_send_lateness_ms") or 0 for t in tt), default=0.0),
    }
    print(
        f"{n:5} {len(ss):4} {row['late_p50']:6.2f} {row['late_p99']:6.2f} {row['late_max']:7.1f}  "
        f"{row['in_p50']:5.2f} {row['in_p99']:6.2f}  {row['out_p50']:5.2f} {row['out_p99']:6.2f}  "
        f"{row['transit_p50']:5.2f} {row['transit_p99']:6.2f}  {row['lost']:4} {marks_sent:6}/{marks_echoed:<6} "
        f"{row['cpu_pct']:5.1f} {row['cpu_ms_per_call_s']:5.2f}  {row['idle_rss']:6.1f} {row['peak_rss']:6.1f} "
        f"{row['after_rss']:6.1f} {row['per_call_mb']:5.2f}  {row['caller_late_max']:6.1f}"
        + (f"  {len(errors)} calls not completed cleanly" if errors else "")
    )
    print(
        f"      server CPU {r['cpu_pct']:.1f} % of a core ({r['sys_pct']:.1f} % in the kernel); "
        f"caller processes {r['callers_pct']:.1f} % ({10 * r['callers_pct'] / n:.2f} ms per call-second); "
        f"steal {r['steal_pct']:.1f} % of the machine (other guests' time: noise in every latency here)"
    )
    row.update(callers_pct=r["callers_pct"], steal_pct=r["steal_pct"], sys_pct=r["sys_pct"])
    return row


def start_pass(work: Path, db: str, workers: int | None) -> Servers:
    """One server process (`workers` None: not a worker, the default setup), or that many worker
    processes on `db`, each with its own port, public URL and sessions file; started together."""
    from orchestrator.stores import open_store

    open_store(db).close()  # migrated once here, not raced by workers starting on an empty database
    names: list[str | None] = [None] if workers is None else [f"w{k + 1}" for k in range(workers)]
    servers = Servers(db, names)
    ports = []
    for k, name in enumerate(names):
        port_file, stats = work / f"port-{k}", work / f"sessions-{k}.jsonl"
        port_file.touch()
        stats.touch()
        public = PUBLIC if name is None else f"https://{name}.bench-tunnel.invalid"
        args = ["--role", "serve", db, str(port_file), str(stats), str(work / f"recordings-{k}")]
        args += ["--public", public] + (["--worker", name] if name else [])
        servers.procs.append(subprocess.Popen(_py(*args), env=_env()))
        servers.publics.append(public)
        servers.stats_files.append(stats)
        ports.append(port_file)
    deadline = time.monotonic() + 120
    for proc, port_file in zip(servers.procs, ports, strict=True):
        while not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_pass(servers)
                raise RuntimeError(f"a server process did not start (exit {proc.poll()})")
            time.sleep(0.05)
        servers.urls.append(f"http://127.0.0.1:{port_file.read_text()}")
    return servers


def stop_pass(servers: Servers) -> None:
    for proc in servers.procs:
        proc.send_signal(signal.SIGTERM)
    for proc in servers.procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_pass(
    label: str, db: str, workers: int | None, sizes: list[int], seconds: float, work: Path
) -> list[dict[str, float]]:
    work.mkdir()
    servers = start_pass(work, db, workers)
    try:
        where = ", ".join(f"pid {p} at {u}" for p, u in zip(servers.pids(), servers.urls, strict=True))
        print(f"\n{label}: {where}; {seconds:g} s of streaming per call\n")
        print(
            "calls sess   send lateness ms    inbound ms    outbound ms   transit ms   lost  marks       "
            "server         RSS MiB                  caller"
        )
        print(
            "            p50    p99     max   p50    p99    p50    p99   p50    p99        sent/echoed "
            " CPU% ms/call-s idle   peak  after MiB/call  late max ms"
        )
        rows = [report(run_round(n, seconds, servers, work), seconds) for n in sizes]
    finally:
        stop_pass(servers)
    if len(servers.stats_files) > 1:
        served = [len(f.read_text().splitlines()) for f in servers.stats_files]
        print(f"\nCalls each worker served (all rounds): {', '.join(map(str, served))}")
    ok = [r for r in rows if r["late_p99"] < 20 and r["lost"] == 0 and r["sessions"] == r["n"]]
    print(
        f"\nLargest round with send lateness p99 < 20 ms and nothing lost: {max((r['n'] for r in ok), default=0)} calls"
    )
    base = rows[0]["late_p99"]
    knee = next((r["n"] for r in rows if r["late_p99"] > 2 * base + 1.0), None)
    print(f"Knee (lateness p99 above twice the smallest round's + 1 ms): {knee or 'not reached'}")
    after = ", ".join(f"{r['after_rss']:.1f}" for r in rows)
    print(f"Idle RSS after each round: {after} MiB")
    return rows


def side_by_side(passes: dict[str, list[dict[str, float]]]) -> None:
    """Each round's send lateness (and what the servers spent) in every pass, on one line."""
    print("\nSend lateness ms p50/p99/max, lost frames, server CPU % (summed over the workers), per round:")
    print("calls  " + "  ".join(f"{label:>34}" for label in passes))
    for i, n in enumerate(r["n"] for r in next(iter(passes.values()))):
        cells = [
            f"{r['late_p50']:5.2f}/{r['late_p99']:6.2f}/{r['late_max']:6.1f} {r['lost']:4} {r['cpu_pct']:6.1f}%"
            for r in (rows[i] for rows in passes.values())
        ]
        print(f"{n:5}  " + "  ".join(f"{c:>34}" for c in cells))


def pg_cluster() -> tuple[Any, str | None]:
    """(a throwaway PostgreSQL cluster with its durable defaults, None) or (None, why there is none)."""
    from tests.integration.pg_server import PgCluster, why_unavailable

    why = why_unavailable()
    return (None, why) if why else (PgCluster.start(fast=False), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): 3 calls for 3 s")
    ap.add_argument("--calls", default="25,50,100,150", help="comma-separated round sizes")
    ap.add_argument("--seconds", type=float, default=20.0, help="streaming seconds per call")
    ap.add_argument(
        "--workers",
        help="comma-separated worker counts, e.g. 1,2: one pass each, that many worker processes on one "
        "PostgreSQL database (default: one server process on SQLite, not a worker)",
    )
    ap.add_argument("--role", choices=["serve", "call"], help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--public", default=PUBLIC, help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "serve":
        asyncio.run(serve(a.args[0], Path(a.args[1]), Path(a.args[2]), Path(a.args[3]), a.worker, a.public))
        return
    if a.role == "call":
        asyncio.run(call(Path(a.args[0]), Path(a.args[1])))
        return
    sizes, seconds = ([3], 3.0) if a.quick else ([int(x) for x in a.calls.split(",")], a.seconds)
    header("Concurrent calls: server processes, echo backend, emulator callers in other processes", a.quick)
    from bridge.resample import StreamResampler

    print(
        f"Resampler algorithmic delay (not in the latencies below): "
        f"{StreamResampler(8000, 24000).delay_ms:.2f} ms each way (61-tap linear-phase FIR, nothing withheld)"
    )
    cluster, why = pg_cluster() if a.workers else (None, None)
    if why:
        print(f"no PostgreSQL here ({why}): one server process on SQLite only")
    passes: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
            work = Path(tmp)
            if cluster is None:
                passes["1 process, SQLite"] = run_pass(
                    "1 server process, SQLite", str(work / "bench.db"), None, sizes, seconds, work / "sqlite"
                )
            else:
                print(f"PostgreSQL: a throwaway cluster on 127.0.0.1:{cluster.port}, durable defaults")
                for w in (int(x) for x in a.workers.split(",")):
                    label = f"{w} worker{'s' if w > 1 else ''}, PostgreSQL"
                    db = cluster.create_database("bench_conc")
                    passes[label] = run_pass(label, db, w, sizes, seconds, work / f"workers-{w}")
    finally:
        if cluster is not None:
            cluster.stop()
    if len(passes) > 1:
        side_by_side(passes)


if __name__ == "__main__":
    main()
