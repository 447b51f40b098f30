"""`orchestrator models bench`: will this machine keep up with a call? Measured, not guessed.

Theory of operation. The bench loads the model exactly as a call's server does (`MoshiBackend.load`:
cache only, warm-up included), opens one real session and feeds it speech-like audio at the phone's
pace, one 80 ms frame (1920 float32 samples at 24 kHz) every 80 ms, through `MoshiSession.process`:
the same encode, LM step and decode a call runs, on the same worker thread. From what each step
reports it keeps the LM step time (`StepOutput.step_ms`, split evenly when one hand-off ran several
model steps) and the whole hand-off's wall time. Then, on the same worker, a fresh Mimi tokenizer
encodes the audio and decodes the codes one frame at a time, each waited for, which gives each
direction's real-time factor (compute seconds per second of audio; below 1 is faster than real time).

The verdict, the documented rule (`judge`): the machine keeps up when
- at most LATE_SHARE_LIMIT (1 %) of the LM steps took longer than BUDGET_MS (80 ms), i.e. p99 is within
  the budget,
- neither Mimi direction is slower than real time (real-time factor below 1),
- no codec direction dropped a frame (it fell `codec_max_pending` frames behind) during the session,
- and the session was not ended early (a dead codec thread, a worker timeout) and ran model steps.

Percentiles are nearest-rank (the smallest sample with at least p % of the samples at or below it), so
every figure is a step that really happened. The last result is stored as JSON (`bench_file()`), and
`bench_record.last_bench_line()` gives `orchestrator doctor` one line from it without importing this
module (mlx, the model).
Nothing here downloads: files come from the local cache or the paths given, as in `serve`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE, BackendError
from bridge.backends.bench_record import bench_file, share_text
from bridge.backends.moshi import STEPS_PER_SECOND, MoshiBackend, codec_stages
from bridge.backends.moshi_loader import LoadedModel, MoshiConfig, new_tokenizer

__all__ = [
    "BUDGET_MS",
    "LATE_SHARE_LIMIT",
    "BenchResult",
    "Percentiles",
    "bench",
    "judge",
    "percentiles",
    "render",
    "save",
    "speech_like",
]

BUDGET_MS = 1000.0 / STEPS_PER_SECOND  # 80 ms: one frame of audio per model step
LATE_SHARE_LIMIT = 0.01
CODEC_MAX_FRAMES = 125  # 10 s of audio is plenty for a real-time factor; a slow codec must not take minutes
CODEC_SKIP_FRAMES = 2  # a fresh tokenizer allocates on its first frames: not what a call pays per frame


# --- Figures (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of a list of milliseconds (all 0 when there are none)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


def percentiles(samples: Sequence[float]) -> Percentiles:
    if not samples:
        return Percentiles(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1]

    return Percentiles(len(ordered), rank(50), rank(95), rank(99), ordered[-1], sum(ordered) / len(ordered))


def speech_like(seconds: float, seed: int = 0) -> Iterator[NDArray[np.float32]]:
    """Deterministic speech-shaped audio in 80 ms frames: voiced talk spurts with pauses between.

    Talk is a harmonic series on a gliding pitch (85-215 Hz), amplitude-modulated at a syllable rate
    (4 Hz) with a little breath noise; pauses are near silence. Peaks stay under 0.5. Made frame by
    frame (the pitch's phase in closed form), so a long bench holds no audio in memory.
    """
    rng = np.random.default_rng(seed)
    frames = max(1, round(seconds * STEPS_PER_SECOND))
    n = frames * FRAME_SAMPLES
    edges = [0]  # talk from edges[0] to edges[1], pause to edges[2], talk again...
    while edges[-1] < n:  # spurts of 1.2-3 s, pauses of 0.3-1 s
        edges += [edges[-1] + int(rng.uniform(1.2, 3.0) * SAMPLE_RATE)]
        edges += [edges[-1] + int(rng.uniform(0.3, 1.0) * SAMPLE_RATE)]
    bounds = np.asarray(edges)
    offset = rng.uniform(0, np.pi)
    for i in range(frames):
        index = np.arange(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)
        t = index / SAMPLE_RATE
        # phase = 2 pi * integral of f0(t) = 150 + 50 sin(2 pi 0.35 t) + 15 sin(2 pi 2.1 t)
        cycles = 150 * t - 50 / (2 * np.pi * 0.35) * np.cos(2 * np.pi * 0.35 * t)
        cycles -= 15 / (2 * np.pi * 2.1) * np.cos(2 * np.pi * 2.1 * t)
        phase = 2 * np.pi * cycles
        voiced = sum(np.sin(k * phase) / k for k in range(1, 16))
        syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t + offset))
        speech = 0.2 * voiced * syllables + 0.01 * rng.standard_normal(FRAME_SAMPLES)
        talking = np.searchsorted(bounds, index, side="right") % 2 == 1
        pause = 0.002 * rng.standard_normal(FRAME_SAMPLES)
        yield np.where(talking, speech, pause).astype(np.float32)


def quantize_label(quantize: int | None) -> str:
    return "bf16" if quantize is None else f"q{quantize}"


def _advice(quantize: int | None, explicit_weights: bool) -> str:
    if quantize == 4:
        return "close other apps, or run Moshi on a faster machine (4-bit is the lightest model)"
    if quantize == 8:
        return f"use {'4-bit weights' if explicit_weights else '--quantize 4'} or close other apps"
    return f"use {'8- or 4-bit weights' if explicit_weights else '--quantize 8 (or 4)'}, or close other apps"


def judge(
    *,
    label: str,
    lm: Percentiles,
    late_share: float,
    encode_rtf: float,
    decode_rtf: float,
    dropped: Mapping[str, int],
    ended: str | None,
    advice: str,
) -> tuple[bool, str, list[str]]:
    """(keeps up, verdict line, every problem found) by the rule in the module docstring."""
    problems = []
    if ended is not None:
        problems.append(f"the session ended early ({ended}): {advice}")
    if lm.count == 0:
        problems.append("no model step ran: the Mimi encoder returned no codes")
    elif late_share > LATE_SHARE_LIMIT:
        problems.append(
            f"{label} misses the {BUDGET_MS:.0f} ms budget on {share_text(late_share)} of steps: {advice}"
        )
    if max(encode_rtf, decode_rtf) >= 1.0:
        problems.append(
            f"Mimi is slower than real time (encode {encode_rtf:.2f}x, decode {decode_rtf:.2f}x): close other "
            "apps (Mimi's cost does not change with the quantization)"
        )
    if any(dropped.values()):
        counts = ", ".join(f"{name} {n}" for name, n in dropped.items() if n)
        problems.append(
            f"Mimi fell behind during the session and dropped frames ({counts}): close other apps"
        )
    if problems:
        return False, problems[0], problems
    return True, f"{label} keeps up with {BUDGET_MS - lm.p95:.0f} ms to spare at p95", []


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One bench run; `as_dict()` is what `--json` prints and what is stored."""

    at: str  # UTC, ISO 8601
    repo: str
    quantize: str  # of the loaded weights: q4, q8 or bf16
    weights: str
    load_s: float
    machine: dict[str, Any]
    seconds: float
    frames: int
    wall_s: float
    budget_ms: float
    lm_step_ms: Percentiles
    late_steps: int
    late_share: float
    frame_ms: Percentiles  # each whole hand-off to the worker: model, codec polling, queueing
    encode_rtf: float
    decode_rtf: float
    encode_ms: Percentiles
    decode_ms: Percentiles
    codec_dropped: dict[str, int]
    ended: str | None
    text_pieces: int
    audio_frames_out: int
    peak_rss_bytes: int | None
    mlx_peak_bytes: int | None
    keeps_up: bool
    verdict: str
    problems: list[str]
    lm_step_samples_ms: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}


