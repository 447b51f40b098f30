"""What the `moshi-server` path costs the bridge, beside the in-process `moshi` backend, same run.

One run, the same tiny generated weights (tests/moshi/conftest.py) for both: (a) the in-process
`moshi` backend (moshi_mlx + rustymimi in this process), and (b) the `moshi-server` backend against a
real `python -m moshi_mlx.local_web` that this script starts on 127.0.0.1 (its own process group,
killed at the end whatever happens; paused with SIGSTOP while (a) runs, so it takes no CPU from it).
Each backend gets one session fed the same speech-like audio at the phone's pace, one 80 ms frame
(1920 samples at 24 kHz) every 80 ms, as a call does. Definitions:

- Opus round trip CPU per 80 ms frame (b only; the in-process path has no Opus): the session's own
  meters, the wall time of each `OpusEncoder.encode` (one per frame sent) plus each
  `OpusDecoder.decode` (one per message received, summed and divided by the frames received); both
  run on the event loop, so that is CPU unless the box preempts us. Beside it, a second method: the
  same frames encoded and the pages decoded again offline, timed with the thread's CPU clock.
- Bridge overhead per frame, p50/p99: the wall time inside `process()`. For (a) minus the LM step
  (`StepOutput.step_ms`: model compute is not overhead; the Mimi codec hand-off and polling are),
  for (b) all of it (Opus encode, queueing, taking decoded frames; the model runs on the server).
  For (b) the decoding happens in the session's reader task, outside `process()`: it is in the Opus
  figure, not in this one.
- First audio: the tiny random model's output is noise, so "audio" is the first frame returned at all,
  not the first speech. t0 is the moment `process()` was called with the first frame; first audio
  is when the `process()` call that first returned a frame returned, for both backends. The added
  first-audio latency is (b) minus (a). `process()` of (b) never waits on the network, so a frame
  that arrives between two calls waits for the next one (up to 80 ms); to show how much of the
  difference that is, (b)'s arrival time (when the reader had the first whole frame decoded, the
  session's LagMeter's first pair) is printed too. When (a)'s Mimi codec dropped frames (it fell
  behind real time: a 2-core box does), its first audio is late for that reason, so the added
  latency is printed but judged "n/a": benchmarks/moshi_server_latency.py measures the path's added
  latency with a zero-compute model on both sides instead, which any box can.
- Round trip per frame for (b): the LagMeter's send->receive lag (the k-th frame back paired with the
  k-th sent; see bridge/backends/moshi_protocol.py for what that includes).

Targets (issue 16) are printed beside the figures with whether each is met; nothing here asserts a
speed (the machine is shared: see the header's load and calibration).

Usage: PYTHONPATH=. python benchmarks/moshi_server_overhead.py [--quick] [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import header, pct, proc_cpu_s
from bridge.backends.base import BackendSession
from bridge.backends.moshi import MoshiBackend
from bridge.backends.moshi_bench import speech_like
from bridge.backends.moshi_loader import MoshiConfig
from bridge.backends.moshi_pool import parse_server_urls
from bridge.backends.moshi_protocol import OpusDecoder, OpusEncoder
from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig, MoshiServerSession
from tests.moshi.conftest import write_tiny_repo
from tests.moshi.local_web_server import LocalWeb, launch_local_web, wait_listening

FRAME_S = 0.08
TARGET_ADDED_FIRST_AUDIO_MS = 30.0
TARGET_OPUS_CPU_MS = 2.0
TARGET_OVERHEAD_P99_MS = 5.0


@dataclass
class Run:
    """One paced session: per-frame figures in ms, first audio in ms after the first process() call."""

    overhead_ms: list[float] = field(default_factory=list)
    process_ms: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    frames_out: int = 0
    first_audio_ms: float | None = None
    first_audio_frame: int | None = None  # how many frames had been pushed when it came back
    cpu_s: float = 0.0  # this process's CPU (every thread) over the run
    server_cpu_ms: float = 0.0  # local_web's CPU (all its processes) per frame, for (b)
    wall_s: float = 0.0
    ended: str | None = None
    codec_dropped: int = 0  # (a): frames its Mimi codec dropped because it fell behind real time
    stats: dict[str, Any] = field(default_factory=dict)


async def paced(session: BackendSession, frames: list[np.ndarray], *, remote: bool) -> Run:
    """Feed `frames` at the phone's pace and measure; the caller closes the session."""
    run = Run()
    loop = asyncio.get_running_loop()
    start = loop.time()
    cpu0 = time.process_time()
    t0: float | None = None
    for i, frame in enumerate(frames):
        await asyncio.sleep(max(0.0, start + i * FRAME_S - loop.time()))
        began = time.perf_counter()
        t0 = began if t0 is None else t0
        out = await session.process(frame)
        wall = (time.perf_counter() - began) * 1000.0
        run.process_ms.append(wall)
        run.overhead_ms.append(wall if remote else wall - (out.step_ms or 0.0))
        if out.step_ms is not None:
            run.step_ms.append(out.step_ms)
        if out.frames and run.first_audio_ms is None:
            run.first_audio_ms = (time.perf_counter() - t0) * 1000.0
            run.first_audio_frame = i + 1
        run.frames_out += len(out.frames)
        if session.ended is not None:
            break
    run.cpu_s = time.process_time() - cpu0
    run.wall_s = loop.time() - start
    run.ended = session.ended
    run.codec_dropped = sum(getattr(session, "frames_dropped", {}).values())
    if isinstance(session, MoshiServerSession):
        run.stats = session.stats()
        run.stats["arrival_ms"] = session.lag.lags_s[0] * 1000.0 if session.lag.lags_s else None
        run.stats["encode_all_ms"] = list(session.encode_ms)
        run.stats["decode_all_ms"] = list(session.decode_ms)
    return run


