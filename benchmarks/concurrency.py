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

Usage: python benchmarks/concurrency.py [--quick] [--calls 25,50,100,150] [--seconds 20]
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


async def serve(db: Path, port_file: Path, stats_file: Path, recordings: Path) -> None:
    from orchestrator.cli.serve import start_server
    from orchestrator.settings import Settings
    from orchestrator.web.app import STATE

    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        public_url=PUBLIC,
        db=db,
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
    emu = CarrierEmulator(ACCOUNT, TOKEN, routes={PUBLIC: spec["server"]})
    await emu.start()
    seconds = spec["seconds"]
    emu.set_defaults(CallOptions(ring_s=0.2, faults=Faults(hangup_after_stream_s=seconds)))
    sids = []
    for c in spec["calls"]:
        twiml = stream_twiml(PUBLIC, call_id=c["id"], token=c["token"], say=None)
        placed = emu.place_call(
            to="+15005550010",
            from_="+15005550006",
            twiml=twiml,
            status_callback=f"{PUBLIC}/twilio/status?call_id={c['id']}",
            events=["initiated", "ringing", "answered", "completed"],
        )
        sids.append(placed.sid)
        await asyncio.sleep(spec["stagger_s"])
    truths = await asyncio.gather(
        *(emu.wait_call(sid, timeout=seconds + 60) for sid in sids), return_exceptions=True
    )
    await emu.stop()
    rows = []
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


def make_calls(db: Path, n: int) -> list[dict[str, str]]:
    from orchestrator.store import Store

    store = Store(db)
    try:
        with store.transaction():
            rows = [
                store.create_call(
                    direction="outbound",
                    to_number="+15005550010",
                    from_number="+15005550006",
                    run="bench-concurrency",
                    backend="echo",
                )
                for _ in range(n)
            ]
    finally:
        store.close()
    return [{"id": r["id"], "token": r["token"]} for r in rows]


def run_round(
    n: int, seconds: float, server_pid: int, server_url: str, db: Path, work: Path, stats_file: Path
) -> dict[str, Any]:
    calls = make_calls(db, n)
    procs = 1 if n < 50 else 2
    stagger = min(2.0, 0.04 * n) / n
    idle_rss = proc_rss_mb(server_pid)
    started = time.monotonic()
    children = []
    for k in range(procs):
        spec, out = work / f"spec-{n}-{k}.json", work / f"truth-{n}-{k}.json"
        spec.write_text(
            json.dumps(
                {
                    "server": server_url,
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
                proc_cpu_s(server_pid),
                proc_rss_mb(server_pid),
                proc_cpu_split_s(server_pid),
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
        sessions = [s for s in map(json.loads, stats_file.read_text().splitlines()) if s["call_id"] in ids]
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
        "after_rss": proc_rss_mb(server_pid),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (CI): 3 calls for 3 s")
    ap.add_argument("--calls", default="25,50,100,150", help="comma-separated round sizes")
    ap.add_argument("--seconds", type=float, default=20.0, help="streaming seconds per call")
    ap.add_argument("--role", choices=["serve", "call"], help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "serve":
        asyncio.run(serve(*(Path(x) for x in a.args)))
        return
    if a.role == "call":
        asyncio.run(call(Path(a.args[0]), Path(a.args[1])))
        return
    sizes, seconds = ([3], 3.0) if a.quick else ([int(x) for x in a.calls.split(",")], a.seconds)
    header("Concurrent calls: one server process, echo backend, emulator callers in other processes", a.quick)
    from bridge.resample import StreamResampler

    print(
        f"Resampler algorithmic delay (not in the latencies below): "
        f"{StreamResampler(8000, 24000).delay_ms:.2f} ms each way (61-tap linear-phase FIR, nothing withheld)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        work = Path(tmp)
        db, port_file, stats_file = work / "bench.db", work / "port", work / "sessions.jsonl"
        stats_file.touch()
        server = subprocess.Popen(
            _py("--role", "serve", str(db), str(port_file), str(stats_file), str(work / "recordings")),
            env=_env(),
        )
        try:
            for _ in range(200):
                if port_file.exists() and port_file.read_text():
                    break
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            print(f"server pid {server.pid} at {url}; {seconds:g} s of streaming per call\n")
            print(
                "calls sess   send lateness ms    inbound ms    outbound ms   transit ms   lost  marks       "
                "server         RSS MiB                  caller"
            )
            print(
                "            p50    p99     max   p50    p99    p50    p99   p50    p99        sent/echoed "
                " CPU% ms/call-s idle   peak  after MiB/call  late max ms"
            )
            rows = [
                report(run_round(n, seconds, server.pid, url, db, work, stats_file), seconds) for n in sizes
            ]
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
    ok = [r for r in rows if r["late_p99"] < 20 and r["lost"] == 0 and r["sessions"] == r["n"]]
    print(
        f"\nLargest round with send lateness p99 < 20 ms and nothing lost: {max((r['n'] for r in ok), default=0)} calls"
    )
    base = rows[0]["late_p99"]
    knee = next((r["n"] for r in rows if r["late_p99"] > 2 * base + 1.0), None)
    print(f"Knee (lateness p99 above twice the smallest round's + 1 ms): {knee or 'not reached'}")
    after = ", ".join(f"{r['after_rss']:.1f}" for r in rows)
    print(f"Idle RSS after each round: {after} MiB")


if __name__ == "__main__":
    main()
