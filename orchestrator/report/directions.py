"""Which way is better for each metric, the unit a metric's name gives it, and how big a change matters.

The one table of metric directions the run comparison (`orchestrator.report.compare`) judges with:
"lower" (latencies, echo flags, loss, jitter, clipping), "higher" (turns, echo return loss, ERLE,
levels, whose bound is a minimum: a dead or muted channel), or "either" — a metric not named here, or
one where neither way is a worsening (the far end's echo delay, the call's length). A change of an
"either" metric is reported as a change and never as a regression.

Margins are per unit and scale with the baseline: a difference of medians counts only past
max(absolute, relative x |baseline median|). The ms default (50 ms or 10 %) is the figure
benchmarks/regression.py measures its false-alarm and detection rates at.

Pure data and arithmetic: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower", "higher", "either"]

__all__ = ["DEFAULT_MARGINS", "DIRECTIONS", "Direction", "Margin", "direction_of", "parse_margin", "unit_of"]

_LOWER = (
    "model_load_s",
    "stream_connect_ms",
    "first_audio_ms",
    "first_audio_heard_ms",
    "response_latency_ms_p50",
    "response_latency_ms_max",
    "barge_in_stop_ms",
    "barge_in_unstopped",
    "backend_lag_ms_p50",
    "step_ms_p50",
    "step_ms_p95",
    "step_ms_p99",
    "late_frames",
    "echo_detected",
    "residual_echo_detected",
    "echo_segments_flagged",
    "inbound_gap_ms_total",
    "inbound_gap_count",
    "lost_frames",
    "inbound_jitter_ms",
    "inbound_jitter_ms_max",
    "outbound_underruns",
    "inbound_clip_ratio",
    "outbound_clip_ratio",
)
_HIGHER = (
    "turns",
    "echo_return_loss_db",
    "residual_echo_return_loss_db",
    "aec_erle_db",
    "inbound_rms_dbfs",
    "outbound_rms_dbfs",
)

#: metric name -> which way is better; the order is the order reports list them in
DIRECTIONS: dict[str, Direction] = {
    **{name: "lower" for name in _LOWER},
    **{name: "higher" for name in _HIGHER},
}

_BOOLS = frozenset({"echo_detected", "residual_echo_detected"})
# (name suffix, unit): a suffix counts at the end of the name or before another `_word`
# (response_latency_ms_p50 is in ms); dBFS is looked for before dB
_SUFFIXES = (("_ms", "ms"), ("_dbfs", "dBFS"), ("_db", "dB"), ("_s", "s"), ("_ratio", "ratio"))


def direction_of(name: str) -> Direction:
    """Which way is better for `name`; "either" for a metric the table does not name."""
    return DIRECTIONS.get(name, "either")


def unit_of(name: str) -> str:
    """The unit a metric's name gives it: ms, s, dB, dBFS, ratio, bool (a 0/1 flag) or count."""
    if name in _BOOLS or name.endswith("_detected"):
        return "bool"
    for suffix, unit in _SUFFIXES:
        head, sep, tail = name.rpartition(suffix)
        if sep and head and (tail == "" or tail.startswith("_")):
            return unit
    return "count"


@dataclass(frozen=True, slots=True)
class Margin:
    """The smallest difference of medians that counts: max(absolute, relative x |baseline median|)."""

    absolute: float
    relative: float = 0.0  # a fraction: 0.10 is 10 % of the baseline median

    def of(self, baseline_median: float) -> float:
        return max(self.absolute, self.relative * abs(baseline_median))

    def describe(self, unit: str) -> str:
        if not self.absolute and not self.relative:
            return "any move of the median"
        if unit == "ratio":  # a fraction, read as percentage points
            points = self.absolute * 100
            parts = [f"{points:g} percentage point{'' if points == 1 else 's'}"] if self.absolute else []
        else:
            shown = "" if unit in ("count", "bool") else f" {unit}"
            parts = [f"{self.absolute:g}{shown}"] if self.absolute else []
        if self.relative:
            parts.append(f"{self.relative * 100:g} % of the baseline median")
        return " or ".join(parts) + (", whichever is larger" if len(parts) > 1 else "")


#: unit -> default margin. ms: 50 ms is a quarter of the ~200 ms people leave between turns, and 10 %
#: keeps a slow path (a 2 s first audio) from flagging its own noise; s: load and call lengths vary by
#: half a second run to run; dB and dBFS: 3 dB, half or double the power; ratios: one percentage point
#: (the clipping bound itself); counts: half a unit or 10 % (a median of whole numbers moves by one);
#: bools (0/1 flags): any move of the median, i.e. most calls flip.
DEFAULT_MARGINS: dict[str, Margin] = {
    "ms": Margin(50.0, 0.10),
    "s": Margin(0.5, 0.10),
    "dB": Margin(3.0),
    "dBFS": Margin(3.0),
    "ratio": Margin(0.01),
    "count": Margin(0.5, 0.10),
    "bool": Margin(0.0),
}


def parse_margin(text: str) -> tuple[str, Margin]:
    """`KEY=VALUE` from `--margin`: KEY a unit (ms, s, dB, dBFS, ratio, count, bool) or a metric name,
    VALUE `50` (in the unit), `10%` (of the baseline median) or `50,10%` (whichever is larger).
    Raises ValueError with a one-line message."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    example = "examples: ms=80, response_latency_ms_p50=100, ms=50,10%"
    if not sep or not key or not value:
        raise ValueError(f"--margin {text!r}: expected KEY=VALUE ({example})")
    absolute, relative = 0.0, 0.0
    for part in (p.strip() for p in value.split(",")):
        try:
            number = float(part[:-1]) / 100 if part.endswith("%") else float(part)
        except ValueError:
            raise ValueError(
                f"--margin {text!r}: {part!r} is not a number or a percentage ({example})"
            ) from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"--margin {text!r}: {part!r} must be a finite number >= 0")
        if part.endswith("%"):
            relative = number
        else:
            absolute = number
    return key, Margin(absolute, relative)
