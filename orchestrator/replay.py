"""`orchestrator replay`: a recorded call's caller fed again, on its recorded timing, to a backend.

The question it answers: what would another model (or quantization, or canceller setting) have done
with this exact caller? The original call's media trace (bridge.trace, kept with MEDIA_TRACE=on) holds
every inbound frame as it arrived; the local rig (the real server and the carrier emulator, as in
`orchestrator demo`) places a new call whose far end sends those frames again at their recorded times
(orchestrator.emulator.replay), into the same database, and the new call is measured and judged like
any other. The two are linked by events: `replay_of` on the new call, `replayed_as` on the original.

What is the same by construction: every inbound payload, timestamp and the order and timing of their
arrival (to the event loop's scheduling, well under a millisecond here), so the inbound figures
(caller speech, levels, gaps, out-of-order frames) come out the same. What is new: everything the
backend does, and what the phone hears of it. The backend's settings default to the original's (its
`media_config` event); the emulator adds no echo or noise of its own, since the recording holds the line.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.trace import MediaTrace, TraceError, read_trace, trace_path
from orchestrator.errors import OrchestratorError
from orchestrator.service import CallService

__all__ = ["COMPARED", "ReplayInput", "compare_lines", "load_replay", "run_replay"]

# the figures set side by side: (metric, label), inbound first (they should agree), then the backend's
COMPARED = (
    ("frames_to_model", "frames to the model"),
    ("inbound_speech_s", "caller speech (s)"),
    ("inbound_rms_dbfs", "caller level (dBFS)"),
    ("inbound_gap_ms_total", "lost audio (ms)"),
    ("lost_frames", "lost frames"),
    ("inbound_jitter_ms", "inbound jitter (ms)"),
    ("outbound_speech_s", "model speech (s)"),
    ("first_audio_heard_ms", "first audio heard (ms)"),
    ("response_latency_ms_p50", "response latency p50 (ms)"),
    ("turns", "turns"),
    ("echo_detected", "echo detected"),
)


@dataclass(frozen=True)
class ReplayInput:
    doc: dict[str, Any]  # the original call's document (`orchestrator show --json`)
    trace: MediaTrace
    config: dict[str, Any]  # the original's media_config event payload ({} when it has none)


def load_replay(service: CallService, ref: str) -> ReplayInput:
    """The original call and its trace; OrchestratorError (one line, what to do) when it cannot be replayed."""
    doc = service.document(ref)
    call = doc["call"]
    recording = call.get("recording_path")
    if not recording:
        raise OrchestratorError(
            f"call {call['id']} has no recording, so no media trace to replay (it never streamed, or "
            "RECORDINGS_DIR was off)"
        )
    try:
        trace = read_trace(trace_path(Path(recording)))
    except TraceError as exc:
        raise OrchestratorError(
            f"call {call['id']}: {exc}; only calls served with MEDIA_TRACE=on can be replayed "
            "(the emulator rig of demo and scenario turns it on)"
        ) from None
    if not trace.inbound_arrivals.shape[0]:
        raise OrchestratorError(f"call {call['id']}: its trace holds no inbound frame: nothing to replay")
    configs = [e["payload"] for e in doc["events"] if e["type"] == "media_config"]
    return ReplayInput(doc, trace, configs[-1] if configs else {})


async def run_replay(
    db: Path,
    original: ReplayInput,
    *,
    backend: str | None = None,
    aec: str | None = None,
    run: str | None = None,
    workdir: Path | None = None,
    backend_instance: Any = None,
) -> dict[str, Any]:
    """Replay `original` into `backend` (default: the original's) through the local rig on `db`; the new
    call's document once it is settled and linked."""
    from orchestrator.emulator import CallOptions
    from orchestrator.emulator.replay import ReplayCaller
    from orchestrator.rig import LocalRig, rig_settings
    from orchestrator.settings import Settings

    config, call = original.config, original.doc["call"]
    name = backend or config.get("backend") or call.get("backend") or "echo"
    base = Settings.from_env()
    same = name == config.get("backend")
    # the original's echo settings when it ran the same backend; otherwise this environment's
    echo = (
        {k: config.get(k) for k in ("echo_mode", "echo_delay_ms", "echo_greeting")}
        if same and name == "echo"
        else {}
    )
    workdir = workdir or Path(tempfile.mkdtemp(prefix="orchestrator-replay-"))
    caller = ReplayCaller.of(original.trace.frames(), original.trace.ended_s)
    settings = rig_settings(
        workdir,
        db=db,
        backend=name,
        greeting=call.get("say_text") or "",
        max_call_seconds=max(60.0, caller.end_s + 30.0),
        aec=aec or (config.get("aec") if same else None) or base.aec,
        moshi_hf_repo=base.moshi_hf_repo,
        moshi_quantize=base.moshi_quantize,
        moshi_server_urls=base.moshi_server_urls,
        **{k: v for k, v in echo.items() if v is not None},
    )
    async with LocalRig(settings, workdir / "ground_truth", backend=backend_instance) as rig:
        row = await rig.place(CallOptions(ring_s=0.2, replay=caller), run=run, say=call.get("say_text") or "")
        await rig.emulator.wait_call(row["call_sid"], timeout=caller.end_s + 60.0)
        service = rig.service
        service.record(
            source="local",
            type="replay_of",
            call_id=row["id"],
            payload={"call_id": call["id"], "backend": call.get("backend"), "frames": len(caller.frames)},
        )
        service.record(
            source="local",
            type="replayed_as",
            call_id=call["id"],
            payload={"call_id": row["id"], "backend": name},
        )
        return await rig.settled(row["id"], timeout_s=60.0)


def compare_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The original and the replay side by side: the figures of COMPARED, then the criteria."""
    a, b = before["metrics"], after["metrics"]
    width = max(len(label) for _, label in COMPARED)
    head = f"{'':<{width}}  {'original':>12}  {'replay':>12}"
    lines = [
        f"original {before['call']['id']} ({before['call'].get('backend')}) -> replay {after['call']['id']} "
        f"({after['call'].get('backend')})",
        head,
    ]
    for key, label in COMPARED:
        if key in a or key in b:
            lines.append(f"{label:<{width}}  {_fmt(a.get(key)):>12}  {_fmt(b.get(key)):>12}")
    checks_a = {c["criterion"]: c["status"] for c in before["checks"] if c["decided_by"] == "auto"}
    checks_b = {c["criterion"]: c["status"] for c in after["checks"] if c["decided_by"] == "auto"}
    for name in sorted(set(checks_a) | set(checks_b)):
        lines.append(f"{name:<{width}}  {checks_a.get(name, '-'):>12}  {checks_b.get(name, '-'):>12}")
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10 and value != int(value):
        return f"{value:.1f}"
    return f"{value:.0f}" if isinstance(value, float) else str(value)
