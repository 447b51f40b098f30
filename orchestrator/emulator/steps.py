"""What a scripted caller can do, step by step: speak, stay quiet, wait, talk over the model, press keys, hang up.

These are the values a scenario file becomes and the emulator's caller plays (`CallOptions.steps`);
the scenario layer builds them and the emulator reads them. Pure values: no I/O, no clock reads. The
step player (`step_player.py`) turns them into frames; the ground truth records what each step did.
"""

from __future__ import annotations

from dataclasses import dataclass

DTMF_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class Say:
    """The caller speaks: espeak-ng `text` or a `wav` file (exactly one)."""

    text: str | None = None
    wav: str | None = None


@dataclass(frozen=True, slots=True)
class Silence:
    """The caller stays quiet for `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class WaitForReply:
    """Quiet until the phone has heard the model speak and fall silent again, or `timeout_s`."""

    timeout_s: float = 8.0


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Start speaking `after_s` after the phone starts hearing the model (waits up to `timeout_s` for it)."""

    after_s: float
    text: str | None = None
    wav: str | None = None
    timeout_s: float = 8.0


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Send these digits as Twilio `dtmf` messages, `gap_s` apart (digits 0-9 * # A-D)."""

    digits: str
    gap_s: float = 0.25


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hangs up here."""


Step = Say | Silence | WaitForReply | BargeIn | Dtmf | Hangup


_NAMES = {"Say": "say", "Silence": "silence", "WaitForReply": "wait_for_reply", "BargeIn": "barge_in"}


def step_name(step: Step) -> str:
    """The step's kind as the ground truth and scenario files spell it: say, silence, wait_for_reply,
    barge_in, dtmf, hangup."""
    kind = type(step).__name__
    return _NAMES.get(kind, kind.lower())


def check_step(step: Step) -> None:
    """Raise ValueError (one line, naming the field) if a step cannot be played."""
    if isinstance(step, Say | BargeIn) and (step.text is None) == (step.wav is None):
        raise ValueError(f"{type(step).__name__} needs exactly one of text or wav")
    if isinstance(step, Silence) and not step.seconds >= 0:
        raise ValueError(f"Silence seconds must be >= 0, got {step.seconds!r}")
    if isinstance(step, WaitForReply | BargeIn) and not step.timeout_s > 0:
        raise ValueError(f"{type(step).__name__} timeout_s must be > 0, got {step.timeout_s!r}")
    if isinstance(step, BargeIn) and not step.after_s >= 0:
        raise ValueError(f"BargeIn after_s must be >= 0, got {step.after_s!r}")
    if isinstance(step, Dtmf):
        bad = sorted(set(step.digits) - DTMF_DIGITS)
        if not step.digits or bad:
            raise ValueError(f"Dtmf digits must be 0-9 * # A-D, got {step.digits!r}")
        if not step.gap_s >= 0:
            raise ValueError(f"Dtmf gap_s must be >= 0, got {step.gap_s!r}")
