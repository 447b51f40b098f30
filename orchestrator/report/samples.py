"""Synthetic call documents, shaped exactly like `orchestrator show CALL --json`, for the report.

They exercise every part of the report: a clean call, a call with echo and a manual verdict, a busy
call with no audio and a call whose create was refused. Tests render them, and a person changing the
report's look can preview it with `render_html(build_report(sample_docs(), "sample"))`.

Deterministic by construction: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from orchestrator.criteria import evaluate

_BASE = datetime(2025, 11, 15, 1, 0, 0, tzinfo=timezone.utc)
SAY_TEXT = "Connecting you to Moshi. Please wait."


def iso(seconds: float, base: datetime = _BASE) -> str:
    """ISO-8601 UTC with milliseconds, as the store writes it."""
    return (base + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _levels(segments: list[list[float]], duration_s: float, floor: float, phase: float) -> list[list[float]]:
    """A level track: speech near -24 dBFS inside the segments, the line's noise floor outside."""
    out = []
    for i in range(int(duration_s * 10) + 1):
        t = i / 10
        inside = any(start <= t < end for start, end in segments)
        level = -24 + 4 * math.sin(3.1 * t + phase) if inside else floor + 1.5 * math.sin(7.3 * t + phase)
        out.append([round(t, 2), round(level, 1)])
    return out


def _doc(
    call_id: str,
    *,
    start_s: float,
    final_state: str,
    run: str = "sample",
    backend: str = "moshi",
) -> dict[str, Any]:
    def at(offset: float) -> str:
        return iso(start_s + offset)

    return {
        "call": {
            "id": call_id,
            "call_sid": "CA" + call_id.rjust(32, "0"),
            "direction": "outbound",
            "to": "+15005550010",
            "from": "+15005550006",
            "state": final_state,
            "run": run,
            "created_at": at(0),
            "ended_at": None,
            "end_reason": None,
            "backend": backend,
            "say_text": SAY_TEXT,
            "recording_path": None,
        },
        "transitions": [],
        "events": [
            {
                "source": "rest",
                "type": "queued",
                "at": at(0.21),
                "accepted": True,
                "reason": None,
                "payload": {},
            }
        ],
        "metrics": {},
        "checks": [],
        "facts": {
            "server_listening": "127.0.0.1:8080",
            "public_url": None,
            "tunnel_health": None,
            "offline": True,
            "backend": backend,
        },
    }


MEDIA_OFFSET_S = 0.012  # local time of media time 0: the line's transit
LOST_MEDIA_MS = (2040.0, 6500.0)  # the lossy sample call loses one 20 ms frame at each
PIECES = ("<s>", "▁Hello", ",", "▁how", "▁are", "▁you", "?", "</s>")


def _stream(outbound: list[list[float]], talk_s: float, *, lossy: bool) -> dict[str, Any]:
    """Media-stream events in time as the analysis stores them: marks, one clear, gaps, an underrun."""
    marks = []
    for s, e in outbound:
        marks += [[round(s - 0.05, 3), round(s + 0.02, 3), 0], [round(e - 0.05, 3), round(e + 0.02, 3), 0]]
    clears: list[float] = []
    if lossy:  # a barge-in: the last reply's end mark is flushed by a clear
        t = round(outbound[-1][1] - 0.3, 3)
        marks[-1] = [marks[-1][0], t, 1]
        clears.append(t)
    lost = LOST_MEDIA_MS if lossy else ()
    return {
        "media_offset_s": MEDIA_OFFSET_S,
        "inbound_frames": int(talk_s * 50) - len(lost),
        "gaps": [[round(ms / 1000 + MEDIA_OFFSET_S, 3), ms, 20.0] for ms in lost],
        "jitter": [[i / 2, round(3.2 + math.sin(i) * 1.2, 2)] for i in range(int(talk_s * 2))],
        "marks": marks,
        "clears": clears,
        "underruns": [[round(outbound[1][0] + 0.5, 3), 40.0]] if lossy else [],
    }


