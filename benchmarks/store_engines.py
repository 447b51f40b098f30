"""The writes one call makes, on the SQLite store and on the PostgreSQL store, in the same run.

Per call, through `CallService` as the server's writer thread does it (each write its own transaction):
create the call, ~40 events (the REST queued, four signed status callbacks and one retried duplicate,
the stream start and stop, 32 DTMF digits), the end-of-call media results (10 metrics, the analysis,
12 transcript pieces) and the evaluation (metrics and 10 automatic checks). Printed: calls/s and the
p50/p99 of each kind of write, and a check that every event was stored once (nothing lost, nothing
applied twice).

Engines: SQLite (a temp file, WAL, synchronous=NORMAL: commits are not fsynced one by one); PostgreSQL
with its durable default (synchronous_commit=on: every commit waits for its WAL flush); PostgreSQL with
synchronous_commit=off (the closer match to SQLite's setting); and the latter with two writers (two
stores on two threads, as two workers would be). The server is a throwaway cluster started here
(tests/integration/pg_server.py) with PostgreSQL's defaults, or `--pg URL` (a database it may fill).

Usage: python benchmarks/store_engines.py [--quick] [--calls 300] [--pg postgresql://...]
Prints only; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, pct

sys.path.insert(0, str(ROOT))

from orchestrator.criteria import Verdict
from orchestrator.service import CallService
from orchestrator.stores import open_store

STATUSES = ("initiated", "ringing", "in-progress", "completed")


def one_call(service: CallService, n: int, times: dict[str, list[float]]) -> tuple[str, int]:
    """The writes of call `n`; its id and the number of events recorded."""

    def timed(kind: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = fn(*a, **kw)
        times[kind].append(time.perf_counter() - t)
        return out

    sid = f"CA{n:032x}"
    call = timed(
        "create_call", service.store.create_call, direction="outbound-api", to_number="+1", from_number="+2"
    )
    events = [dict(source="rest", type="queued", call_id=call["id"], call_sid=sid, payload={"sid": sid})]
    for seq, status in enumerate(STATUSES[:3]):
        events.append(dict(source="status_callback", type=status, call_sid=sid, dedupe_key=f"{sid}:{seq}",
                           payload={"CallStatus": status, "SequenceNumber": str(seq)}))  # fmt: skip
    events.append(dict(events[-1]))  # Twilio retries one
    events.append(dict(source="media", type="start", call_sid=sid, payload={"event": "start"}))
    events += [
        dict(source="media", type="dtmf", call_sid=sid, payload={"digit": str(d % 10)}) for d in range(32)
    ]
    events.append(dict(source="media", type="stop", call_sid=sid, payload={"event": "stop"}))
    events.append(dict(source="status_callback", type="completed", call_sid=sid, dedupe_key=f"{sid}:3",
                       payload={"CallStatus": "completed", "SequenceNumber": "3"}))  # fmt: skip
    for ev in events:
        timed("event", service.record, **ev)
    metrics = {f"m{i}": 10.0 + i for i in range(10)}
    timed("media_results", service.save_media_results, call["id"], metrics=metrics, units={"m0": "ms"},
          summary={"turns": list(range(20)), "echo_db": -31.5},
          transcript=[(200.0 * i, f"word {i}") for i in range(12)])  # fmt: skip
    verdicts = [Verdict(f"c{i}", "pass", "evidence") for i in range(10)]
    timed(
        "evaluation", service.save_evaluation, call["id"], metrics={"score": 4.2}, units={}, verdicts=verdicts
    )
    return str(call["id"]), len(events)


def run(target: str, calls: int, writers: int) -> dict[str, Any]:
    stores = [open_store(target) for _ in range(writers)]
    times: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    made: list[tuple[str, int]] = []

    def writer(w: int) -> None:
        local: dict[str, list[float]] = defaultdict(list)
        service = CallService(stores[w])  # type: ignore[arg-type]  # either store
        mine = [one_call(service, n, local) for n in range(w, calls, writers)]
        with lock:
            made.extend(mine)
            for k, v in local.items():
                times[k] += v

    t0 = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    store = stores[0]
    rows = [e for cid, _ in made for e in store.events_for(store.get_call(cid))]
    stored, dupes = len(rows), sum(1 for e in rows if e["reason"] == "duplicate")
    for s in stores:
        s.close()
    return {
        "wall": wall,
        "times": times,
        "events": sum(n for _, n in made),
        "stored": stored,
        "dupes": dupes,
        "calls": calls,
    }


def report(name: str, r: dict[str, Any]) -> None:
    writes = sum(len(v) for v in r["times"].values())
    print(
        f"\n{name}: {r['calls'] / r['wall']:.1f} calls/s ({writes / r['wall']:.0f} writes/s, {r['wall']:.2f} s); "
        f"events stored {r['stored']}/{r['events']}, duplicates refused {r['dupes']}/{r['calls']}"
    )
    for kind in ("create_call", "event", "media_results", "evaluation"):
        v = r["times"][kind]
        print(f"  {kind:<14} n={len(v):<6} p50 {pct(v, 50):7.3f} ms   p99 {pct(v, 99):7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 calls per engine (under a minute)")
    ap.add_argument("--calls", type=int, default=300, help="calls per engine")
    ap.add_argument("--pg", help="an existing PostgreSQL database URL instead of a throwaway cluster")
    args = ap.parse_args()
    calls = 40 if args.quick else args.calls
    print(f"store engines: {calls} calls each; {machine()}")
    cluster = None
    if args.pg:
        pg_urls = [args.pg] * 3
    else:
        from tests.integration.pg_server import PgCluster, why_unavailable

        why = why_unavailable()
        if why:
            print(f"no PostgreSQL here ({why}): SQLite only")
        else:
            cluster = PgCluster.start(fast=False)  # PostgreSQL's durable defaults (fsync on)
            pg_urls = [cluster.create_database("bench") for _ in range(3)]
            print(f"PostgreSQL: throwaway cluster on 127.0.0.1:{cluster.port}, fsync on")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report("SQLite (WAL, synchronous=NORMAL)", run(str(Path(tmp) / "bench.db"), calls, 1))
        if args.pg or cluster is not None:
            report("PostgreSQL (synchronous_commit=on)", run(pg_urls[0], calls, 1))
            off = "&" if "?" in pg_urls[1] else "?"
            report(
                "PostgreSQL (synchronous_commit=off)",
                run(pg_urls[1] + off + "options=-csynchronous_commit%3Doff", calls, 1),
            )
            report(
                "PostgreSQL (synchronous_commit=off, 2 writers)",
                run(pg_urls[2] + off + "options=-csynchronous_commit%3Doff", calls, 2),
            )
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
