"""The call page as values: what a telephony engineer reads first about one call, from its document.

`build_call_page(doc)` gives the summary band (direction, masked numbers, who hung up, SIP code,
post-dial delay, ring time, codec, backend), the quality of each direction with an E-model MOS
estimate, everything that happened placed on ONE time axis (seconds since the stream's `start` was
received; negative before it), the webhooks we answered and the model's transcript.

Pure: no I/O, no clock. Never raises on a partial document (a busy call has no stream: its axis starts
at creation and it has fewer lanes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.report.call_facts import (
    Quality,
    hangup_of,
    mos_of,
    num,
    quality_of,
    summary_of,
)
from orchestrator.report.emodel import EModelResult
from orchestrator.report.model import mask_number, parse_at

WEBHOOK_SOURCES = ("status_callback", "stream_status", "voice")
_NUMBER_KEYS = ("From", "To", "Caller", "Called", "ForwardedFrom")
_SPECIAL_PIECE = re.compile(r"^\s*(<s>|</s>|<pad>|<unk>|\[PAD\]|<\|[^|]*\|>)\s*$")
_PHRASE_GAP_S = 0.6  # transcript pieces closer than this are one phrase on the axis


@dataclass(frozen=True, slots=True)
class AxisItem:
    """Something on the time axis: an instant (dur_s 0) or a span, in s since the stream started."""

    lane: str
    t_s: float
    label: str
    kind: str = ""  # a CSS class: its colour
    dur_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Webhook:
    """One request Twilio made to us, and what we answered."""

    t_s: float
    source: str
    type: str
    answer: str  # "204 accepted", "204 duplicate (ignored)", "403 bad signature", ...
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CallPage:
    call_id: str
    title: str
    origin: str  # what time 0 of the axis is
    summary: tuple[tuple[str, str], ...]
    quality: tuple[Quality, ...]
    mos: EModelResult | None
    mos_na: str  # why there is no estimate (empty when there is one)
    items: tuple[AxisItem, ...]
    t_range: tuple[float, float]
    webhooks: tuple[Webhook, ...]
    transcript: tuple[tuple[float, str], ...]
    analysis: Mapping[str, Any]
    recording_path: str | None


def _origin(doc: Mapping[str, Any]) -> tuple[Any, str]:
    events = doc.get("events") or []
    for e in events:
        if e.get("source") == "media" and e.get("type") == "start" and e.get("accepted") is not False:
            if at := parse_at(e.get("at")):
                return at, "the media stream's `start` was received"
    for t in doc.get("transitions") or []:
        if t.get("to") == "streaming" and (at := parse_at(t.get("at"))):
            return at, "the call started streaming"
    call = doc.get("call") or {}
    return parse_at(call.get("created_at")), "the call was created (it never streamed)"


def _answer(e: Mapping[str, Any]) -> str:
    reason = str(e.get("reason") or "")
    if e.get("accepted") is False:
        if "signature" in reason:
            return "403 bad signature"
        if reason == "duplicate":
            return "204 duplicate (ignored)"
        return f"400 refused ({reason})" if "identif" in reason else f"204 recorded, not applied ({reason})"
    return "200 TwiML" if e.get("source") == "voice" else "204 accepted"


def _params(payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for k, v in payload.items():
        if str(k).startswith("_") or v in ("", None):
            continue
        out.append((str(k), mask_number(v) if k in _NUMBER_KEYS else str(v)))
    return tuple(out)


def _transcript(doc: Mapping[str, Any]) -> tuple[tuple[float, str], ...]:
    phrases: list[tuple[float, float, str]] = []
    for piece in doc.get("transcript") or []:
        text, at_ms = str(piece.get("text") or ""), num(piece.get("at_ms"))
        if at_ms is None or not text or _SPECIAL_PIECE.match(text):
            continue
        text = text.replace("▁", " ")
        t = at_ms / 1000
        if phrases and t - phrases[-1][1] <= _PHRASE_GAP_S:
            start, _, words = phrases[-1]
            phrases[-1] = (start, t, words + text)
        else:
            phrases.append((t, t, text))
    return tuple((round(s, 3), " ".join(w.split())) for s, _, w in phrases if w.strip())


def rows(value: object, n: int, optional: tuple[int, ...] = ()) -> list[tuple[float, ...]]:
    """The well-formed rows of a stored track: n finite numbers each (NaN where `optional` allows None);
    anything else (a hand-edited or truncated document) is skipped, never raised on."""
    out = []
    for row in value if isinstance(value, list) else []:
        if not isinstance(row, (list, tuple)) or len(row) < n:
            continue
        vals = [num(v) if not (k in optional and v is None) else math.nan for k, v in enumerate(row[:n])]
        if all(v is not None for v in vals):
            out.append(tuple(float(v) for v in vals if v is not None))
    return out


def _items(doc: Mapping[str, Any], rel: Any, hang: tuple[str, float | None]) -> list[AxisItem]:
    items: list[AxisItem] = []
    transitions = [(rel(t.get("at")), t) for t in doc.get("transitions") or []]
    transitions = [(t, tr) for t, tr in transitions if t is not None]
    transitions.sort(key=lambda p: p[0])
    end = rel((doc.get("call") or {}).get("ended_at"))
    for k, (t, tr) in enumerate(transitions):
        nxt = transitions[k + 1][0] if k + 1 < len(transitions) else (end if end is not None else t)
        state = str(tr.get("to"))
        items.append(
            AxisItem("states", t, state, f"state-{state}", max(0.0, nxt - t), str(tr.get("trigger") or ""))
        )
    for e in doc.get("events") or []:
        t = rel(e.get("at"))
        if t is None:
            continue
        src, typ = str(e.get("source")), str(e.get("type"))
        kind = "rejected" if e.get("accepted") is False else ""
        if src in WEBHOOK_SOURCES:
            items.append(AxisItem("webhooks", t, typ, kind or "webhook", detail=f"{src}: {_answer(e)}"))
        elif src == "media":
            items.append(AxisItem("stream", t, typ, kind or "stream", detail="media WebSocket"))
        elif src in ("rest", "local"):
            items.append(AxisItem("stream", t, typ, kind or "ours", detail=src))
    a = doc.get("analysis") or {}
    for lane, key, kind in (
        ("caller", "inbound_segments", "caller"),
        ("model", "outbound_segments", "model"),
    ):
        for s, e_ in rows(a.get(key), 2):
            items.append(AxisItem(lane, s, f"{lane} speech", kind, e_ - s, f"{s:.2f}–{e_:.2f} s"))
    stream = a.get("stream") or {}
    for sent, echoed, flushed in rows(stream.get("marks"), 3, optional=(1,)):
        if not math.isnan(echoed):
            items.append(
                AxisItem(
                    "marks",
                    echoed,
                    "flushed" if flushed else "played",
                    "mark-flushed" if flushed else "mark",
                    detail=f"sent {sent:.3f} s",
                )
            )
    for (t,) in rows([[c] for c in stream.get("clears") or []], 1):
        items.append(AxisItem("marks", t, "clear", "clear", detail="`clear`: queued audio flushed"))
    for t, media_ms, ms in rows(stream.get("gaps"), 3):
        items.append(
            AxisItem(
                "gaps",
                t,
                f"{ms:.0f} ms lost",
                "gap",
                ms / 1000,
                f"media {media_ms:.0f}–{media_ms + ms:.0f} ms",
            )
        )
    for t, ms in rows(stream.get("underruns"), 2):
        items.append(AxisItem("gaps", t, f"underrun {ms:.0f} ms", "underrun", ms / 1000))
    if hang[1] is not None:
        items.append(AxisItem("stream", hang[1], "hang-up", "hangup", detail=hang[0]))
    return items


def build_call_page(doc: Mapping[str, Any]) -> CallPage:
    call = doc.get("call") or {}
    origin, origin_text = _origin(doc)

    def rel(value: object) -> float | None:
        at = parse_at(value)
        return None if at is None or origin is None else (at - origin).total_seconds()

    m = doc.get("metrics") or {}
    a = doc.get("analysis") or {}
    stream = a.get("stream") or {}
    mos, mos_na = mos_of(m, stream)
    hang = hangup_of(doc, rel)
    items = _items(doc, rel, hang)
    transcript = _transcript(doc)
    items += [AxisItem("transcript", t, text, "transcript") for t, text in transcript]
    ends = [i.t_s + i.dur_s for i in items] + [i.t_s for i in items]
    levels = a.get("levels")
    levels = levels if isinstance(levels, dict) else {}
    for track in levels.values():
        ends += [t for t, _ in rows(track, 2)[-1:]]
    lo, hi = (min(ends), max(ends)) if ends else (0.0, 1.0)
    call_id = str(call.get("id") or call.get("call_sid") or "?")
    return CallPage(
        call_id=call_id,
        title=f"Call {call_id}",
        origin=origin_text,
        summary=(
            *summary_of(doc, rel, hang[0]),
            ("MOS (inbound, E-model)", f"{mos.mos:.2f} (R {mos.r:.1f})" if mos else f"n/a: {mos_na}"),
        ),
        quality=quality_of(m, stream, mos.inputs.loss_pct if mos else None),
        mos=mos,
        mos_na=mos_na,
        items=tuple(sorted(items, key=lambda i: i.t_s)),
        t_range=(min(lo, 0.0), max(hi, lo + 1.0)),
        webhooks=tuple(
            Webhook(t, str(e.get("source")), str(e.get("type")), _answer(e), _params(e.get("payload") or {}))
            for e in doc.get("events") or []
            if str(e.get("source")) in WEBHOOK_SOURCES and (t := rel(e.get("at"))) is not None
        ),
        transcript=transcript,
        analysis=a,
        recording_path=call.get("recording_path"),
    )