# --- Measuring (loads the model: blocking parts run on the backend's worker) ---------------------


def _codec_ms(
    model: LoadedModel, config: MoshiConfig, frames: list[NDArray[np.float32]]
) -> tuple[list[float], list[float]]:
    """Per frame, the time one Mimi encode and one decode take when each is waited for (worker thread)."""
    encoder, decoder = codec_stages(new_tokenizer(model), config)
    deadline_s = max(config.tokenizer_stalled_after_s, 10.0)

    def timed(stage: Any, item: NDArray[Any]) -> tuple[float, NDArray[Any]]:
        started = time.perf_counter()
        stage.submit(item)
        while True:
            for out in stage.drain():
                return (time.perf_counter() - started) * 1000.0, out
            if time.perf_counter() - started > deadline_s:
                raise BackendError(f"the Mimi {stage.name} answered nothing within {deadline_s:.0f} s")
            time.sleep(0.0002)

    encode_ms, decode_ms = [], []
    for pcm in frames:
        ms, codes = timed(encoder, pcm)
        encode_ms.append(ms)
        ms, _ = timed(decoder, np.asarray(codes, dtype=np.uint32).reshape(1, -1))
        decode_ms.append(ms)
    return encode_ms[CODEC_SKIP_FRAMES:], decode_ms[CODEC_SKIP_FRAMES:]


