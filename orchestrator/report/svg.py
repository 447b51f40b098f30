"""Inline SVG plots for the HTML report, drawn by hand: no plotting library, nothing fetched.

Each function returns one `<svg>` element (or "" when there is nothing to draw) with a stable id and
class so tests and stylesheets can find it: `timeline-<call>` (.timeline), `levels-<call>` (.levels),
`latency-<call>` (.latency-bars); the cross-call `dist-<name>` (.distribution) are `dist_svg`'s.

Time axes: a call's timeline and its levels share one axis, seconds since the stream started (negative
before it; a call that never streamed counts from its creation), at the same width and scale, so speech
lines up with levels. Cross-call distributions scale to their data, not to 0..threshold. Pure string
building; no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from html import escape

from orchestrator.report.model import CallReport

W = 1000  # viewBox width; the page scales it
LEFT, RIGHT = 110, 20
# echo (magenta), over a threshold (red) and the failed states (busy red, no-answer orange, failed
# maroon) each have their own colour: a reader must never have to guess which one a red mark is
CALLER, MODEL, ECHO, OVER, GRID, INK = "#0969da", "#bc4c00", "#bf3989", "#cf222e", "#d0d7de", "#24292f"
STATE_COLOURS = {
    "queued": "#afb8c1",
    "ringing": "#d4a72c",
    "in-progress": "#4ac26b",
    "streaming": "#1f883d",
    "completed": "#57606a",
    "busy": "#cf222e",
    "no-answer": "#fb8f44",
    "failed": "#82071e",
    "canceled": "#8c959f",
}


def dom_id(text: str) -> str:
    """A string made safe for an HTML id and a CSS selector."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