def _transcript(outbound: list[list[float]]) -> list[dict[str, Any]]:
    """The model's text pieces as the store keeps them (sentencepiece, specials included), per reply."""
    return [
        {"at_ms": round((s + 0.04 * k) * 1000, 1), "text": piece}
        for s, _ in outbound
        for k, piece in enumerate(PIECES)
    ]


def _answered_call(
    call_id: str, *, start_s: float, echo: bool, latencies_ms: list[float], talk_s: float = 12.0
) -> dict[str, Any]:
    doc = _doc(call_id, start_s=start_s, final_state="completed")
    answer, stream = 3.0, 3.0 + 2.45
    inbound, outbound, turns = [], [], []
    t = 1.0
    outbound.append([0.35, 0.95 + 0.3])  # Moshi greets first
    for latency in latencies_ms:
        end = t + 1.6
        inbound.append([t, end])
        onset = end + latency / 1000
        outbound.append([onset, onset + 1.4])
        turns.append([round(end, 3), round(onset, 3), latency])
        t = onset + 2.2
    end_s = stream + max(talk_s, t + 0.5)
    doc["call"].update({"ended_at": iso(start_s + end_s), "end_reason": "caller hung up"})
    doc["transitions"] = [
        {"from": None, "to": "queued", "trigger": "queued", "at": iso(start_s + 0.21)},
        {"from": "queued", "to": "ringing", "trigger": "ringing", "at": iso(start_s + 0.9)},
        {"from": "ringing", "to": "in-progress", "trigger": "answered", "at": iso(start_s + answer)},
        {"from": "in-progress", "to": "streaming", "trigger": "stream_started", "at": iso(start_s + stream)},
        {"from": "streaming", "to": "completed", "trigger": "completed", "at": iso(start_s + end_s)},
    ]
    ev = doc["events"]
    for source, type_, offset in [
        ("status_callback", "initiated", 0.4),
        ("status_callback", "ringing", 0.9),
        ("status_callback", "in-progress", answer),
        ("media", "start", stream),
        ("stream_status", "stream-started", stream + 0.03),
        ("status_callback", "in-progress", answer + 0.5),
        ("media", "stop", end_s - 0.05),
        ("stream_status", "stream-stopped", end_s - 0.02),
        ("status_callback", "completed", end_s),
    ]:
        dup = offset == answer + 0.5
        payload: dict[str, Any] = {"CallStatus": type_} if source == "status_callback" else {}
        if type_ == "completed":  # Twilio reports the SIP code and the seconds on terminal events only
            payload.update(SipResponseCode="200", CallDuration=str(math.ceil(end_s - answer)))
        ev.append(
            {
                "source": source,
                "type": type_,
                "at": iso(start_s + offset),
                "accepted": not dup,
                "reason": "duplicate" if dup else None,
                "payload": payload,
            }
        )
    ev.sort(key=lambda e: e["at"])
    lat = sorted(latencies_ms)
    in_floor, out_floor = -62.0, -70.0
    inbound_levels = _levels(inbound, end_s - stream, in_floor, 0.0)
    if echo:
        delay = 0.21  # the far end plays our audio back 210 ms later, 18 dB down
        for point in inbound_levels:
            if any(s + delay <= point[0] < e + delay for s, e in outbound) and point[1] < -40:
                point[1] = round(-42 + 2 * math.sin(5 * point[0]), 1)
    doc["analysis"] = {
        "inbound_segments": inbound,
        "outbound_segments": outbound,
        "turns": turns,
        "echo": {
            "detected": echo,
            "delay_ms": 210.0 if echo else None,
            "erl_db": 18.0 if echo else None,
            "peak": 0.71 if echo else 0.03,
        },
        "levels": {"inbound": inbound_levels, "outbound": _levels(outbound, end_s - stream, out_floor, 1.0)},
        "stream": _stream(outbound, end_s - stream, lossy=echo),
    }
    doc["transcript"] = _transcript(outbound)
    doc["metrics"] = {
        "model_load_s": 7.6,
        "stream_connect_ms": round((stream - answer) * 1000),
        "first_audio_ms": 318.0,
        "first_audio_heard_ms": 362.0 + (40 if echo else 0),
        "response_latency_ms_p50": lat[len(lat) // 2],
        "response_latency_ms_max": lat[-1],
        "turns": len(turns),
        "echo_detected": 1 if echo else 0,
        "echo_delay_ms": 210.0 if echo else None,
        "echo_return_loss_db": 18.0 if echo else None,
        "step_ms_p50": 41.0,
        "step_ms_p95": 58.5,
        "step_ms_p99": 71.2,
        "late_frames": 0,
        "inbound_gap_ms_total": 40.0 if echo else 0.0,
        "inbound_jitter_ms": 3.2,
        "inbound_jitter_ms_max": 4.4,
        "inbound_media_offset_ms": MEDIA_OFFSET_S * 1000,
        "outbound_underruns": 1 if echo else 0,
        "inbound_rms_dbfs": -31.5,
        "outbound_rms_dbfs": -28.9,
        "inbound_clip_ratio": 0.0,
        "outbound_clip_ratio": 0.0004,
        "inbound_silence_ratio": 0.61,
        "outbound_silence_ratio": 0.55,
        "inbound_speech_s": round(sum(e - s for s, e in inbound), 2),
        "outbound_speech_s": round(sum(e - s for s, e in outbound), 2),
        "frames_to_model": int((end_s - stream) / 0.08),
        "marks_played": 2 * len(outbound),
        "lost_frames": 2 if echo else 0,
        "call_duration_s": round(end_s - answer, 2),
    }
    return doc


def sample_docs() -> list[dict[str, Any]]:
    """Four calls of one run: clean, echo (with a manual verdict), busy, create refused."""
    clean = _answered_call("c1", start_s=0, echo=False, latencies_ms=[420.0, 510.0, 380.0])
    echoed = _answered_call("c2", start_s=60, echo=True, latencies_ms=[640.0, 1310.0, 2150.0])
    for doc in (clean, echoed):  # these two carry the verdicts recorded when they ended
        doc["checks"] = [
            {
                "criterion": v.criterion,
                "status": v.status,
                "evidence": v.evidence,
                "decided_by": "auto",
                "at": doc["call"]["ended_at"],
            }
            for v in evaluate(doc)
        ]
    echoed["checks"] += [
        {
            "criterion": "audio_quality_ok",
            "status": "fail",
            "evidence": "manual: hiss on the line from the second turn",
            "decided_by": "manual",
            "at": iso(120),
        }
    ]
    busy = _doc("c3", start_s=120, final_state="busy")
    busy["call"].update({"ended_at": iso(128.0), "end_reason": "busy"})
    busy["transitions"] = [
        {"from": None, "to": "queued", "trigger": "queued", "at": iso(120.2)},
        {"from": "queued", "to": "ringing", "trigger": "ringing", "at": iso(121.0)},
        {"from": "ringing", "to": "busy", "trigger": "busy", "at": iso(128.0)},
    ]
    busy["events"] += [
        {
            "source": "status_callback",
            "type": "ringing",
            "at": iso(121.0),
            "accepted": True,
            "reason": None,
            "payload": {"CallStatus": "ringing"},
        },
        {
            "source": "status_callback",
            "type": "busy",
            "at": iso(128.0),
            "accepted": True,
            "reason": None,
            "payload": {"CallStatus": "busy", "SipResponseCode": "486", "CallDuration": "0"},
        },
    ]
    busy["metrics"] = {"model_load_s": 7.6}
    refused = _doc("c4", start_s=180, final_state="failed")
    refused["call"].update({"call_sid": None, "ended_at": iso(180.3), "end_reason": "create refused"})
    refused["events"] = [
        {
            "source": "rest",
            "type": "create_failed",
            "at": iso(180.3),
            "accepted": True,
            "reason": None,
            "payload": {"code": 21211, "message": "Invalid 'To' Phone Number"},
        }
    ]
    refused["transitions"] = [{"from": "queued", "to": "failed", "trigger": "failed", "at": iso(180.3)}]
    refused["metrics"] = {"model_load_s": 7.6}
    return [clean, echoed, busy, refused]
