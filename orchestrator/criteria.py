"""Success criteria: the seed report's checklist, decided from a call's recorded evidence.

Each criterion of DESIGN.md is one pure function `(doc, thresholds) -> Verdict`, where `doc` is the
call document `orchestrator show CALL --json` prints. A verdict is `pass`, `fail` or `unknown` with one
line of evidence that cites the numbers ("first audio heard 2410 ms > 2000 ms threshold").

Rules of judgement:
- `unknown` only where the evidence cannot exist: no tunnel on an offline run, no model to load for the
  echo or playback backend, nothing downstream of an answer on a call that was never answered (or no
  audio to measure on a call whose stream never started). Missing evidence that *should* exist is a
  `fail` that says what is missing.
- Every function reads the document only; it never raises on a partial one (older calls, calls that
  ended early): absent keys are simply absent evidence.

This module must never do I/O, read a clock or the process environment; the bounds it judges against
are `orchestrator.thresholds.Thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orchestrator.thresholds import Thresholds

Status = Literal["pass", "fail", "unknown"]
Doc = Mapping[str, Any]

# The carrier emulator speaks <Say> text at this rate, and real TTS voices are close to it (150 wpm).
SAY_SECONDS_PER_WORD = 0.4

CRITERIA: tuple[str, ...] = (
    "model_loads_quickly",
    "server_listening",
    "tunnel_exposed",
    "call_initiated",
    "answered_ivr_heard",
    "websocket_connected",
    "caller_hears_model",
    "model_hears_caller",
    "conversation_interactive",
    "audio_quality_ok",
    "no_latency_echo_issues",
)

ANSWERED_STATES = frozenset({"in-progress", "streaming"})
NEVER_ANSWERED_STATES = frozenset({"busy", "no-answer", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class Verdict:
    criterion: str
    status: Status
    evidence: str


# --- reading the evidence ---------------------------------------------------------------------------


def _num(doc: Doc, name: str) -> float | None:
    value = (doc.get("metrics") or {}).get(name)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:.{digits}f}"


def _facts(doc: Doc) -> Mapping[str, Any]:
    return doc.get("facts") or {}


def _events(doc: Doc, source: str, type_: str | None = None) -> list[Mapping[str, Any]]:
    return [
        e for e in doc.get("events") or [] if e.get("source") == source and type_ in (None, e.get("type"))
    ]


def _backend(doc: Doc) -> str | None:
    backend = _facts(doc).get("backend") or (doc.get("call") or {}).get("backend")
    return str(backend) if backend else None


def _answered(doc: Doc) -> bool:
    if any(t.get("to") in ANSWERED_STATES for t in doc.get("transitions") or []):
        return True
    return (doc.get("call") or {}).get("state") in ANSWERED_STATES


def _stream_started(doc: Doc) -> bool:
    if any(e.get("accepted", True) for e in _events(doc, "media", "start")):
        return True
    return any(t.get("to") == "streaming" for t in doc.get("transitions") or [])


def _never_answered(doc: Doc) -> str:
    state = (doc.get("call") or {}).get("state") or "unknown"
    return f"call never answered (ended {state})"


def _segments_s(doc: Doc, key: str) -> float | None:
    segments = (doc.get("analysis") or {}).get(key)
    if segments is None:
        return None
    return float(sum(max(0.0, float(end) - float(start)) for start, end in segments))


# --- the criteria -----------------------------------------------------------------------------------


def model_loads_quickly(doc: Doc, th: Thresholds) -> Verdict:
    name, backend = "model_loads_quickly", _backend(doc)
    if backend in ("echo", "playback"):
        return Verdict(name, "unknown", f"{backend} backend has no model to load")
    load_s = _num(doc, "model_load_s")
    if load_s is None:
        return Verdict(name, "fail", f"no model_load_s recorded for the {backend or 'unnamed'} backend")
    ok = load_s <= th.model_load_s_max
    rel = "<=" if ok else ">"
    return Verdict(
        name, "pass" if ok else "fail", f"model loaded in {load_s:.1f} s {rel} {th.model_load_s_max:g} s"
    )


def server_listening(doc: Doc, th: Thresholds) -> Verdict:
    name, bound = "server_listening", _facts(doc).get("server_listening")
    if bound:
        return Verdict(name, "pass", f"server listening on {bound}")
    if _stream_started(doc):
        return Verdict(name, "pass", "media stream reached the server (bound address not recorded)")
    return Verdict(name, "fail", "no bound address recorded and no stream reached the server")


def tunnel_exposed(doc: Doc, th: Thresholds) -> Verdict:
    name, facts = "tunnel_exposed", _facts(doc)
    if facts.get("offline"):
        return Verdict(name, "unknown", "offline run (carrier emulator): no tunnel in the path")
    url, health = facts.get("public_url"), facts.get("tunnel_health")
    if not url:
        return Verdict(name, "fail", "no PUBLIC_URL configured: Twilio cannot reach the server")
    if health is True:
        return Verdict(name, "pass", f"{url}/healthz answered through the tunnel")
    if health is False:
        return Verdict(name, "fail", f"{url}/healthz did not answer through the tunnel")
    if _stream_started(doc):
        return Verdict(name, "pass", f"Twilio reached /media through {url}")
    return Verdict(name, "fail", f"{url} configured but its health was never checked through the tunnel")


def call_initiated(doc: Doc, th: Thresholds) -> Verdict:
    name, call = "call_initiated", doc.get("call") or {}
    if call.get("direction") == "inbound":
        return Verdict(name, "unknown", "inbound call: placed by the caller, not created by us")
    for event in _events(doc, "rest", "create_failed"):
        payload = event.get("payload") or {}
        code, message = payload.get("code"), payload.get("message") or "no message"
        return Verdict(name, "fail", f"create refused (code {code}): {message}")
    sid = call.get("call_sid")
    if _events(doc, "rest", "queued") and sid:
        return Verdict(name, "pass", f"create accepted: CallSid {sid}")
    if sid:
        return Verdict(name, "pass", f"CallSid {sid} assigned (no REST response recorded)")
    return Verdict(name, "fail", "no CallSid: the create request was never accepted")


def answered_ivr_heard(doc: Doc, th: Thresholds) -> Verdict:
    name = "answered_ivr_heard"
    if not _answered(doc):
        return Verdict(name, "fail", _never_answered(doc))
    words = len(str((doc.get("call") or {}).get("say_text") or "").split())
    if words == 0:
        return Verdict(name, "pass", "answered; no <Say> in the TwiML, so no IVR to hear")
    estimate_ms = words * SAY_SECONDS_PER_WORD * 1000
    need_ms = estimate_ms * th.ivr_min_fraction
    connect_ms = _num(doc, "stream_connect_ms")
    if connect_ms is None:
        connect_ms = _connect_ms_from_transitions(doc)
    if connect_ms is None:
        return Verdict(name, "fail", "answered but the stream never started: <Say> completion not confirmed")
    need = f"{need_ms:.0f} ms ({th.ivr_min_fraction * 100:g} % of the {estimate_ms:.0f} ms <Say> estimate, {words} words)"
    if connect_ms >= need_ms:
        return Verdict(name, "pass", f"answered; stream started {connect_ms:.0f} ms after answer >= {need}")
    return Verdict(
        name, "fail", f"stream started {connect_ms:.0f} ms after answer < {need}: IVR cut short or skipped"
    )


def _connect_ms_from_transitions(doc: Doc) -> float | None:
    """Answer -> stream start from the transitions, when the metric was not recorded."""
    answered = streaming = None
    for t in doc.get("transitions") or []:
        at = _parse_at(t.get("at"))
        if t.get("to") == "in-progress" and answered is None:
            answered = at
        elif t.get("to") == "streaming" and streaming is None:
            streaming = at
    if answered is None or streaming is None or streaming < answered:
        return None  # a stream that beat the answered callback says nothing about the <Say>
    return (streaming - answered).total_seconds() * 1000


def _parse_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def websocket_connected(doc: Doc, th: Thresholds) -> Verdict:
    name = "websocket_connected"
    rejected = _events(doc, "media", "start_rejected")
    if any(e.get("accepted", True) for e in _events(doc, "media", "start")):
        return Verdict(name, "pass", "media `start` received with valid token and signature")
    if rejected:
        reason = rejected[0].get("reason") or (rejected[0].get("payload") or {}).get("reason") or "no reason"
        return Verdict(name, "fail", f"media `start` rejected ({len(rejected)}x): {reason}")
    if not _answered(doc):
        return Verdict(name, "unknown", f"{_never_answered(doc)}: no stream to connect")
    if _stream_started(doc):
        return Verdict(name, "pass", "stream reached `streaming` (start event not in the log)")
    return Verdict(name, "fail", "answered but no media `start` was ever received")


def _no_stream(doc: Doc, name: str, fail_text: str) -> Verdict | None:
    """The verdict for a criterion that needs a media stream, when there was none."""
    if not _answered(doc):
        return Verdict(name, "unknown", f"{_never_answered(doc)}: nothing to judge")
    if not _stream_started(doc):
        return Verdict(name, "fail", fail_text)
    return None


def caller_hears_model(doc: Doc, th: Thresholds) -> Verdict:
    name = "caller_hears_model"
    if early := _no_stream(doc, name, "answered but no media stream: the model was never connected"):
        return early
    speech_s = _num(doc, "outbound_speech_s")
    if speech_s is None:
        speech_s = _segments_s(doc, "outbound_segments")
    heard_ms, marks = _num(doc, "first_audio_heard_ms"), _num(doc, "marks_played") or 0
    if not speech_s:
        return Verdict(name, "fail", "no model speech was sent outbound")
    if heard_ms is None or marks <= 0:
        return Verdict(name, "fail", f"{speech_s:.1f} s of model speech sent but no mark came back as played")
    return Verdict(
        name,
        "pass",
        f"{speech_s:.1f} s of model speech sent, first heard {heard_ms:.0f} ms after start, "
        f"{marks:.0f} marks played",
    )


def model_hears_caller(doc: Doc, th: Thresholds) -> Verdict:
    name = "model_hears_caller"
    if early := _no_stream(doc, name, "answered but no media stream: the caller's audio never arrived"):
        return early
    speech_s = _num(doc, "inbound_speech_s")
    if speech_s is None:
        speech_s = _segments_s(doc, "inbound_segments")
    frames = _num(doc, "frames_to_model") or 0
    if not speech_s:
        return Verdict(name, "fail", "no caller speech detected inbound")
    if frames <= 0:
        return Verdict(
            name, "fail", f"{speech_s:.1f} s of caller speech detected but no frame fed to the model"
        )
    return Verdict(
        name, "pass", f"{speech_s:.1f} s of caller speech detected, {frames:.0f} frames fed to the model"
    )


def conversation_interactive(doc: Doc, th: Thresholds) -> Verdict:
    name = "conversation_interactive"
    if early := _no_stream(doc, name, "answered but no media stream: no conversation"):
        return early
    analysis_turns = (doc.get("analysis") or {}).get("turns")
    turns = _num(doc, "turns")
    if turns is None:
        turns = float(len(analysis_turns)) if analysis_turns is not None else 0.0
    p50 = _num(doc, "response_latency_ms_p50")
    if turns < th.min_turns:
        return Verdict(
            name, "fail", f"{turns:.0f} turns < {th.min_turns} required (caller speech, then model reply)"
        )
    if p50 is None:
        return Verdict(name, "fail", f"{turns:.0f} turns but no response latency measured")
    limit = th.response_latency_ms_max
    ok = p50 <= limit
    return Verdict(
        name,
        "pass" if ok else "fail",
        f"{turns:.0f} turns, response latency p50 {p50:.0f} ms {'<=' if ok else '>'} {limit:.0f} ms",
    )


def audio_quality_ok(doc: Doc, th: Thresholds) -> Verdict:
    name = "audio_quality_ok"
    if not _answered(doc) or not _stream_started(doc):
        why = _never_answered(doc) if not _answered(doc) else "no media stream"
        return Verdict(name, "unknown", f"{why}: no audio to judge")
    bad: list[str] = []
    good: list[str] = []
    missing: list[str] = []
    checks: list[tuple[str, str, float, bool, Callable[[float], str]]] = [
        ("inbound_clip_ratio", "inbound clipping", th.clip_ratio_max, True, lambda v: f"{v * 100:.2f} %"),
        ("outbound_clip_ratio", "outbound clipping", th.clip_ratio_max, True, lambda v: f"{v * 100:.2f} %"),
        ("inbound_gap_ms_total", "inbound gaps", th.gap_ms_max, True, lambda v: f"{v:.0f} ms"),
        ("inbound_jitter_ms", "jitter", th.jitter_ms_max, True, lambda v: f"{v:.1f} ms"),
        ("outbound_underruns", "underruns", th.underruns_max, True, lambda v: f"{v:.0f}"),
        ("inbound_rms_dbfs", "inbound level", th.level_dbfs_min, False, lambda v: f"{v:.1f} dBFS"),
        ("outbound_rms_dbfs", "outbound level", th.level_dbfs_min, False, lambda v: f"{v:.1f} dBFS"),
    ]
    for metric, label, limit, is_max, show in checks:
        value = _num(doc, metric)
        if value is None:
            missing.append(metric)
            continue
        ok = value <= limit if is_max else value >= limit
        rel = ("<=" if ok else ">") if is_max else (">=" if ok else "<")
        (good if ok else bad).append(f"{label} {show(value)} {rel} {show(limit)}")
    if not good and not bad:
        return Verdict(name, "fail", "stream ran but no audio quality metric was recorded")
    tail = f" (not recorded: {', '.join(missing)})" if missing else ""
    if bad:
        return Verdict(name, "fail", "; ".join(bad) + tail)
    return Verdict(name, "pass", ", ".join(good) + tail)


def no_latency_echo_issues(doc: Doc, th: Thresholds) -> Verdict:
    name = "no_latency_echo_issues"
    if not _answered(doc) or not _stream_started(doc):
        why = _never_answered(doc) if not _answered(doc) else "no media stream"
        return Verdict(name, "unknown", f"{why}: no latency or echo to measure")
    bad: list[str] = []
    good: list[str] = []
    heard = _num(doc, "first_audio_heard_ms")
    if heard is None:
        bad.append("first audio never heard")
    else:
        ok = heard <= th.first_audio_heard_ms_max
        path = _num(doc, "backend_path_added_ms")  # a remote model: its path's share, estimated
        share = f" (~{path:.0f} ms of it the remote model's path)" if path is not None else ""
        (good if ok else bad).append(
            f"first audio heard {heard:.0f} ms{share} {'<=' if ok else '>'} {th.first_audio_heard_ms_max:.0f} ms"
        )
    worst = _num(doc, "response_latency_ms_max")
    if worst is not None:
        ok = worst <= th.response_latency_worst_ms_max
        (good if ok else bad).append(
            f"worst response {worst:.0f} ms {'<=' if ok else '>'} {th.response_latency_worst_ms_max:.0f} ms"
        )
    step = _num(doc, "step_ms_p95")
    if step is not None:
        ok = step <= th.step_ms_p95_max
        (good if ok else bad).append(
            f"step p95 {step:.1f} ms {'<=' if ok else '>'} {th.step_ms_p95_max:.0f} ms"
        )
    echo = _num(doc, "echo_detected")
    residual = _num(doc, "residual_echo_detected")  # present when the echo canceller was on
    if echo is None:
        bad.append("echo not measured")
    elif echo >= 1:
        delay, erl = _num(doc, "echo_delay_ms"), _num(doc, "echo_return_loss_db")
        parts = ([f"{delay:.0f} ms delay"] if delay is not None else []) + (
            [f"ERL {erl:.1f} dB"] if erl is not None else []
        )
        line = "echo on the line" + (f" ({', '.join(parts)})" if parts else "")
        if residual is None:
            bad.append(line.replace("echo on the line", "echo detected"))
        else:  # the canceller was on: what counts is what the model heard
            erle = _num(doc, "aec_erle_db")
            cancelled = f"{line}, cancelled" + (f" by {erle:.0f} dB" if erle is not None else "")
            if residual >= 1:
                loss = _num(doc, "residual_echo_return_loss_db")
                bad.append(
                    f"{cancelled}; the model still heard it"
                    + (f" (residual ERL {loss:.1f} dB)" if loss is not None else "")
                )
            else:
                good.append(f"{cancelled}; the model did not hear it")
    elif residual is not None and residual >= 1:
        bad.append("the model heard an echo the line did not show")
    else:
        good.append("no echo")
    if bad:
        return Verdict(name, "fail", "; ".join(bad))
    return Verdict(name, "pass", ", ".join(good))


JUDGES: dict[str, Callable[[Doc, Thresholds], Verdict]] = {
    "model_loads_quickly": model_loads_quickly,
    "server_listening": server_listening,
    "tunnel_exposed": tunnel_exposed,
    "call_initiated": call_initiated,
    "answered_ivr_heard": answered_ivr_heard,
    "websocket_connected": websocket_connected,
    "caller_hears_model": caller_hears_model,
    "model_hears_caller": model_hears_caller,
    "conversation_interactive": conversation_interactive,
    "audio_quality_ok": audio_quality_ok,
    "no_latency_echo_issues": no_latency_echo_issues,
}


def evaluate(doc: Doc, thresholds: Thresholds | None = None) -> list[Verdict]:
    """Every criterion, in DESIGN order."""
    th = thresholds if thresholds is not None else Thresholds()
    return [JUDGES[name](doc, th) for name in CRITERIA]
