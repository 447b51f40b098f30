"""Turning stored evidence into metrics and verdicts, when a call ends and again on request.

`finalize_media` runs once per media session: analysis of the audio evidence (in a worker thread: it is
numpy work of up to a second or two for a long call), metrics, analysis summary and transcript saved.
`evaluate_call` derives the call-level metrics from the event log (stream connect, duration, model
load) and decides every criterion; it is idempotent (automatic checks are replaced, manual ones kept),
so it runs both when the media ends and when the terminal callback arrives, in whichever order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from orchestrator import criteria
from orchestrator.children import child_init
from orchestrator.service import CallService
from orchestrator.store import parse_iso
from orchestrator.thresholds import Thresholds

if TYPE_CHECKING:
    from bridge.session import MediaSession
    from orchestrator.web.state import AppState

log = logging.getLogger(__name__)

UNITS = {
    "model_load_s": "s",
    "stream_connect_ms": "ms",
    "first_audio_ms": "ms",
    "first_audio_heard_ms": "ms",
    "response_latency_ms_p50": "ms",
    "response_latency_ms_max": "ms",
    "turns": "count",
    "echo_detected": "bool",
    "echo_delay_ms": "ms",
    "echo_return_loss_db": "dB",
    "residual_echo_detected": "bool",
    "residual_echo_return_loss_db": "dB",
    "aec_erle_db": "dB",
    "aec_single_talk_s": "s",
    "step_ms_p50": "ms",
    "step_ms_p95": "ms",
    "step_ms_p99": "ms",
    "late_frames": "count",
    "inbound_gap_ms_total": "ms",
    "inbound_jitter_ms": "ms",
    "outbound_underruns": "count",
    "inbound_rms_dbfs": "dBFS",
    "outbound_rms_dbfs": "dBFS",
    "inbound_clip_ratio": "ratio",
    "outbound_clip_ratio": "ratio",
    "inbound_silence_ratio": "ratio",
    "outbound_silence_ratio": "ratio",
    "call_duration_s": "s",
    "barge_in_stop_ms": "ms",
    "barge_ins": "count",
    "barge_in_unstopped": "count",
    "overlap_ms": "ms",
    "interruptions_by_caller": "count",
    "interruptions_by_model": "count",
}


def _unit(name: str) -> str:
    """The unit of a metric UNITS does not name (a backend's own): ms by its name, else a count."""
    return "ms" if name.endswith("_ms") or "_ms_p" in name else "count"


def call_level_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """Metrics read off the event log and transitions (no audio needed)."""
    out: dict[str, float] = {}
    answered_at = None
    for t in doc["transitions"]:
        if t["to"] in ("in-progress", "streaming") and answered_at is None:
            answered_at = parse_iso(t["at"])
    start = next(
        (e for e in doc["events"] if e["source"] == "media" and e["type"] == "start" and e["accepted"]), None
    )
    if answered_at is not None and start is not None:
        out["stream_connect_ms"] = max(0.0, (parse_iso(start["at"]) - answered_at).total_seconds() * 1000)
    ended = doc["call"].get("ended_at")
    if answered_at is not None and ended:
        out["call_duration_s"] = max(0.0, (parse_iso(ended) - answered_at).total_seconds())
    load = doc.get("facts", {}).get("model_load_s")
    if load is not None:
        out["model_load_s"] = float(load)
    return out


def thresholds() -> Thresholds:
    """The CHECK_* thresholds from the environment, parsed once per distinct setting."""
    return _thresholds(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("CHECK_"))))


@functools.lru_cache(maxsize=4)
def _thresholds(items: tuple[tuple[str, str], ...]) -> Thresholds:
    return Thresholds.from_env(dict(items))


def evaluate_call(service: CallService, ref: str) -> list[criteria.Verdict]:
    """Derive the call-level metrics, decide every criterion, replace the automatic checks."""
    doc = service.document(ref)
    call_id = doc["call"]["id"]
    derived = call_level_metrics(doc)
    doc["metrics"] = {**doc["metrics"], **derived}
    verdicts = criteria.evaluate(doc, thresholds())
    service.save_evaluation(call_id, metrics=derived, units=UNITS, verdicts=verdicts)
    return verdicts


async def evaluate_call_async(state: AppState, call_id: str) -> None:
    await state.service.run(lambda s: evaluate_call(s, call_id), background=True)


