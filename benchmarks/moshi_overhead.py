"""What the Moshi backend costs around the model, with the tiny generated weights on this CPU.

Prints: load time (load + warm-up); model step time p50/p95/p99; per-frame overhead outside model
compute (process() wall time minus the LM step time: worker hand-off, codec submit and polling)
p50/p99, next to a bare executor round trip measured in the same run; event-loop lag while the model
runs on the worker thread (why a thread is enough); and the real-time factor of the rustymimi codec,
pipelined (encoder and decoder threads overlapping) against one frame at a time.

Usage: PYTHONPATH=. python benchmarks/moshi_overhead.py [--quick] [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.backends.base import FRAME_SAMPLES
from bridge.backends.moshi import MoshiBackend
from bridge.backends.moshi_loader import MoshiConfig, new_tokenizer
from tests.moshi.conftest import write_tiny_repo

FRAME_S = FRAME_SAMPLES / 24_000


def pct(values: list[float], *qs: float) -> str:
    if not values:
        return "n/a"
    return " ".join(f"p{q:g}={np.percentile(values, q):.2f}" for q in qs)


async def loop_lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 5 ms timer fires: the event loop's responsiveness while the backend works."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - started - 0.005) * 1000)


async def bare_handoff(n: int) -> list[float]:
    """Round trip of a no-op through a one-thread executor: the floor of any worker-thread design."""
    pool = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await loop.run_in_executor(pool, int)
        out.append((time.perf_counter() - started) * 1000)
    pool.shutdown()
    return out


async def session_run(backend: MoshiBackend, frames: int) -> dict[str, list[float] | int]:
    rng = np.random.default_rng(0)
    session = await backend.open_session("bench", max_seconds=frames * FRAME_S + 5)
    step_ms: list[float] = []
    overhead_ms: list[float] = []
    lags: list[float] = []
    out_frames = 0
    stop = asyncio.Event()
    probe = asyncio.create_task(loop_lag_probe(stop, lags))
    for _ in range(frames):
        frame = (0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32)
        started = time.perf_counter()
        out = await session.process(frame)
        wall = (time.perf_counter() - started) * 1000
        out_frames += len(out.frames)
        if out.step_ms is not None:
            step_ms.append(out.step_ms)
        overhead_ms.append(wall - (out.step_ms or 0.0))
        await asyncio.sleep(max(0.0, FRAME_S - wall / 1000))  # the phone's pace
    stop.set()
    await probe
    ended = session.ended
    await session.close()
    if ended:
        print(f"  note: session ended early: {ended}")
    return {"step_ms": step_ms, "overhead_ms": overhead_ms, "lag_ms": lags, "out_frames": out_frames}


def codec_rtf(backend: MoshiBackend, frames: int) -> tuple[float, float]:
    """Wall seconds per second of audio: (pipelined, one frame at a time)."""
    rng = np.random.default_rng(1)
    pcm = [(0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32) for _ in range(frames)]

    def wait(get: Any) -> Any:
        while (item := get()) is None:
            time.sleep(0.0005)
        return item

    tok = new_tokenizer(backend.model)
    started = time.perf_counter()
    decoded = sent = 0
    for frame in pcm:  # encoder and decoder overlap: codes go to the decoder as soon as they exist
        tok.encode(frame)
    while decoded < frames:
        codes = tok.get_encoded()
        if codes is not None:
            tok.decode(np.ascontiguousarray(codes[:8].T, dtype=np.uint32))
            sent += 1
        if tok.get_decoded() is not None:
            decoded += 1
        elif codes is None:
            time.sleep(0.0005)
    pipelined = (time.perf_counter() - started) / (frames * FRAME_S)

    tok = new_tokenizer(backend.model)
    started = time.perf_counter()
    for frame in pcm:
        tok.encode(frame)
        codes = wait(tok.get_encoded)
        tok.decode(np.ascontiguousarray(codes[:8].T, dtype=np.uint32))
        wait(tok.get_decoded)
    serial = (time.perf_counter() - started) / (frames * FRAME_S)
    return pipelined, serial


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A tiny run (CI): 30 frames.")
    parser.add_argument("--frames", type=int, default=None, help="Frames per session (default 250).")
    args = parser.parse_args()
    frames = args.frames or (30 if args.quick else 250)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        repo = write_tiny_repo(Path(tmp))
        print(f"tiny weights written in {time.perf_counter() - started:.2f} s")
        backend = MoshiBackend(MoshiConfig(hf_repo=repo.repo, quantize=None, cache_dir=repo.cache_dir))
        await backend.load()
        print(f"load (files + warm-up): {backend.load_seconds:.2f} s")

        run = await session_run(backend, frames)
        handoff = await bare_handoff(max(frames, 50))
        print(f"session: {frames} frames in, {run['out_frames']} frames out (pipelined codec lag)")
        print(f"model step ms: {pct(run['step_ms'], 50, 95, 99)}")  # type: ignore[arg-type]
        print(f"per-frame overhead outside model compute ms: {pct(run['overhead_ms'], 50, 99)}")  # type: ignore[arg-type]
        print(f"baseline: bare executor round trip ms: {pct(handoff, 50, 99)}")
        overhead_p50 = float(np.percentile(run["overhead_ms"], 50))
        print(
            f"ratio overhead p50 / bare hand-off p50: {overhead_p50 / float(np.percentile(handoff, 50)):.1f}x"
        )
        print(f"event-loop lag while stepping ms: {pct(run['lag_ms'], 50, 99)}")  # type: ignore[arg-type]

        pipelined, serial = codec_rtf(backend, min(frames, 50))
        print(
            f"Mimi codec real-time factor: pipelined {pipelined:.2f}, one frame at a time {serial:.2f} "
            f"(speed-up {serial / pipelined:.2f}x; < 1 is faster than real time)"
        )
        await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