def _peak_rss() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _mlx_peak() -> tuple[int | None, str]:
    import mlx.core as mx

    peak = getattr(mx, "get_peak_memory", None) or getattr(mx.metal, "get_peak_memory", None)
    device = mx.default_device()
    return (int(peak()) if peak is not None else None), str(getattr(device.type, "name", device))


@dataclass(slots=True)
class SessionRun:
    """What one paced session produced (filled on the event loop, step by step)."""

    lm_ms: list[float]
    frame_ms: list[float]
    wall_s: float = 0.0
    dropped: dict[str, int] | None = None
    ended: str | None = None
    text_pieces: int = 0
    audio_frames_out: int = 0


async def _paced_session(backend: MoshiBackend, seconds: float, seed: int) -> SessionRun:
    """One real session fed a frame every 80 ms, as the phone does; the schedule never waits for a step."""
    session = await backend.open_session("bench", max_seconds=seconds + 5.0)  # clear of the budget's end
    run = SessionRun([], [])
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for i, frame in enumerate(speech_like(seconds, seed)):
            await asyncio.sleep(max(0.0, start + i * BUDGET_MS / 1000.0 - loop.time()))
            before, began = session.steps, time.perf_counter()
            out = await session.process(frame)
            run.frame_ms.append((time.perf_counter() - began) * 1000.0)
            stepped = session.steps - before
            if out.step_ms is not None and stepped > 0:  # step_ms sums the model steps of this hand-off
                run.lm_ms += [out.step_ms / stepped] * stepped
            run.text_pieces += len(out.text)
            run.audio_frames_out += len(out.frames)
            if session.ended is not None:
                break
        run.wall_s = loop.time() - start
        run.dropped, run.ended = session.frames_dropped, session.ended
    finally:
        await session.close()
    if session.retirement is not None:  # its last queued frames would take the CPU from the codec timing
        await asyncio.to_thread(session.retirement.join, backend.config.tokenizer_stalled_after_s)
    return run


