"""The bounds the success criteria judge against, each with the reason for its default.

Every field is set by the variable `CHECK_<FIELD NAME>` (`.env.example` lists them all); a bad value
is a ThresholdError naming the variable. Pure: `Thresholds.from_env` reads the mapping it is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import ThresholdError

__all__ = ["Thresholds", "env_example_lines", "env_name"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Bounds the criteria judge against. Each field is set by the variable CHECK_<FIELD NAME>."""

    # The seed report's own bound: "Moshi loads quickly (< 10 seconds with cached models)"; 7.6 s on an M3.
    model_load_s_max: float = 10.0
    # After the IVR the caller hears nothing until the model speaks; past ~2 s people say "hello?" or
    # assume the line died.
    first_audio_heard_ms_max: float = 2000.0
    # Median voice-to-voice latency. People leave ~200 ms between turns and voice agents aim for < 1 s;
    # Moshi's own ~200 ms plus both PSTN legs fits well inside 1 s.
    response_latency_ms_max: float = 1000.0
    # The single worst turn: one 2 s silence already feels like a dropped line.
    response_latency_worst_ms_max: float = 2000.0
    # "Alternating turns" needs at least two caller -> model exchanges to be seen alternating.
    min_turns: int = 2
    # Stream connect (answer -> `start`) must cover this fraction of the estimated <Say> duration: the
    # estimate is rough (speaking rate), but a stream much sooner means the IVR was cut or skipped.
    ivr_min_fraction: float = 0.5
    # Fraction of samples at full scale per direction. A clipped plosive now and then is normal on a
    # phone line; a percent of all samples is sustained audible distortion.
    clip_ratio_max: float = 0.01
    # Total inbound audio lost (gaps in media.timestamp). 500 ms is about a dropped word: beyond it the
    # model misses speech. (Twilio's own SDK warns at 3 % loss, i.e. 900 ms on a 30 s call.)
    gap_ms_max: float = 500.0
    # Inbound inter-arrival jitter: Twilio's SDK raises "high-jitter" above 30 ms.
    jitter_ms_max: float = 30.0
    # Times the phone's playout buffer ran dry mid-response: each one is an audible hole in the model.
    underruns_max: int = 3
    # Whole-call RMS per direction (silence included): below this the channel is dead or muted.
    level_dbfs_min: float = -60.0
    # One Moshi step must finish within its 80 ms frame or the model falls behind real time.
    step_ms_p95_max: float = 80.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Thresholds:
        """Defaults overridden by CHECK_* variables in `environ`; raises ThresholdError on a bad one."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        known = {env_name(name): name for name in fields}
        values: dict[str, float | int] = {}
        for key, raw in environ.items():
            if not key.startswith("CHECK_"):
                continue
            if key not in known:
                raise ThresholdError(f"unknown setting {key}; known: {', '.join(sorted(known))}")
            name = known[key]
            field = fields[name]
            values[name] = _parse_value(key, raw, field.default, integer=field.type in (int, "int"))
        return cls(**values)  # type: ignore[arg-type]


def env_name(field_name: str) -> str:
    return "CHECK_" + field_name.upper()


def env_example_lines() -> list[str]:
    """`.env.example` lines for every threshold, with its default."""
    return [f"{env_name(f.name)}={f.default:g}" for f in dataclasses.fields(Thresholds)]


def _parse_value(key: str, raw: str, default: object, *, integer: bool) -> float | int:
    text = raw.strip()
    try:
        value: float | int = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ThresholdError(f"{key}={raw!r} is not {kind} (example: {key}={default:g})") from None
    if not math.isfinite(value) or (value < 0 and not key.endswith("_DBFS_MIN")):
        raise ThresholdError(f"{key}={raw!r} must be a finite number >= 0")
    return value
