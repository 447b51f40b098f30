"""`orchestrator models bench --url`: does a remote Moshi server answer every 80 ms frame in time?

Theory of operation. The bench opens one session exactly as a call does (`MoshiServerBackend`: connect,
wait for the handshake, both bounded) and feeds it the local bench's speech-like audio at the phone's
pace, one 80 ms frame every 80 ms, through `MoshiServerSession.process`. It then waits a little
(at most DRAIN_S, less once QUIET_S passed with nothing new) for the answers still in flight and reads what the session measured (see
moshi_server_session.py for each definition): the handshake time, first audio after the handshake,
the send->receive lag of each frame (the round trip, paired in order by `LagMeter`), the Opus encode
and decode time, and the frames dropped. The server's own step times are not in the protocol, so
they are not here.

The verdict, the documented rule (`judge`): the server keeps up when
- the session stayed up (no close, error or stall: `ended` is None) and sent audio back;
- no frame was dropped either way (our send queue or our receive buffer overflowing);
- its lag did not grow: the median lag of the last quarter of the paired frames is at most one frame
  (GROWTH_LIMIT_MS, 80 ms) above the median of the first quarter. A server slower than real time
  falls further behind with every frame (its unanswered frames pile up); one that keeps up has a
  constant lag, whatever its fixed pipeline delay;
- its lag is steady enough for the phone: p99 minus p50 at most JITTER_LIMIT_MS (60 ms, the jitter
  buffer the bridge holds for a model's audio); a later frame would leave the caller a gap.

Failing to connect or to get a handshake is no verdict but `BackendError` (the command exits 3).
A remote result is NOT stored for `orchestrator doctor`: bench_record's file and line describe a
local model (its LM step times, Mimi real-time factors, repo), which a remote server does not give.

Imports neither mlx nor the model; needs sphn (Opus) and websockets.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from bridge.backends.base import BackendError
from bridge.backends.moshi_bench import BUDGET_MS, Percentiles, percentiles, speech_like
from bridge.backends.moshi_pool import ServerSpec, parse_server_urls
from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig

__all__ = [
    "DRAIN_S",
    "GROWTH_LIMIT_MS",
    "JITTER_LIMIT_MS",
    "RemoteBenchResult",
    "bench_url",
    "judge",
    "parse_url",
    "render",
]

GROWTH_LIMIT_MS = BUDGET_MS  # one frame
JITTER_LIMIT_MS = 60.0  # the jitter buffer the bridge holds for moshi and moshi-server audio
DRAIN_S = 2.0  # after the last frame, how long the answers still in flight may take
QUIET_S = 0.5  # ... and the drain ends sooner once none came for this long


def parse_url(text: str) -> ServerSpec:
    """One ws:// or wss:// URL (no path: /api/chat). Raises ValueError with one line naming the problem."""
    try:
        specs = parse_server_urls(text)
    except ValueError as err:
        raise ValueError(str(err).replace("MOSHI_SERVER_URLS entry", "--url")) from None
    if len(specs) != 1:
        raise ValueError(f"--url takes one server, got {len(specs)}; bench them one at a time")
    return specs[0]


def lag_growth_ms(lags_ms: Sequence[float]) -> float:
    """Median lag of the last quarter of the frames minus that of the first quarter (0 below 8 frames)."""
    quarter = len(lags_ms) // 4
    if quarter < 2:
        return 0.0
    return statistics.median(lags_ms[-quarter:]) - statistics.median(lags_ms[:quarter])


def judge(
    *, lag: Percentiles, growth_ms: float, frames_received: int, dropped: int, ended: str | None
) -> tuple[bool, str, list[str]]:
    """(keeps up, verdict line, every problem found) by the rule in the module docstring."""
    problems = []
    if ended is not None:
        problems.append(f"the session ended early: {ended}")
    if frames_received == 0:
        problems.append("the server sent no audio back")
    if dropped:
        problems.append(f"{dropped} frames were dropped (a queue between us and the server overflowed)")
    if growth_ms > GROWTH_LIMIT_MS:
        problems.append(
            f"the server falls behind: its round trip grew by {growth_ms:.0f} ms during the run "
            f"(more than one {BUDGET_MS:.0f} ms frame), it is slower than real time"
        )
    if lag.count and lag.p99 - lag.p50 > JITTER_LIMIT_MS:
        problems.append(
            f"answers come unevenly: p99 {lag.p99:.0f} ms is {lag.p99 - lag.p50:.0f} ms over p50, more than "
            f"the {JITTER_LIMIT_MS:.0f} ms jitter buffer"
        )
    if problems:
        return False, problems[0], problems
    return True, f"the server keeps up: every frame answered, round trip p99 {lag.p99:.0f} ms, steady", []


@dataclass(frozen=True, slots=True)
class RemoteBenchResult:
    """One remote bench; `as_dict()` is what `--json` prints (never stored)."""

    at: str  # UTC, ISO 8601
    url: str  # without credentials or query
    protocol_version: int | None
    model_version: int | None
    seconds: float
    frames_sent: int
    frames_received: int
    wall_s: float
    handshake_ms: float
    first_audio_ms: float | None  # after the handshake (the session's definition)
    lag_ms: Percentiles  # send->receive round trip per 80 ms frame
    lag_growth_ms: float
    lag_unpaired_frames: int
    lag_outstanding_frames: int
    encode_ms: Percentiles  # Opus, per frame sent
    decode_ms: Percentiles  # Opus, per message received
    opus_ms_per_frame: float  # mean encode + all decoding / frames received
    process_ms: Percentiles  # time inside process() per frame: the bridge's own overhead
    frames_dropped_send: int
    frames_dropped_receive: int
    text_pieces: int
    ended: str | None
    keeps_up: bool
    verdict: str
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"version": 1, "kind": "remote", **asdict(self)}


