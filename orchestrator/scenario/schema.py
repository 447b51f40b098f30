"""What a scenario file says, as values: the caller's steps, the line, the backend, the expectations.

A `Scenario` is what `parse.py` makes of a file and `runner.py` plays. Pure values: no I/O, no clock
reads. The steps are the emulator's own (`orchestrator.emulator.steps`), one for one; the line becomes
the emulator's `Faults`; the backend becomes `Settings` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.emulator.steps import Step
from orchestrator.errors import OrchestratorError


class ScenarioError(OrchestratorError):
    """A scenario file cannot be read or says something impossible: `str(err)` names the file, the line
    and the field (`scenarios/x.yaml line 12: steps[3].barge_in.after_s must be ...`)."""


@dataclass(frozen=True, slots=True)
class Echo:
    """An acoustic echo at the phone (the emulator's `EchoSpec`): pure, or a room after the bulk delay."""

    delay_ms: float = 120.0
    loss_db: float = 20.0
    room: bool = False
    rt60_s: float = 0.25
    distance_m: float = 0.5


@dataclass(frozen=True, slots=True)
class Line:
    """The line's conditions (the emulator's `Faults`), caller side."""

    loss_rate: float = 0.0
    lost_frames: tuple[int, ...] = ()
    jitter_ms: float = 0.0
    echo: Echo | None = None
    noise_dbfs: float | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Backend:
    """The speech backend and its settings, by the names of `orchestrator.settings.Settings`
    (`playback_wav` is the playback backend's WAV, a path resolved against the scenario's folder)."""

    name: str = "echo"
    settings: tuple[tuple[str, object], ...] = ()
    playback_wav: str | None = None

    def setting(self, name: str, default: object = None) -> object:
        return dict(self.settings).get(name, default)


@dataclass(frozen=True, slots=True)
class CallSpec:
    """How the call goes around the caller's script: the `<Say>` greeting before the stream, when the
    caller's first step starts after the stream does, and a hard limit on the stream's length."""

    greeting: str = "Connecting you to Moshi."
    caller_start_s: float = 4.0
    max_seconds: float = 60.0
    hangup_when_done: bool = True


OPERATORS = ("<=", ">=", "==", "!=", "<", ">")
STATUSES = ("pass", "fail", "unknown")


@dataclass(frozen=True, slots=True)
class MetricBound:
    """`metric op value`, e.g. `first_audio_heard_ms < 1500`; `text` is how the file wrote it."""

    metric: str
    op: str
    value: float
    text: str
    line: int

    @property
    def label(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True, slots=True)
class CriterionStatus:
    """A criterion must end in one of `statuses` (e.g. caller_hears_model: pass)."""

    criterion: str
    statuses: tuple[str, ...]
    line: int

    @property
    def label(self) -> str:
        return f"{self.criterion} is {' or '.join(self.statuses)}"


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The server must have stored exactly these key presses, in this order (its `media/dtmf` events)."""

    digits: str
    line: int

    @property
    def label(self) -> str:
        return f"dtmf received {self.digits!r}"


Expectation = MetricBound | CriterionStatus | DtmfReceived


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    path: Path
    steps: tuple[Step, ...]
    description: str = ""  # as written (a folded block keeps its last newline: strip it to print)
    line: Line = field(default_factory=Line)
    backend: Backend = field(default_factory=Backend)
    call: CallSpec = field(default_factory=CallSpec)
    expect: tuple[Expectation, ...] = ()

    @property
    def speaks_text(self) -> bool:
        """Whether the caller speaks with espeak-ng (then it must be installed)."""
        return any(getattr(s, "text", None) is not None for s in self.steps)