def nice_ticks(low: float, high: float, target: int = 7) -> list[float]:
    """Round tick positions (1, 2, 5 x 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step) + 1)]


def _t(v: float) -> str:
    return f"{v:.1f}"


def _text(x: float, y: float, s: str, cls: str = "", anchor: str = "start", fill: str = INK) -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{_t(x)}" y="{_t(y)}" text-anchor="{anchor}" fill="{fill}"{c}>{escape(s)}</text>'


def _x_axis(ticks: Sequence[float], sx: object, y0: float, y1: float, unit: str) -> list[str]:
    out = []
    for tick in ticks:
        x = sx(tick)  # type: ignore[operator]
        out.append(f'<line x1="{_t(x)}" y1="{_t(y0)}" x2="{_t(x)}" y2="{_t(y1)}" stroke="{GRID}"/>')
        out.append(_text(x, y1 + 14, f"{tick:g}{unit}", "tick", "middle"))
    return out


def _svg(id_: str, cls: str, height: float, body: list[str], label: str, width: float = W) -> str:
    return (
        f'<svg id="{id_}" class="{cls}" viewBox="0 0 {_t(width)} {_t(height)}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _segments(call: CallReport, key: str) -> list[tuple[float, float]]:
    return [(float(s), float(e)) for s, e in call.analysis.get(key) or [] if e is not None and s is not None]


def call_range_s(call: CallReport) -> tuple[float, float]:
    """The axis of one call in s since its stream started (since creation if it never streamed)."""
    off = (call.stream_start_ms or 0.0) / 1000
    ts = [i.t_ms / 1000 - off for i in call.timeline] + [s.end_ms / 1000 - off for s in call.spans]
    ts += [e for key in ("inbound_segments", "outbound_segments") for _, e in _segments(call, key)]
    levels = call.analysis.get("levels") or {}
    ts += [
        float(p[0]) for k in ("inbound", "outbound") for p in (levels.get(k) or [])[-1:] if p[0] is not None
    ]
    lo, hi = min([0.0, *ts]), max([0.5, *ts])
    pad = (hi - lo) * 0.02
    return lo - pad, hi + pad


def _scale(lo: float, hi: float) -> Callable[[float], float]:
    def sx(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (min(max(t, lo), hi) - lo) / (hi - lo)

    return sx


def timeline_svg(call: CallReport) -> str:
    """States as coloured spans, events as ticks (rejected: hollow red), speech segments per channel."""
    if not call.timeline:
        return ""
    off = (call.stream_start_ms or 0.0) / 1000
    lo, hi = call_range_s(call)
    sx = _scale(lo, hi)
    unit = " s" if call.stream_start_ms is not None else " s (since created)"
    lanes = {"state": 10, "events": 44, "caller": 70, "model": 96}
    body = [_text(LEFT - 8, y + 15, name, "lane", "end") for name, y in lanes.items()]
    body += _x_axis(nice_ticks(lo, hi), sx, 8, 122, " s")
    body.append(_text(LEFT - 8, 136, "since start" if unit == " s" else "since created", "tick", "end"))
    for s in call.spans:
        x0, x1 = sx(s.start_ms / 1000 - off), sx(s.end_ms / 1000 - off)
        w = max(x1 - x0, 4.0)  # a terminal state is an instant: still show it
        colour = STATE_COLOURS.get(s.state, "#8c959f")
        body.append(
            f'<rect class="state state-{dom_id(s.state)}" x="{_t(x0)}" y="{lanes["state"]}" width="{_t(w)}" '
            f'height="24" rx="3" fill="{colour}"><title>{escape(s.state)} at {s.start_ms:.0f} ms</title></rect>'
        )
        if w > 8 * len(s.state):
            body.append(_text(x0 + 4, lanes["state"] + 16, s.state, "on-colour", fill="#ffffff"))
    for item in call.timeline:
        if item.kind != "event":
            continue
        x, y = sx(item.t_ms / 1000 - off), lanes["events"]
        style = f'fill="{INK}"' if item.accepted else f'fill="#ffffff" stroke="{OVER}" stroke-width="1.5"'
        tip = f"{item.label} at {item.t_ms:.0f} ms" + (f" ({item.detail})" if item.detail else "")
        body.append(
            f'<rect class="event{"" if item.accepted else " rejected"}" x="{_t(x - 2)}" y="{y + 2}" width="4" '
            f'height="18" {style}><title>{escape(tip)}</title></rect>'
        )
    for key, lane, colour, who in (
        ("inbound_segments", "caller", CALLER, "caller"),
        ("outbound_segments", "model", MODEL, "model"),
    ):
        for start, end in _segments(call, key):
            x0, x1 = sx(start), sx(end)
            body.append(
                f'<rect class="speech speech-{who}" x="{_t(x0)}" y="{lanes[lane] + 2}" width="{_t(max(x1 - x0, 1.5))}" '
                f'height="18" rx="2" fill="{colour}"><title>{who} speech {start:.2f}–{end:.2f} s after stream start'
                f"</title></rect>"
            )
    return _svg(f"timeline-{dom_id(call.id)}", "timeline", 142, body, f"Timeline of call {call.id}")


def _echo_marks(
    call: CallReport,
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    top: float,
    bottom: float,
    outbound: list[tuple[float, float]],
) -> list[str]:
    """Where the echo lies: each model segment shifted by the echo delay, at the model's level less the ERL."""
    echo = call.analysis.get("echo") or {}
    if not (echo.get("detected") or call.metrics.get("echo_detected") in (1, True)):
        return []
    delay = echo.get("delay_ms") if echo.get("delay_ms") is not None else call.metrics.get("echo_delay_ms")
    erl = echo.get("erl_db") if echo.get("erl_db") is not None else call.metrics.get("echo_return_loss_db")
    shift = float(delay or 0) / 1000
    segments = _segments(call, "outbound_segments")
    speech = sorted(v for t, v in outbound if any(s <= t < e for s, e in segments))
    echo_level = speech[len(speech) // 2] - float(erl) if speech and erl is not None else None
    out = ['<g class="echo-mark">']
    for s, e in segments:
        x0, x1 = sx(s + shift), sx(e + shift)
        out.append(
            f'<rect class="echo-band" x="{_t(x0)}" y="{top}" width="{_t(x1 - x0)}" height="{bottom - top}" '
            f'fill="{ECHO}" fill-opacity="0.09"/>'
        )
        if echo_level is not None:
            y = sy(echo_level)
            out.append(
                f'<line class="echo-level" x1="{_t(x0)}" y1="{_t(y)}" x2="{_t(x1)}" y2="{_t(y)}" '
                f'stroke="{ECHO}" stroke-width="2" stroke-dasharray="5 3"/>'
            )
    label = "echo: model speech comes back"
    label += f" {float(delay):.0f} ms later" if delay is not None else ""
    label += f", {float(erl):.1f} dB down (ERL)" if erl is not None else ""
    if echo_level is not None:
        label += f" at ≈ {echo_level:.0f} dBFS"
    out.append(_text(W - RIGHT, top + 12, label, "echo-label", "end", ECHO) + "</g>")
    return out


def levels_svg(call: CallReport) -> str:
    """RMS level of both channels, on the call's timeline axis; when echo is flagged, shaded where it lies."""
    levels = call.analysis.get("levels") or {}
    tracks = {
        k: [(float(t), float(v)) for t, v in levels.get(k) or [] if v is not None and t is not None]
        for k in ("inbound", "outbound")
    }
    if not any(tracks.values()):
        return ""
    lo_t, hi_t = call_range_s(call)
    sx = _scale(lo_t, hi_t)
    lo, hi, top, bottom = -80.0, 0.0, 24, 178

    def sy(v: float) -> float:
        return bottom - (bottom - top) * (min(max(v, lo), hi) - lo) / (hi - lo)

    body = []
    for db in nice_ticks(lo, hi, 4):
        body.append(
            f'<line x1="{LEFT}" y1="{_t(sy(db))}" x2="{W - RIGHT}" y2="{_t(sy(db))}" stroke="{GRID}"/>'
        )
        body.append(_text(LEFT - 8, sy(db) + 4, f"{db:g} dBFS", "tick", "end"))
    body += _x_axis(nice_ticks(lo_t, hi_t), sx, bottom, bottom + 2, " s")
    body += _echo_marks(call, sx, sy, top, bottom, tracks["outbound"])
    for key, colour in (("outbound", MODEL), ("inbound", CALLER)):
        pts = " ".join(f"{_t(sx(t))},{_t(sy(v))}" for t, v in tracks[key])
        if pts:
            body.append(
                f'<polyline class="level level-{key}" points="{pts}" fill="none" stroke="{colour}" '
                'stroke-width="1.6"/>'
            )
    x = float(LEFT)
    for label, colour in (("caller (inbound)", CALLER), ("model (outbound)", MODEL), ("echo", ECHO)):
        body.append(
            f'<rect class="swatch" x="{_t(x)}" y="{top - 17}" width="12" height="12" fill="{colour}"/>'
        )
        body.append(_text(x + 16, top - 7, label, "lane", fill=colour))
        x += 34 + 9.5 * len(label)
    return _svg(f"levels-{dom_id(call.id)}", "levels", 202, body, f"Levels of call {call.id}")


def latency_bars_svg(call: CallReport, threshold_ms: float) -> str:
    """Response latency of each turn, one bar each, against the threshold."""
    values = call.turn_latencies_ms()
    if not values:
        return ""
    top, bottom = 24, 132
    vmax = max([*values, threshold_ms]) * 1.1

    def sy(v: float) -> float:
        return bottom - (bottom - top) * v / vmax

    width, left = 420, 64  # drawn beside the levels plot: a narrower canvas keeps text legible
    slot = (width - left - RIGHT) / len(values)
    body = []
    for ms in nice_ticks(0, vmax, 4):
        body.append(
            f'<line x1="{left}" y1="{_t(sy(ms))}" x2="{width - RIGHT}" y2="{_t(sy(ms))}" stroke="{GRID}"/>'
        )
        body.append(_text(left - 6, sy(ms) + 4, f"{ms:g} ms", "tick", "end"))
    for i, v in enumerate(values):
        x, bw = left + i * slot + slot * 0.2, min(slot * 0.6, 80)
        over = v > threshold_ms
        body.append(
            f'<rect class="bar{" over" if over else ""}" x="{_t(x)}" y="{_t(sy(v))}" width="{_t(bw)}" '
            f'height="{_t(bottom - sy(v))}" fill="{OVER if over else CALLER}"><title>turn {i + 1}: {v:.0f} ms'
            f"</title></rect>"
        )
        body.append(_text(x + bw / 2, sy(v) - 4, f"{v:.0f}", "value", "middle"))
        body.append(_text(x + bw / 2, bottom + 14, f"turn {i + 1}", "tick", "middle"))
    y = sy(threshold_ms)
    body.append(
        f'<line class="threshold" x1="{left}" y1="{_t(y)}" x2="{width - RIGHT}" y2="{_t(y)}" stroke="{OVER}" stroke-dasharray="6 4"/>'
    )
    body.append(
        _text(width - RIGHT, 11, f"- - threshold {threshold_ms:.0f} ms", "threshold-label", "end", OVER)
    )
    return _svg(
        f"latency-{dom_id(call.id)}",
        "latency-bars",
        152,
        body,
        f"Response latency per turn, call {call.id}",
        width,
    )