async def run_bench_url(
    spec: ServerSpec, seconds: float, seed: int = 0, config: MoshiServerConfig | None = None
) -> RemoteBenchResult:
    """One paced session against the server; raises BackendError when it cannot be opened."""
    cfg = config or MoshiServerConfig(servers=(spec,))
    backend = MoshiServerBackend(cfg)
    await backend.load()
    try:
        session = await backend.open_session("bench", max_seconds=seconds + 5.0)  # clear of the budget's end
    except BackendError as err:  # the pool's answer names a call and lists servers: one server, one reason
        raise BackendError(backend.pool.states[0].last_error or str(err)) from None
    process_ms: list[float] = []
    text_pieces = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for i, frame in enumerate(speech_like(seconds, seed)):
            await asyncio.sleep(max(0.0, start + i * BUDGET_MS / 1000.0 - loop.time()))
            began = time.perf_counter()
            out = await session.process(frame)
            process_ms.append((time.perf_counter() - began) * 1000.0)
            text_pieces += len(out.text)
            if session.ended is not None:
                break
        wall_s = loop.time() - start
        # The answers still on their way: wait until none came for QUIET_S, or DRAIN_S. A Moshi
        # server never answers its last few frames (the model's delay), so `outstanding` stays above 0.
        received, quiet_since = session.frames_received, loop.time()
        for _ in range(round(DRAIN_S / 0.02)):
            if session.ended is not None or loop.time() - quiet_since > QUIET_S:
                break
            await asyncio.sleep(0.02)
            if session.frames_received != received:
                received, quiet_since = session.frames_received, loop.time()
        stats = session.stats()
        lags = [s * 1000.0 for s in session.lag.lags_s]
        encode, decode = list(session.encode_ms), list(session.decode_ms)
    finally:
        await backend.aclose()
    lag = percentiles(lags)
    growth = lag_growth_ms(lags)
    received = int(stats["frames_received"])
    dropped = int(stats["frames_dropped_send"]) + int(stats["frames_dropped_receive"])
    keeps_up, verdict, problems = judge(
        lag=lag, growth_ms=growth, frames_received=received, dropped=dropped, ended=stats["ended"]
    )
    opus = (sum(encode) / len(encode) if encode else 0.0) + (sum(decode) / received if received else 0.0)
    return RemoteBenchResult(
        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        url=spec.display,
        protocol_version=stats["protocol_version"],
        model_version=stats["model_version"],
        seconds=seconds,
        frames_sent=int(stats["frames_sent"]),
        frames_received=received,
        wall_s=round(wall_s, 3),
        handshake_ms=float(stats["handshake_ms"]),
        first_audio_ms=stats["first_audio_ms"],
        lag_ms=lag,
        lag_growth_ms=round(growth, 3),
        lag_unpaired_frames=int(stats["lag_unpaired_frames"]),
        lag_outstanding_frames=int(stats["lag_outstanding_frames"]),
        encode_ms=percentiles(encode),
        decode_ms=percentiles(decode),
        opus_ms_per_frame=opus,
        process_ms=percentiles(process_ms),
        frames_dropped_send=int(stats["frames_dropped_send"]),
        frames_dropped_receive=int(stats["frames_dropped_receive"]),
        text_pieces=text_pieces,
        ended=stats["ended"],
        keeps_up=keeps_up,
        verdict=verdict,
        problems=problems,
    )


def bench_url(spec: ServerSpec, seconds: float, seed: int = 0) -> RemoteBenchResult:
    """`run_bench_url` from synchronous code (the command line). Takes `seconds` plus up to DRAIN_S."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return asyncio.run(run_bench_url(spec, seconds, seed))


def _ms(p: Percentiles) -> str:
    return f"p50 {p.p50:.1f} ms, p95 {p.p95:.1f} ms, p99 {p.p99:.1f} ms"


def render(result: RemoteBenchResult) -> list[str]:
    """The remote bench as a person reads it: one figure a line, the verdict last."""
    r = result
    first = "-" if r.first_audio_ms is None else f"{r.first_audio_ms:.0f} ms after the handshake"
    lines = [
        f"Moshi server bench: {r.url}, {r.seconds:g} s of speech-like audio at the phone's pace "
        f"({r.frames_sent} frames of {BUDGET_MS:.0f} ms sent, {r.frames_received} received)",
        f"  handshake    {r.handshake_ms:.0f} ms; first audio {first}",
        f"  round trip   {_ms(r.lag_ms)} per frame (grew {r.lag_growth_ms:+.0f} ms over the run; "
        f"{r.lag_outstanding_frames} unanswered at the end, {r.lag_unpaired_frames} unpaired)",
        f"  Opus         {r.opus_ms_per_frame:.2f} ms CPU per {BUDGET_MS:.0f} ms frame (encode p50 "
        f"{r.encode_ms.p50:.2f} ms, decode p50 {r.decode_ms.p50:.2f} ms)",
        f"  bridge       {_ms(r.process_ms)} inside process()",
        f"  dropped      {r.frames_dropped_send} sent, {r.frames_dropped_receive} received",
        f"  verdict      {r.verdict}",
    ]
    lines += [f"  also         {p}" for p in r.problems[1:]]
    return lines
