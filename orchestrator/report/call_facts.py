"""The call page's figures: the summary band (like Voice Insights' call summary), the quality of each
direction, and the E-model MOS of the inbound leg, formatted with their units from a call document.

Pure: no I/O, no clock. A figure that cannot be had reads "n/a" with the reason where there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.report.emodel import EModelInputs, EModelResult, estimate, one_way_delay_ms
from orchestrator.report.model import mask_number, parse_at

CODEC = "PCMU (G.711 μ-law), 8 kHz mono, 20 ms frames"
Rel = Callable[[object], "float | None"]


@dataclass(frozen=True, slots=True)
class Quality:
    """One direction's figures, already formatted with their unit ("n/a" where it cannot apply)."""

    direction: str
    rows: tuple[tuple[str, str], ...]


def num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f and abs(f) != float("inf") else None


def _fmt(v: float | None, unit: str, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if abs(v) < 10 and v != round(v):  # under 10 a decimal stays: 0.8 ms is not "1 ms"
        digits = max(digits, 1)
    text = f"{v:.{digits}f}"
    return f"{text} {unit}".strip()


def first_event(doc: Mapping[str, Any], source: str, type_: str) -> Mapping[str, Any] | None:
    return next(
        (
            e
            for e in doc.get("events") or []
            if e.get("source") == source and e.get("type") == type_ and e.get("accepted") is not False
        ),
        None,
    )


def hangup_of(doc: Mapping[str, Any], rel: Any) -> tuple[str, float | None]:
    call = doc.get("call") or {}
    state = str(call.get("state") or "")
    if state in ("busy", "no-answer", "failed", "canceled"):
        return f"never answered: {state}", None
    ours = first_event(doc, "rest", "hangup")
    if ours is not None:
        asked = (ours.get("payload") or {}).get("requested") or "completed"
        return f"we hung up (REST update status={asked})", rel(ours.get("at"))
    closed = first_event(doc, "media", "ws_closed")
    if closed is not None:
        why = (closed.get("payload") or {}).get("end") or "closed"
        return f"we ended the stream ({why}); <Hangup/> ended the call", rel(closed.get("at"))
    stop = first_event(doc, "media", "stop")
    if stop is not None:
        return "the far end hung up (the carrier sent the stream `stop`)", rel(stop.get("at"))
    return "unknown (no stop, hang-up or close recorded)", None


def mos_of(m: Mapping[str, Any], stream: Mapping[str, Any]) -> tuple[EModelResult | None, str]:
    lost = num(m.get("lost_frames"))
    frames = num(stream.get("inbound_frames"))
    jitter = num(m.get("inbound_jitter_ms"))
    if frames is None and (gap := num(m.get("inbound_gap_ms_total"))) is not None:
        span = num(m.get("call_duration_s"))
        frames = span * 50 - (gap / 20) if span else None
    if lost is None or not frames or jitter is None:
        return None, "no inbound audio measured: nothing to rate"
    transit = num(m.get("inbound_media_offset_ms")) or 0.0
    inputs = EModelInputs(
        loss_pct=100.0 * lost / (frames + lost), one_way_delay_ms=one_way_delay_ms(transit, jitter)
    )
    return estimate(inputs), ""


def quality_of(
    m: Mapping[str, Any], stream: Mapping[str, Any], loss_pct: float | None
) -> tuple[Quality, ...]:
    def pct(name: str) -> str:
        v = num(m.get(name))
        return "n/a" if v is None else f"{v * 100:.2f} %"

    inbound = (
        ("level (RMS)", _fmt(num(m.get("inbound_rms_dbfs")), "dBFS", 1)),
        ("peak", _fmt(num(m.get("inbound_peak")), "of 32767")),
        ("clipping", pct("inbound_clip_ratio")),
        ("silence", pct("inbound_silence_ratio")),
        (
            "jitter avg / max",
            f"{_fmt(num(m.get('inbound_jitter_ms')), 'ms', 1)} / "
            f"{_fmt(num(m.get('inbound_jitter_ms_max')), 'ms', 1)}",
        ),
        (
            "lost audio",
            "n/a"
            if loss_pct is None
            else f"{loss_pct:.2f} % ({_fmt(num(m.get('inbound_gap_ms_total')), 'ms')}, "
            f"{_fmt(num(m.get('inbound_gap_count')), 'gaps')})",
        ),
        ("transit (media clock offset)", _fmt(num(m.get("inbound_media_offset_ms")), "ms", 1)),
        ("speech", _fmt(num(m.get("inbound_speech_s")), "s", 1)),
    )
    marks = stream.get("marks") or []
    outbound = (
        ("level (RMS)", _fmt(num(m.get("outbound_rms_dbfs")), "dBFS", 1)),
        ("peak", _fmt(num(m.get("outbound_peak")), "of 32767")),
        ("clipping", pct("outbound_clip_ratio")),
        ("silence", pct("outbound_silence_ratio")),
        ("jitter avg / max", "n/a (not visible to the server)"),
        ("lost audio", "n/a (not visible to the server)"),
        ("underruns", _fmt(num(m.get("outbound_underruns")), "")),
        (
            "marks played / sent",
            f"{_fmt(num(m.get('marks_played')), '')} / {len(marks) or _fmt(num(m.get('marks_sent')), '')}",
        ),
        ("speech", _fmt(num(m.get("outbound_speech_s")), "s", 1)),
    )
    return (Quality("caller → us (inbound)", inbound), Quality("us → caller (outbound)", outbound))


def summary_of(doc: Mapping[str, Any], rel: Any, hangup: str) -> tuple[tuple[str, str], ...]:
    call, facts, m = doc.get("call") or {}, doc.get("facts") or {}, doc.get("metrics") or {}
    terminal = next(
        (
            e
            for e in reversed(doc.get("events") or [])
            if e.get("source") == "status_callback"
            and (e.get("payload") or {}).get("SipResponseCode") not in (None, "")
        ),
        None,
    )
    sip = str((terminal.get("payload") or {}).get("SipResponseCode")) if terminal else "n/a (not reported)"
    carrier = (terminal.get("payload") or {}).get("CallDuration") if terminal else None

    def between(a: tuple[str, str], b: tuple[str, str]) -> float | None:
        ea, eb = first_event(doc, *a), first_event(doc, *b)
        ta, tb = (rel(ea.get("at")) if ea else None), (rel(eb.get("at")) if eb else None)
        return None if ta is None or tb is None else (tb - ta) * 1000

    start = (
        ("status_callback", "initiated")
        if first_event(doc, "status_callback", "initiated")
        else ("rest", "queued")
    )
    pdd = between(start, ("status_callback", "ringing"))
    ring = between(("status_callback", "ringing"), ("status_callback", "in-progress"))
    talk = num(m.get("call_duration_s"))
    created, ended = parse_at(call.get("created_at")), parse_at(call.get("ended_at"))
    total = (ended - created).total_seconds() if created and ended else None
    duration = _fmt(talk, "s", 1) + " answered → end"
    if total is not None:
        duration += f" · {total:.1f} s created → end"
    if carrier not in (None, ""):
        duration += f" · carrier CallDuration {carrier} s"
    model = facts.get("model") or facts.get("hf_repo") or facts.get("moshi_hf_repo")
    backend = str(facts.get("backend") or call.get("backend") or "n/a")
    return (
        ("direction", str(call.get("direction") or "n/a")),
        ("from → to", f"{mask_number(call.get('from')) or '?'} → {mask_number(call.get('to')) or '?'}"),
        ("state", str(call.get("state") or "unknown")),
        ("duration", duration),
        ("hang-up", hangup),
        ("SIP response", sip),
        ("post-dial delay", _fmt(pdd, "ms") + f" ({start[1]} → ringing)"),
        ("ring time", _fmt(ring, "ms") + " (ringing → answered)"),
        ("codec", CODEC),
        ("backend · model", f"{backend} · {model or _no_model(backend)}"),
    )


def _no_model(backend: str) -> str:
    return f"no model ({backend} backend)" if backend in ("echo", "playback") else "model not recorded"