def group_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its children (local_web's model and web processes)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    total = 0.0
    for p in pids:
        try:
            total += proc_cpu_s(p)
        except OSError:
            pass
    return total


def offline_opus_cpu(frames: list[np.ndarray]) -> tuple[float, float]:
    """(encode, decode) CPU ms per 80 ms frame by the thread's CPU clock: the second method."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    started = time.thread_time()
    pages = [encoder.encode(f) for f in frames]
    encode_s = time.thread_time() - started
    started = time.thread_time()
    samples = sum(decoder.decode(p).shape[0] for p in pages if p)
    decode_s = time.thread_time() - started
    decoded_frames = max(1, samples // 1920)
    return encode_s * 1000 / len(frames), decode_s * 1000 / decoded_frames


def verdict(value: float | None, target: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return "met" if value <= target else "NOT met"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def report(inproc: Run, remote: Run, offline: tuple[float, float], url: str) -> Iterator[str]:
    s = remote.stats
    yield f"(a) in-process moshi: {len(inproc.process_ms)} frames in, {inproc.frames_out} out"
    yield f"    model step ms: {pct_line(inproc.step_ms)}"
    yield f"    process() wall ms: {pct_line(inproc.process_ms)}"
    yield f"    bridge overhead (process() minus the LM step) ms: {pct_line(inproc.overhead_ms)}"
    yield f"    first audio: {ms(inproc.first_audio_ms)} (returned after {inproc.first_audio_frame} frames pushed)"
    yield f"    this process's CPU per 80 ms frame (model included): {cpu_per_frame(inproc):.2f} ms"
    if inproc.codec_dropped:
        yield (
            f"    note: its Mimi fell behind real time and dropped {inproc.codec_dropped} frames: its first "
            "audio is late for that, not for the path"
        )
    yield ""
    yield f"(b) moshi-server against local_web {url}: {len(remote.process_ms)} frames in, {remote.frames_out} out"
    yield f"    handshake: {ms(s.get('handshake_ms'))}; frames dropped: send {s.get('frames_dropped_send')}, receive {s.get('frames_dropped_receive')}"
    yield f"    round trip per frame (send->receive lag) ms: p50 {fmt(s.get('lag_ms_p50'))} p95 {fmt(s.get('lag_ms_p95'))} p99 {fmt(s.get('lag_ms_p99'))} ({s.get('lag_frames')} paired, {s.get('lag_unpaired_frames')} unpaired, {s.get('lag_outstanding_frames')} outstanding)"
    yield f"    process() wall = bridge overhead ms: {pct_line(remote.process_ms)}"
    encode, decode = s["encode_all_ms"], s["decode_all_ms"]
    enc_per = float(np.mean(encode)) if encode else float("nan")
    dec_per = sum(decode) / max(1, s["frames_received"]) if decode else float("nan")
    yield f"    Opus encode ms per frame: mean {enc_per:.3f}, {pct_line(encode)}"
    yield f"    Opus decode ms per frame received: {dec_per:.3f} ({len(decode)} messages for {s['frames_received']} frames)"
    yield f"    Opus round trip (second method, thread CPU, offline): encode {offline[0]:.3f} + decode {offline[1]:.3f} = {sum(offline):.3f} ms per frame"
    yield f"    first audio: {ms(remote.first_audio_ms)} returned (after {remote.first_audio_frame} frames pushed); first whole frame decoded at {ms(s.get('arrival_ms'))}"
    yield f"    this process's CPU per 80 ms frame (no model here): {cpu_per_frame(remote):.2f} ms"
    for name, run in (("(a)", inproc), ("(b)", remote)):
        if run.ended:
            yield f"    note: {name} ended early: {run.ended}"
    yield ""
    added = None
    if inproc.first_audio_ms is not None and remote.first_audio_ms is not None:
        added = remote.first_audio_ms - inproc.first_audio_ms
    opus = enc_per + dec_per
    p99 = float(np.percentile(remote.overhead_ms, 99)) if remote.overhead_ms else None
    busy = f"local_web used {remote.server_cpu_ms:.0f} ms CPU per frame on the same cores: not a quiet box"
    yield f"issue 16 targets (remote path; {busy}):"
    first_verdict = verdict(added, TARGET_ADDED_FIRST_AUDIO_MS)
    if inproc.codec_dropped:
        first_verdict = "n/a: (a) did not keep up with real time on this machine, so it is no baseline"
    yield f"    added first-audio latency      {ms(added):>9}  target <= {TARGET_ADDED_FIRST_AUDIO_MS:.0f} ms: {first_verdict}"
    if added is not None and s.get("arrival_ms") is not None and inproc.first_audio_ms is not None:
        by_arrival = s["arrival_ms"] - inproc.first_audio_ms
        yield (
            f"      (by arrival on the socket instead: {by_arrival:.1f} ms; the rest waited for the next "
            "process() call)"
        )
    yield (
        f"    Opus round trip, in session {opus:>7.2f} ms  target <= {TARGET_OPUS_CPU_MS:.0f} ms per 80 ms "
        f"frame: {verdict(opus, TARGET_OPUS_CPU_MS)}"
    )
    yield (
        f"    Opus round trip, quiet      {sum(offline):>7.2f} ms  (offline, thread CPU): "
        f"{verdict(sum(offline), TARGET_OPUS_CPU_MS)}"
    )
    yield (
        f"    bridge overhead p99            {ms(p99):>9}  target <= {TARGET_OVERHEAD_P99_MS:.0f} ms per frame "
        f"(quiet box): {verdict(p99, TARGET_OVERHEAD_P99_MS)}"
    )


def pct_line(values: list[float]) -> str:
    return f"p50 {pct(values, 50, 1):.2f} p99 {pct(values, 99, 1):.2f}" if values else "n/a"


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def cpu_per_frame(run: Run) -> float:
    return run.cpu_s * 1000 / max(1, len(run.process_ms))


async def measure(frames: list[np.ndarray], workdir: Path) -> None:
    started = time.perf_counter()
    repo = write_tiny_repo(workdir / "hf")
    print(f"tiny weights written in {time.perf_counter() - started:.1f} s")
    server: LocalWeb = launch_local_web(repo, workdir / "local-web")
    backend = MoshiBackend(MoshiConfig(hf_repo=repo.repo, quantize=None, cache_dir=repo.cache_dir))
    try:
        started = time.perf_counter()
        await asyncio.gather(backend.load(), asyncio.to_thread(wait_listening, server))
        print(f"in-process model loaded and local_web listening in {time.perf_counter() - started:.1f} s\n")
        server.signal_group(signal.SIGSTOP)  # a quiet box for (a): local_web polls its queues every 1 ms
        try:
            session_a = await backend.open_session("bench-a", 60 + len(frames) * FRAME_S)
            inproc = await paced(session_a, frames, remote=False)
            await backend.aclose()  # closes the session; no spare tokenizer is built for a next call
            if session_a.retirement is not None:  # its last queued frames would take CPU from (b)
                await asyncio.to_thread(session_a.retirement.join, 10.0)
        finally:
            server.signal_group(signal.SIGCONT)
        remote_backend = MoshiServerBackend(MoshiServerConfig(servers=parse_server_urls(server.url)))
        await remote_backend.load()
        session_b = await remote_backend.open_session("bench-b", 60 + len(frames) * FRAME_S)
        server_cpu = group_cpu_s(server.proc.pid)
        try:
            remote = await paced(session_b, frames, remote=True)
        finally:
            await session_b.close()
        remote.server_cpu_ms = (
            (group_cpu_s(server.proc.pid) - server_cpu) * 1000 / max(1, len(remote.process_ms))
        )
    finally:
        await backend.aclose()
        server.kill()
    for line in report(inproc, remote, offline_opus_cpu(frames), server.url):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A tiny run (CI): 40 frames per backend.")
    parser.add_argument("--frames", type=int, default=None, help="Frames per session (default 250, 20 s).")
    args = parser.parse_args()
    frames = list(speech_like((args.frames or (40 if args.quick else 250)) * FRAME_S, seed=0))
    header("moshi-server backend overhead beside the in-process moshi backend", args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(frames, Path(tmp)))


if __name__ == "__main__":
    main()
