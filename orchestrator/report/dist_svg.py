"""The run report's cross-call distributions: one latency across calls, on an axis scaled to the data.

A few values are dots with a box (quartiles, median, range); from `CDF_FROM` values on, the empirical
CDF with p50 and p95 marked. The threshold is drawn where it falls, or named "off scale" when it lies
far from the data rather than squashing the data into a corner. Pure string building; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from orchestrator.report.model import percentile

# the axis helpers are the run report's own, shared within this package
from orchestrator.report.svg import (
    CALLER,
    INK,
    LEFT,
    OVER,
    RIGHT,
    W,
    _scale,
    _svg,
    _t,
    _text,
    _x_axis,
    dom_id,
    nice_ticks,
)


def _value_range(nums: Sequence[float]) -> tuple[float, float]:
    """The data's own range, padded: three values of 106-115 ms fill the axis, not its left 5 %."""
    lo, hi = min(nums), max(nums)
    pad = (hi - lo) * 0.08 if hi > lo else max(abs(hi) * 0.1, 1.0)
    return (max(0.0, lo - pad) if lo >= 0 else lo - pad), hi + pad


def _threshold_mark(
    x: float | None, threshold_ms: float, top: float, bottom: float, lo: float, hi: float
) -> list[str]:
    if x is None:  # off the data's scale: say where it is instead of squashing the data
        side = "→" if threshold_ms > hi else "←"
        anchor, tx = ("end", W - RIGHT) if threshold_ms > hi else ("start", LEFT)
        return [
            _text(
                tx,
                top - 6,
                f"threshold {threshold_ms:.0f} ms {side} (off scale)",
                "threshold-label",
                anchor,
                OVER,
            )
        ]
    near_right = x > W - RIGHT - 160
    return [
        f'<line class="threshold" x1="{_t(x)}" y1="{top - 6}" x2="{_t(x)}" y2="{bottom}" stroke="{OVER}" '
        'stroke-dasharray="6 4"/>',
        _text(
            x + (-4 if near_right else 4),
            top - 6,
            f"threshold {threshold_ms:.0f} ms",
            "threshold-label",
            "end" if near_right else "start",
            OVER,
        ),
    ]


CDF_FROM = 6  # more calls than a handful: a distribution says more than dots


def distribution_svg(name: str, title: str, values: Sequence[tuple[str, float]], threshold_ms: float) -> str:
    """One latency across calls on an axis scaled to the data: dots and a box for a few values, the
    empirical CDF with p50 and p95 marked from CDF_FROM values on; the threshold drawn where it falls."""
    if not values:
        return ""
    nums = [v for _, v in values]
    lo, hi = _value_range(nums)
    span = hi - lo
    if lo - span <= threshold_ms <= hi + span:  # near the data: widen the axis to show it
        lo, hi = min(lo, threshold_ms - span * 0.04), max(hi, threshold_ms + span * 0.04)
    sx = _scale(lo, hi)
    thr_x = sx(threshold_ms) if lo <= threshold_ms <= hi else None
    p50, p95 = percentile(nums, 50), percentile(nums, 95)
    cdf = len(nums) >= CDF_FROM
    top, bottom = 42, 182 if cdf else 122
    body = [_text(LEFT, 16, title, "plot-title")]
    body += _x_axis(nice_ticks(lo, hi), sx, top, bottom, " ms")
    if cdf:

        def sy(q: float) -> float:
            return bottom - (bottom - top) * q

        for q in (0.0, 0.5, 1.0):
            body.append(_text(LEFT - 8, sy(q) + 4, f"{q * 100:.0f} %", "tick", "end"))
        ordered = sorted(nums)
        pts = [f"{_t(sx(ordered[0]))},{_t(sy(0))}"]
        for i, v in enumerate(ordered):
            pts.append(f"{_t(sx(v))},{_t(sy(i / len(ordered)))} {_t(sx(v))},{_t(sy((i + 1) / len(ordered)))}")
        body.append(
            f'<polyline class="cdf" fill="none" stroke="{CALLER}" stroke-width="2.2" points="{" ".join(pts)}"/>'
        )
        body.append(_text(LEFT - 8, top - 6, "share ≤ x", "tick", "end"))
        for qname, qv in (("p50", p50), ("p95", p95)):
            x = sx(qv)
            body.append(
                f'<line class="quantile q-{qname}" x1="{_t(x)}" y1="{top}" x2="{_t(x)}" y2="{bottom}" stroke="{INK}" '
                'stroke-width="1.5"/>'
            )
            body.append(
                _text(
                    x + (-4 if x > W - RIGHT - 120 else 4),
                    bottom - 6 if qname == "p50" else top + 14,
                    f"{qname} {qv:.0f} ms",
                    "quantile-label",
                    "end" if x > W - RIGHT - 120 else "start",
                )
            )
        for call_id, v in values:
            body.append(
                f'<circle class="dot" cx="{_t(sx(v))}" cy="{bottom + 1}" r="2.5" fill="{OVER if v > threshold_ms else INK}">'
                f"<title>{escape(call_id)}: {v:.0f} ms</title></circle>"
            )
    else:
        mid = 82
        q1, med, q3 = (percentile(nums, q) for q in (25, 50, 75))
        body.append(
            f'<line class="whisker" x1="{_t(sx(min(nums)))}" y1="{mid}" x2="{_t(sx(max(nums)))}" y2="{mid}" stroke="{INK}"/>'
            f'<rect class="box" x="{_t(sx(q1))}" y="{mid - 16}" width="{_t(max(sx(q3) - sx(q1), 1))}" height="32" '
            f'fill="#ddf4ff" stroke="{CALLER}"/><line class="median" x1="{_t(sx(med))}" y1="{mid - 16}" '
            f'x2="{_t(sx(med))}" y2="{mid + 16}" stroke="{CALLER}" stroke-width="3"/>'
        )
        for i, (call_id, v) in enumerate(values):
            jitter = ((i * 7919) % 23 - 11) * 1.6  # spread overlapping dots, deterministically
            body.append(
                f'<circle class="dot" cx="{_t(sx(v))}" cy="{_t(mid + jitter)}" r="4.5" '
                f'fill="{OVER if v > threshold_ms else INK}" fill-opacity="0.75"><title>{escape(call_id)}: {v:.0f} ms</title></circle>'
            )
    body += _threshold_mark(thr_x, threshold_ms, top, bottom, lo, hi)
    body.append(_text(W - RIGHT, 16, f"n={len(nums)}  p50 {p50:.0f} ms  p95 {p95:.0f} ms", "stats", "end"))
    cls = "distribution cdf-plot" if cdf else "distribution"
    return _svg(f"dist-{dom_id(name)}", cls, bottom + 24, body, title)
