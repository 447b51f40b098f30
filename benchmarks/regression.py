"""Regression detection between two runs: its false-alarm rate and its power on a 150 ms latency shift.

Real calls through the product (server + carrier emulator over real sockets, the echo backend in
`turns` mode with its greeting) are recorded into the store in pools: a baseline pool, a pool at the
same configuration with 150 ms of extra latency (the backend's every output frame delayed by exactly
150 ms, sample for sample), and (without --quick) a second baseline pool recorded after the others.
Calls differ as real ones do: their sentences, when the caller starts, seeded jitter on the line.

The rates are then measured by resampling from the pools, through the same code path as
`orchestrator report --compare` (store -> documents -> report model -> comparison):
- false alarm: two runs of N calls drawn from one baseline pool (2N distinct calls each draw);
  a false alarm is any regression in the whole comparison (what --fail-on-regression exits 1 on);
- detection: N calls from the baseline pool against N from the shifted pool; detected when
  response latency p50 is judged a regression.
Also printed: the pools' latency spread, and both rates at other margins (what the margin buys).

Usage: python benchmarks/regression.py [--quick] [--draws N] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import header, load
from bridge.backends.base import Audio, BackendSession, SpeechBackend, StepOutput
from bridge.backends.echo import EchoBackend, EchoSession
from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.report import RunReport, build_report
from orchestrator.report.compare import REGRESSION, RunSample, compare, compare_metric, sample_of
from orchestrator.report.directions import Margin
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.service import CallService
from orchestrator.store import Store

SHIFT_MS = 150.0
CALL_S = 11.0  # seconds of stream per call: the greeting and two or three answered turns
GREETING = "Hello, I repeat what you say."
METRIC = "response_latency_ms_p50"
SENTENCES = (
    "Hello, can you hear me?",
    "Tell me about the weather.",
    "Thank you, goodbye.",
    "One more thing, please.",
    "What time does the shop open tomorrow?",
    "I would like to change my booking.",
    "Could you say that again?",
    "My number is five five five, one two three four.",
)


class LaggedBackend(SpeechBackend):
    """The echo backend with every output frame delayed by `lag_ms` (a slower model, nothing else)."""

    name = "echo"

    def __init__(self, inner: EchoBackend, lag_ms: float) -> None:
        self.inner, self.lag_ms = inner, lag_ms

    async def load(self) -> None:
        await self.inner.load()
        self.load_seconds = self.inner.load_seconds

    async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
        return _LaggedSession(await self.inner.open_session(call_id, max_seconds), self.lag_ms)


class _LaggedSession(BackendSession):
    def __init__(self, inner: BackendSession, lag_ms: float) -> None:
        self.inner, self.line = inner, EchoSession(lag_ms)

    async def process(self, frame: Audio) -> StepOutput:
        out = await self.inner.process(frame)
        out.frames = [(await self.line.process(f)).frames[0] for f in out.frames]
        return out

    async def close(self) -> None:
        await self.inner.close()


def call_options(i: int, seconds: float) -> CallOptions:
    rng = random.Random(f"call:{i}")
    turns = tuple(Turn(text=t, answer_timeout_s=4.0, pause_s=0.4) for t in rng.sample(SENTENCES, 3))
    return CallOptions(
        ring_s=0.2,
        turns=turns,
        caller_start_s=2.0 + rng.uniform(0.0, 0.3),
        faults=Faults(jitter_ms=10.0, noise_dbfs=-60.0, hangup_after_stream_s=seconds, seed=i),
    )


async def record_pool(db_dir: Path, label: str, n: int, lag_ms: float, first: int, batch: int) -> Path:
    """`n` calls recorded under run `label`; returns the database they are in."""
    workdir = db_dir / label
    settings = rig_settings(workdir, backend="echo", echo_mode="turns", greeting="", echo_greeting=GREETING)
    inner = EchoBackend(mode="turns", greeting=GREETING)
    backend: SpeechBackend = LaggedBackend(inner, lag_ms) if lag_ms else inner
    async with LocalRig(settings, workdir / "truth", backend=backend) as rig:
        for b in range(0, n, batch):
            ids = range(first + b, first + min(n, b + batch))
            rows = [
                await rig.place(call_options(i, CALL_S), to=f"+1500555{5000 + i:04d}", run=label) for i in ids
            ]
            for r in rows:
                await rig.emulator.wait_call(r["call_sid"], timeout=90)
            for r in rows:
                await rig.settled(r["id"], timeout_s=120)
    return workdir / "calls.db"


def calls_of(db: Path, label: str) -> list[RunSample]:
    """One single-call sample per call of the run, read back as `orchestrator report --compare` reads it."""
    service = CallService(Store(db, create=False))
    try:
        rows = service.store.list_calls(run=label, limit=10_000)
        docs = [service.document(r["id"]) for r in reversed(rows)]
    finally:
        service.store.close()
    run = build_report(docs, label).runs[0]
    return [sample_of(RunReport(label, (c,), (), {})) for c in run.calls]


def merged(label: str, calls: list[RunSample]) -> RunSample:
    metrics: dict[str, list[float]] = {}
    verdicts: dict[str, list[str]] = {}
    for c in calls:
        for k, v in c.metrics.items():
            metrics.setdefault(k, []).extend(v)
        for k, s in c.verdicts.items():
            verdicts.setdefault(k, []).extend(s)
    return RunSample(
        label,
        len(calls),
        {k: tuple(v) for k, v in metrics.items()},
        {k: tuple(v) for k, v in verdicts.items()},
    )


def rates(
    base: list[RunSample], other: list[RunSample] | None, n: int, draws: int, seed: int
) -> tuple[float, float, list[list[float]], list[list[float]], Counter[str]]:
    """(rate of any regression, rate of a METRIC regression, METRIC values drawn per side, how often each
    metric or criterion regressed) over draws; `other` None: both sides from `base`, disjoint."""
    rng = random.Random(seed)
    any_hits = metric_hits = 0
    sides_a, sides_b = [], []
    which: Counter[str] = Counter()
    for _ in range(draws):
        if other is None:
            picked = rng.sample(base, 2 * n)
            a, b = picked[:n], picked[n:]
        else:
            a, b = rng.sample(base, n), rng.sample(other, n)
        cmp = compare(merged("a", a), merged("b", b), n_boot=200)  # verdicts never read the bootstrap
        any_hits += bool(cmp.regressions)
        which.update(cmp.regressions)
        metric_hits += METRIC in cmp.regressions
        sides_a.append([v for c in a for v in c.metrics.get(METRIC, ())])
        sides_b.append([v for c in b for v in c.metrics.get(METRIC, ())])
    return any_hits / draws, metric_hits / draws, sides_a, sides_b, which


def margin_sweep(sides_a: list[list[float]], sides_b: list[list[float]], margin_ms: float) -> float:
    margins = {"ms": Margin(margin_ms, 0.0)}
    hits = sum(
        compare_metric(METRIC, a, b, margins=margins, n_boot=200).verdict == REGRESSION
        for a, b in zip(sides_a, sides_b, strict=True)
    )
    return hits / len(sides_a)


def spread(calls: list[RunSample]) -> str:
    values = sorted(v for c in calls for v in c.metrics.get(METRIC, ()))
    if not values:
        return "no values"
    q = [values[round((len(values) - 1) * p)] for p in (0.05, 0.25, 0.5, 0.75, 0.95)]
    return f"n={len(values)} p5 {q[0]:.0f}  p25 {q[1]:.0f}  p50 {q[2]:.0f}  p75 {q[3]:.0f}  p95 {q[4]:.0f} ms"


def paired_shift(base: list[RunSample], shifted: list[RunSample]) -> str:
    """The injected shift as recorded: per script (pools share their first calls' scripts), shifted - baseline."""
    diffs = sorted(
        s.metrics[METRIC][0] - b.metrics[METRIC][0]
        for b, s in zip(base, shifted, strict=False)
        if b.metrics.get(METRIC) and s.metrics.get(METRIC)
    )
    if not diffs:
        return "no pairs"
    return f"median {diffs[len(diffs) // 2]:+.0f} ms (min {diffs[0]:+.0f}, max {diffs[-1]:+.0f}) over {len(diffs)} pairs"


def pct_of(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def top(which: Counter[str], draws: int) -> str:
    return ", ".join(f"{k} {pct_of(v / draws)}" for k, v in which.most_common(4)) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pools of 20 + 12 calls, 200 draws (CI)")
    ap.add_argument("--calls", type=int, default=10, help="calls a side in each comparison")
    ap.add_argument("--draws", type=int, default=None, help="resampled comparisons per rate")
    ap.add_argument("--batch", type=int, default=10, help="concurrent calls while recording")
    args = ap.parse_args()
    header("regression detection between runs (false alarms, 150 ms detection)", args.quick)
    n = args.calls
    sizes = (2 * n, n + 2, 0) if args.quick else (4 * n, 4 * n, 2 * n)
    draws = args.draws or (200 if args.quick else 1000)
    plan = [("baseline", sizes[0], 0.0), ("shifted", sizes[1], SHIFT_MS), ("baseline-again", sizes[2], 0.0)]
    tmp = Path(tempfile.mkdtemp(prefix="regression-bench-"))
    try:
        started = time.monotonic()
        pools: dict[str, list[RunSample]] = {}
        for label, size, lag in plan:
            if size:  # every pool starts at script 0: call k of each pool says the same sentences
                db = asyncio.run(record_pool(tmp, label, size, lag, 0, args.batch))
                pools[label] = calls_of(db, label)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the servers' databases and recordings
    total = sum(len(p) for p in pools.values())
    print(f"recorded {total} calls in {time.monotonic() - started:.0f} s; {load()}")
    for label, calls in pools.items():
        print(f"  pool {label:<15} {len(calls):>3} calls  {METRIC}: {spread(calls)}")
    base, shifted = pools["baseline"], pools["shifted"]
    print(
        f"  injected +{SHIFT_MS:.0f} ms (every frame the backend sends), recorded as: {paired_shift(base, shifted)}"
    )
    print(
        "  (only the first answer moves by exactly the lag: the caller waits for each answer, so its next"
        " sentence starts later and falls elsewhere on the echo's 80 ms frame grid)"
    )
    print(f"\nresampled from the pools: {draws} draws of {n} calls a side, default margins, alpha 0.05")
    fa_any, fa_metric, fa_a, fa_b, fa_which = rates(base, None, n, draws, seed=1)
    det_any, det_metric, det_a, det_b, _ = rates(base, shifted, n, draws, seed=2)
    print(
        f"false alarm, two disjoint draws from the baseline pool ({len(base)} calls): any regression "
        f"{pct_of(fa_any)} ({top(fa_which, draws)}), {METRIC} {pct_of(fa_metric)}  (target <= 5 %)"
    )
    if "baseline-again" in pools:
        again = pools["baseline-again"]
        fa2_any, fa2_metric, _, _, fa2_which = rates(base, again, n, draws, seed=3)
        print(
            f"false alarm, baseline against a second recording of it ({len(base)} vs {len(again)} calls): any "
            f"regression {pct_of(fa2_any)} ({top(fa2_which, draws)}), {METRIC} {pct_of(fa2_metric)}"
        )
    print(
        f"detection of +{SHIFT_MS:.0f} ms (baseline {len(base)} vs shifted {len(shifted)} calls): {METRIC} "
        f"{pct_of(det_metric)}, any regression {pct_of(det_any)}  (target >= 95 %)"
    )
    print(f"\n{METRIC} alone at a fixed margin (no relative part): margin -> false alarm / detection")
    for m in (0.0, 25.0, 50.0, 100.0, 140.0):
        print(
            f"  {m:>5.0f} ms -> {pct_of(margin_sweep(fa_a, fa_b, m)):>7} / {pct_of(margin_sweep(det_a, det_b, m)):>7}"
        )


if __name__ == "__main__":
    main()
