"""The call page's plot: one SVG, one time axis (s since the stream started) shared by every panel.

Panels top to bottom, all on the same x scale and grid: event lanes (states, webhooks, stream events,
caller and model speech, the model's transcript, marks and clears, lost-audio gaps and underruns), the
RMS level of both channels with the echo estimate, a waveform envelope per side of the recording, and
the inbound jitter. The hang-up is a rule across all of them. Text is 15 user units on a 1000-unit
canvas that CSS never shrinks below 760 px, so no label renders under 11 px.

Every panel is a `<g class="panel" data-panel=NAME data-points=N>`: N counts what it drew, so a test in
a browser can read back that each plot has data. Pure string building; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

from orchestrator.report.call_facts import num
from orchestrator.report.call_model import AxisItem, CallPage, rows
from orchestrator.report.svg import CALLER, GRID, INK, MODEL, STATE_COLOURS, dom_id, nice_ticks

W, LEFT, RIGHT = 1000, 150, 16
FONT = 15
MIN_WIDTH_PX = 760  # the page's CSS keeps the SVG at least this wide: FONT * 760 / 1000 >= 11 px
ECHO, GAP, UNDERRUN, MARK, FLUSHED, CLEAR, HANGUP, JITTER = (
    "#bf3989",
    "#24292f",
    "#bf8700",
    "#1f883d",
    "#953800",
    "#0a3069",
    "#cf222e",
    "#8250df",
)
KIND_COLOURS = {
    "caller": CALLER,
    "model": MODEL,
    "transcript": MODEL,
    "webhook": "#57606a",
    "stream": INK,
    "ours": "#0a3069",
    "rejected": "#cf222e",
    "mark": MARK,
    "mark-flushed": FLUSHED,
    "clear": CLEAR,
    "gap": GAP,
    "underrun": UNDERRUN,
    "hangup": HANGUP,
}
LANES = ("states", "webhooks", "stream", "caller", "model", "transcript", "marks", "gaps")
LANE_TITLES = {
    "states": "call state",
    "webhooks": "webhooks",
    "stream": "stream events",
    "caller": "caller speech",
    "model": "model speech",
    "transcript": "model text",
    "marks": "marks / clears",
    "gaps": "lost / underrun",
}
LANE_H = 26
Envelope = Sequence[tuple[float, float, float]]  # (t s, min, max), samples scaled to -1..1


def _t(v: float) -> str:
    return f"{v:.1f}"


def _text(x: float, y: float, s: str, cls: str, anchor: str = "start", fill: str = INK) -> str:
    return (
        f'<text x="{_t(x)}" y="{_t(y)}" text-anchor="{anchor}" fill="{fill}" class="{cls}" '
        f'font-size="{FONT}">{escape(s)}</text>'
    )


def colour(item: AxisItem) -> str:
    if item.kind.startswith("state-"):
        return STATE_COLOURS.get(item.kind[6:], "#8c959f")
    return KIND_COLOURS.get(item.kind, INK)


class _Axis:
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi

    def x(self, t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (min(max(t, self.lo), self.hi) - self.lo) / (self.hi - self.lo)


def _panel(name: str, points: int, body: list[str]) -> str:
    return f'<g class="panel" data-panel="{name}" data-points="{points}">' + "".join(body) + "</g>"


def _lanes(page: CallPage, ax: _Axis, top: float) -> tuple[str, float]:
    body, n = [], 0
    for i, lane in enumerate(LANES):
        y = top + i * LANE_H
        body.append(_text(LEFT - 8, y + 18, LANE_TITLES[lane], "lane", "end"))
        body.append(
            f'<line x1="{LEFT}" y1="{_t(y + LANE_H)}" x2="{W - RIGHT}" y2="{_t(y + LANE_H)}" stroke="{GRID}"/>'
        )
        items = [it for it in page.items if it.lane == lane]
        for k, it in enumerate(items):
            n += 1
            x0 = ax.x(it.t_s)
            tip = f"{it.label} at {it.t_s:.3f} s" + (f" ({it.detail})" if it.detail else "")
            fill = colour(it)
            if it.dur_s > 0 or lane == "states":
                w = max(ax.x(it.t_s + it.dur_s) - x0, 3.0)
                body.append(
                    f'<rect class="item {escape(it.kind)}" x="{_t(x0)}" y="{_t(y + 4)}" width="{_t(w)}" '
                    f'height="{LANE_H - 8}" rx="2" fill="{fill}" data-t="{it.t_s:.3f}" data-dur="{it.dur_s:.3f}">'
                    f"<title>{escape(tip)}</title></rect>"
                )
                if lane == "states" and w > 9 * len(it.label):
                    body.append(_text(x0 + 4, y + 18, it.label, "on-colour", fill="#ffffff"))
            else:
                body.append(
                    f'<rect class="item {escape(it.kind)}" x="{_t(x0 - 1.5)}" y="{_t(y + 3)}" width="3" '
                    f'height="{LANE_H - 6}" fill="{fill}" data-t="{it.t_s:.3f}"><title>{escape(tip)}</title></rect>'
                )
            if lane == "transcript":  # the words themselves, cut to the room before the next phrase
                room = (ax.x(items[k + 1].t_s) if k + 1 < len(items) else W - RIGHT) - x0 - 8
                chars = int(room / (FONT * 0.55))
                if chars >= 3:
                    words = it.label if len(it.label) <= chars else it.label[: chars - 1] + "…"
                    body.append(_text(x0 + 4, y + 18, words, "said", fill=MODEL))
    return _panel("events", n, body), top + len(LANES) * LANE_H


def _echo(page: CallPage, ax: _Axis, sy: Callable[[float], float], top: float, bottom: float) -> list[str]:
    echo = page.analysis.get("echo") or {}
    if not echo.get("detected"):
        peak = num(echo.get("peak"))
        note = "no echo flagged" + (f" (normalised peak {peak:.2f})" if peak is not None else "")
        return [_text(W - RIGHT, top + 14, note, "echo-label", "end", ECHO)]
    delay = (num(echo.get("delay_ms")) or 0.0) / 1000
    erl = num(echo.get("erl_db"))
    out = []
    for s, e in rows(page.analysis.get("outbound_segments"), 2):
        x0, x1 = ax.x(float(s) + delay), ax.x(float(e) + delay)
        out.append(
            f'<rect class="echo-band" x="{_t(x0)}" y="{top}" width="{_t(max(x1 - x0, 1))}" '
            f'height="{_t(bottom - top)}" fill="{ECHO}" fill-opacity="0.14"/>'
        )
    label = f"echo: model speech back {delay * 1000:.0f} ms later"
    label += f", {erl:.1f} dB down (ERL)" if erl is not None else ""
    out.append(_text(W - RIGHT, top + 14, label, "echo-label", "end", ECHO))
    return out


def _levels(page: CallPage, ax: _Axis, top: float) -> tuple[str, float]:
    h, lo, hi = 150.0, -80.0, 0.0
    bottom = top + h

    def sy(v: float) -> float:
        return bottom - h * (min(max(v, lo), hi) - lo) / (hi - lo)

    body = [_text(8, top + 34, "level", "lane")]
    for db in nice_ticks(lo, hi, 4):
        body.append(
            f'<line x1="{LEFT}" y1="{_t(sy(db))}" x2="{W - RIGHT}" y2="{_t(sy(db))}" stroke="{GRID}"/>'
        )
        body.append(_text(LEFT - 8, sy(db) + 5, f"{db:g} dBFS", "tick", "end"))
    body += _echo(page, ax, sy, top, bottom)
    n = 0
    levels = page.analysis.get("levels") or {}
    for key, c in (("outbound", MODEL), ("inbound", CALLER)):
        pts = rows(levels.get(key), 2)
        n += len(pts)
        if pts:
            body.append(
                f'<polyline class="level level-{key}" fill="none" stroke="{c}" stroke-width="1.6" points="'
                + " ".join(f"{_t(ax.x(t))},{_t(sy(v))}" for t, v in pts)
                + '"/>'
            )
    return _panel("levels", n, body), bottom + 12


def _wave(name: str, title: str, env: Envelope, c: str, ax: _Axis, top: float) -> tuple[str, float]:
    h = 70.0
    mid = top + h / 2

    def sy(v: float) -> float:
        return mid - (h / 2 - 2) * max(-1.0, min(1.0, v))

    body = [
        _text(LEFT - 8, mid + 5, title, "lane", "end"),
        f'<line x1="{LEFT}" y1="{_t(mid)}" x2="{W - RIGHT}" y2="{_t(mid)}" stroke="{GRID}"/>',
    ]
    if env:
        upper = " ".join(f"{_t(ax.x(t))},{_t(sy(hi))}" for t, _, hi in env)
        lower = " ".join(f"{_t(ax.x(t))},{_t(sy(lo))}" for t, lo, _ in reversed(env))
        body.append(
            f'<polygon class="wave wave-{name}" points="{upper} {lower}" fill="{c}" fill-opacity="0.85"/>'
        )
    return _panel(f"wave-{name}", len(env), body), top + h + 8


def _jitter(page: CallPage, ax: _Axis, top: float) -> tuple[str, float]:
    pts = rows((page.analysis.get("stream") or {}).get("jitter"), 2)
    h = 80.0
    bottom = top + h
    vmax = max([30.0, *(v for _, v in pts)]) * 1.1

    def sy(v: float) -> float:
        return bottom - h * v / vmax

    body = [_text(8, top + 34, "jitter", "lane")]
    for ms in nice_ticks(0, vmax, 3):
        body.append(
            f'<line x1="{LEFT}" y1="{_t(sy(ms))}" x2="{W - RIGHT}" y2="{_t(sy(ms))}" stroke="{GRID}"/>'
        )
        body.append(_text(LEFT - 8, sy(ms) + 5, f"{ms:g} ms", "tick", "end"))
    y30 = sy(30.0)
    body.append(
        f'<line class="threshold" x1="{LEFT}" y1="{_t(y30)}" x2="{W - RIGHT}" y2="{_t(y30)}" stroke="{JITTER}" '
        'stroke-dasharray="6 4"/>'
    )
    body.append(_text(W - RIGHT, y30 - 4, "30 ms (Twilio high-jitter warning)", "tick", "end", JITTER))
    if pts:
        body.append(
            f'<polyline class="jitter" fill="none" stroke="{JITTER}" stroke-width="2" points="'
            + " ".join(f"{_t(ax.x(t))},{_t(sy(v))}" for t, v in pts)
            + '"/>'
        )
    return _panel("jitter", len(pts), body), bottom + 8


def call_axis_svg(page: CallPage, envelopes: Mapping[str, Envelope] | None = None) -> str:
    """The whole call on one time axis; a panel with nothing to draw is left out."""
    lo, hi = page.t_range
    pad = (hi - lo) * 0.01
    ax = _Axis(lo - pad, hi + pad)
    top = 30.0
    panels = []
    part, top = _lanes(page, ax, top)
    panels.append(part)
    if (page.analysis.get("levels") or {}).get("inbound") or (page.analysis.get("levels") or {}).get(
        "outbound"
    ):
        part, top = _levels(page, ax, top + 8)
        panels.append(part)
    for name, title, c in (("caller", "caller wave", CALLER), ("model", "model wave", MODEL)):
        env = (envelopes or {}).get(name)
        if env:
            part, top = _wave(name, title, env, c, ax, top)
            panels.append(part)
    if (page.analysis.get("stream") or {}).get("jitter"):
        part, top = _jitter(page, ax, top)
        panels.append(part)
    bottom = top
    grid = []
    for tick in nice_ticks(ax.lo, ax.hi, 10):
        x = ax.x(tick)
        grid.append(
            f'<line x1="{_t(x)}" y1="26" x2="{_t(x)}" y2="{_t(bottom)}" stroke="{GRID}" stroke-width="0.8"/>'
        )
        grid.append(_text(x, 20, f"{tick:g}", "tick", "middle"))
        grid.append(_text(x, bottom + 18, f"{tick:g}", "tick", "middle"))
    grid.append(_text(LEFT - 8, 20, "s since stream start", "tick", "end"))
    grid.append(_text(LEFT - 8, bottom + 18, "s", "tick", "end"))
    zero = ax.x(0.0)
    grid.append(
        f'<line class="origin" x1="{_t(zero)}" y1="26" x2="{_t(zero)}" y2="{_t(bottom)}" stroke="{INK}" stroke-width="1"/>'
    )
    for it in page.items:
        if it.kind == "hangup":
            x = ax.x(it.t_s)
            grid.append(
                f'<line class="hangup-rule" x1="{_t(x)}" y1="26" x2="{_t(x)}" y2="{_t(bottom)}" stroke="{HANGUP}" '
                f'stroke-width="2" stroke-dasharray="8 4"><title>{escape(it.detail)} at {it.t_s:.3f} s</title></line>'
            )
    height = bottom + 28
    label = f"{page.title} on one time axis (s since the stream started)"
    return (
        f'<svg id="axis-{dom_id(page.call_id)}" class="call-axis" viewBox="0 0 {W} {_t(height)}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
        + "".join(grid)
        + "".join(panels)
        + "</svg>"
    )