def _levels_track(pcm: Any, offset_s: float, rate: int = 8000, win_s: float = 0.1) -> list[list[float]]:
    import numpy as np

    n = int(rate * win_s)
    frames = len(pcm) // n
    if frames == 0:
        return []
    x = pcm[: frames * n].astype(np.float64).reshape(frames, n) / 32768.0
    db = 10 * np.log10(np.maximum((x * x).mean(axis=1), 1e-10))
    return [[round(offset_s + i * win_s, 2), round(float(v), 1)] for i, v in enumerate(db)]


def analysis_summary(result: Any, evidence: Any) -> dict[str, Any]:
    """The compact per-call analysis the reports plot (segments, turns, echo, level tracks)."""
    from bridge.meters.timing import media_clock_offset_s
    from bridge.played import played_track
    from orchestrator.media_timeline import stream_marks

    arrivals = evidence.inbound_arrivals
    offset = float(media_clock_offset_s(arrivals[:, 0], arrivals[:, 1])) if len(arrivals) else 0.0
    echo = result.echo
    return {
        "inbound_segments": [[round(s.start_s, 3), round(s.end_s, 3)] for s in result.inbound_segments],
        "outbound_segments": [[round(s.start_s, 3), round(s.end_s, 3)] for s in result.outbound_segments],
        "turns": [
            [round(t.caller_end_s, 3), round(t.model_onset_s, 3), round(t.latency_ms, 1)]
            for t in result.turns
        ],
        "echo": {
            "detected": bool(echo.detected),
            "delay_ms": echo.delay_ms,
            "erl_db": echo.erl_db,
            "peak": echo.peak,
        },
        "levels": {
            "inbound": _levels_track(evidence.inbound_pcm, offset),
            "outbound": _levels_track(played_track(evidence.sent_pcm, evidence.sends), 0.0),
        },
        "stream": stream_marks(evidence),  # gaps, jitter, marks, clears, underruns in time (the call page)
    }


def analyse_call(evidence: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The end-of-call analysis: metrics and the report's summary. Runs in the analysis process."""
    from bridge.analysis import analyse

    result = analyse(evidence)
    return dict(result.metrics), analysis_summary(result, evidence)


def _import_analysis() -> bool:
    import bridge.analysis  # noqa: F401

    return True


class AnalysisPool:
    """A worker process for end-of-call analysis.

    Analysis is a second or two of numpy and Python per call. In a thread of the server it holds the
    GIL against the calls still streaming: at 50 concurrent calls on 2 cores, bridge-added latency p99
    went from ~5 ms (analysis off) to ~35-40 ms. In its own process, at lower priority, it cannot.
    Started on first use ('spawn': no fork of a threaded server); if it dies, analysis falls back to a
    thread rather than being lost. It exits when the server does, however the server ends.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, evidence: Any) -> tuple[dict[str, float], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._ensure(), analyse_call, evidence)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            log.warning("analysis process unavailable (%s); analysing in a thread", exc)
            self._pool = None
            return await asyncio.to_thread(analyse_call, evidence)

    async def warm(self) -> None:
        """Start the process and its imports now, so the first call's end does not wait for them."""
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(self._ensure(), _import_analysis)

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # the worker dies with the server even on kill -9 (see orchestrator.children), and runs at
            # lower priority: live calls first, analysis is never in a hurry
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=child_init,
                initargs=(os.getpid(), 10),
            )
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None


async def finalize_media(
    state: AppState, call_id: str, session: MediaSession, transcript: list[tuple[float, str]]
) -> None:
    evidence = session.evidence()
    metrics, summary = await state.analysis.run(evidence)
    try:  # what a remote model server's session saw (handshake, round trip): beside our own figures
        metrics.update(session.backend.evidence())
    except Exception:
        log.exception("call %s: the backend's evidence could not be read", call_id)
    prom = state.prom
    if metrics.get("first_audio_heard_ms") is not None:
        prom.first_audio.observe(metrics["first_audio_heard_ms"])
    for turn in summary.get("turns", []):
        prom.response_latency.observe(turn[2])
    for step in evidence.step_ms:
        prom.step_ms.observe(step)

    units = {**{k: _unit(k) for k in metrics}, **UNITS}

    def save(service: CallService) -> None:
        service.save_media_results(
            call_id, metrics=metrics, units=units, summary=summary, transcript=transcript
        )
        evaluate_call(service, call_id)

    await state.service.run(save, background=True)
    log.info(
        "call %s: media analysed (%s)",
        call_id,
        ", ".join(f"{k}={v:.0f}" for k, v in metrics.items() if k in ("first_audio_heard_ms", "turns")),
    )