async def run_bench(config: MoshiConfig, seconds: float, seed: int = 0) -> BenchResult:
    """Load, run `seconds` of speech-like audio through one real session at the phone's pace, measure."""
    backend = MoshiBackend(config)
    try:
        await backend.load()
        model = backend.model
        run = await _paced_session(backend, seconds, seed)
        codec_frames = list(
            itertools.islice(speech_like(seconds, seed), CODEC_MAX_FRAMES + CODEC_SKIP_FRAMES)
        )
        encode_ms, decode_ms = await asyncio.wrap_future(
            backend.worker.submit(_codec_ms, model, config, codec_frames)
        )
        mlx_peak, device = await asyncio.wrap_future(backend.worker.submit(_mlx_peak))
    finally:
        await backend.aclose()
    label = quantize_label(model.quantize)
    lm_ms = [round(ms, 3) for ms in run.lm_ms]  # the stored samples: every figure is computed from them
    lm = percentiles(lm_ms)
    late = sum(1 for ms in lm_ms if ms > BUDGET_MS)
    late_share = late / len(lm_ms) if lm_ms else 0.0
    encode_rtf = _rtf(encode_ms)
    decode_rtf = _rtf(decode_ms)
    dropped = dict(run.dropped or {})
    keeps_up, verdict, problems = judge(
        label=label,
        lm=lm,
        late_share=late_share,
        encode_rtf=encode_rtf,
        decode_rtf=decode_rtf,
        dropped=dropped,
        ended=run.ended,
        advice=_advice(model.quantize, config.moshi_weight is not None),
    )
    return BenchResult(
        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        repo=config.hf_repo if config.moshi_weight is None else "(explicit files)",
        quantize=label,
        weights=str(model.files.moshi_weight),
        load_s=round(backend.load_seconds or 0.0, 3),
        machine={
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "mlx_device": device,
        },
        seconds=seconds,
        frames=len(run.frame_ms),
        wall_s=round(run.wall_s, 3),
        budget_ms=BUDGET_MS,
        lm_step_ms=lm,
        late_steps=late,
        late_share=late_share,
        frame_ms=percentiles(run.frame_ms),
        encode_rtf=encode_rtf,
        decode_rtf=decode_rtf,
        encode_ms=percentiles(encode_ms),
        decode_ms=percentiles(decode_ms),
        codec_dropped=dropped,
        ended=run.ended,
        text_pieces=run.text_pieces,
        audio_frames_out=run.audio_frames_out,
        peak_rss_bytes=_peak_rss(),
        mlx_peak_bytes=mlx_peak,
        keeps_up=keeps_up,
        verdict=verdict,
        problems=problems,
        lm_step_samples_ms=lm_ms,
    )


def _rtf(frame_ms: list[float]) -> float:
    """Compute seconds per second of audio: the mean time per frame over the frame's 80 ms."""
    return sum(frame_ms) / (len(frame_ms) * BUDGET_MS) if frame_ms else 0.0


def bench(config: MoshiConfig, seconds: float, seed: int = 0) -> BenchResult:
    """`run_bench` from synchronous code (the command line). Takes `seconds` plus the load."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return asyncio.run(run_bench(config, seconds, seed))


# --- Showing and storing ------------------------------------------------------------------------------


def _ms(p: Percentiles) -> str:
    return f"p50 {p.p50:.1f} ms, p95 {p.p95:.1f} ms, p99 {p.p99:.1f} ms"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.0f} MB"


def render(result: BenchResult) -> list[str]:
    """The bench as a person reads it: one figure a line, the verdict last."""
    r = result
    memory = f"RSS {_mb(r.peak_rss_bytes)}"
    if r.mlx_peak_bytes:
        memory += f", mlx {_mb(r.mlx_peak_bytes)} ({r.machine.get('mlx_device', '?')})"
    lines = [
        f"Moshi bench: {r.repo} ({r.quantize}), {r.seconds:g} s of speech-like audio at the phone's pace "
        f"({r.frames} frames of {r.budget_ms:.0f} ms); loaded in {r.load_s:.1f} s",
        f"  LM step      {_ms(r.lm_step_ms)} (budget {r.budget_ms:.0f} ms; {r.lm_step_ms.count} steps)",
        f"  late steps   {r.late_steps} of {r.lm_step_ms.count} ({share_text(r.late_share)}) over {r.budget_ms:.0f} ms",
        f"  whole frame  {_ms(r.frame_ms)} (hand-off, model step, codec polling)",
        f"  Mimi encode  {r.encode_rtf:.2f}x real time (p50 {r.encode_ms.p50:.1f} ms per {r.budget_ms:.0f} ms frame)",
        f"  Mimi decode  {r.decode_rtf:.2f}x real time (p50 {r.decode_ms.p50:.1f} ms per {r.budget_ms:.0f} ms frame)",
        f"  peak memory  {memory}",
        f"  verdict      {r.verdict}",
    ]
    lines += [f"  also         {p}" for p in r.problems[1:]]
    return lines


def save(result: BenchResult, path: Path | None = None) -> Path:
    """Write the result as JSON (replacing the last one whole: a reader never sees half a file)."""
    path = path or bench_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=1))
    os.replace(tmp, path)
    return path
