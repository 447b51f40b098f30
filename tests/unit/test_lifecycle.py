"""Every (state, event) pair of the call lifecycle, table-driven."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestrator.errors import LifecycleError
from orchestrator.lifecycle import LIFECYCLE, CallEvent, CallState, EndMedia, EvaluateCall, EventType, handle

S, E = CallState, EventType
AT = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
STAY = "stay"  # accepted, no state change (informative)
X = "ignored"  # not accepted, state unchanged

# Expected outcome for every non-terminal state x every event. Terminal states are checked below.
EXPECTED: dict[CallState, dict[EventType, object]] = {
    S.QUEUED: {
        E.QUEUED: STAY,
        E.INITIATED: STAY,
        E.RINGING: S.RINGING,
        E.ANSWERED: S.IN_PROGRESS,
        E.STREAM_STARTED: S.STREAMING,
        E.STREAM_STOPPED: X,
        E.DTMF: STAY,
        E.COMPLETED: S.COMPLETED,
        E.BUSY: S.BUSY,
        E.NO_ANSWER: S.NO_ANSWER,
        E.FAILED: S.FAILED,
        E.CANCELED: S.CANCELED,
        E.INTERRUPTED: S.FAILED,
    },
    S.RINGING: {
        E.QUEUED: STAY,
        E.INITIATED: STAY,
        E.RINGING: STAY,
        E.ANSWERED: S.IN_PROGRESS,
        E.STREAM_STARTED: S.STREAMING,
        E.STREAM_STOPPED: X,
        E.DTMF: STAY,
        E.COMPLETED: S.COMPLETED,
        E.BUSY: S.BUSY,
        E.NO_ANSWER: S.NO_ANSWER,
        E.FAILED: S.FAILED,
        E.CANCELED: S.CANCELED,
        E.INTERRUPTED: S.FAILED,
    },
    S.IN_PROGRESS: {
        E.QUEUED: STAY,
        E.INITIATED: STAY,
        E.RINGING: X,
        E.ANSWERED: X,
        E.STREAM_STARTED: S.STREAMING,
        E.STREAM_STOPPED: STAY,
        E.DTMF: STAY,
        E.COMPLETED: S.COMPLETED,
        E.BUSY: X,
        E.NO_ANSWER: X,
        E.FAILED: S.FAILED,
        E.CANCELED: X,
        E.INTERRUPTED: S.FAILED,
    },
    S.STREAMING: {
        E.QUEUED: STAY,
        E.INITIATED: STAY,
        E.RINGING: X,
        E.ANSWERED: X,
        E.STREAM_STARTED: STAY,
        E.STREAM_STOPPED: STAY,  # forward only: a stopped stream is in the timeline, the call stays
        E.DTMF: STAY,
        E.COMPLETED: S.COMPLETED,
        E.BUSY: X,
        E.NO_ANSWER: X,
        E.FAILED: S.FAILED,
        E.CANCELED: X,
        E.INTERRUPTED: S.FAILED,
    },
}

PAIRS = [(s, e, EXPECTED[s][e]) for s in EXPECTED for e in EventType]


def test_table_covers_every_pair() -> None:
    assert {s for s in CallState if not s.terminal} == set(EXPECTED)
    for row in EXPECTED.values():
        assert set(row) == set(EventType)
    # the lifecycle's own table answers every pair too, terminal states included (no pair falls through)
    assert set(LIFECYCLE) == set(CallState)
    for row in LIFECYCLE.values():
        assert set(row) == set(EventType)


def test_terminal_states_are_the_failure_terminals_and_completed() -> None:
    assert {s.value for s in CallState if s.terminal} == {
        "completed",
        "busy",
        "no-answer",
        "failed",
        "canceled",
    }


# The forward order, written here independently of the module.
ORDER = ["queued", "ringing", "in-progress", "streaming"]


@pytest.mark.parametrize("state", [s for s in CallState if not s.terminal], ids=lambda s: s.value)
@pytest.mark.parametrize("event", list(EventType), ids=lambda e: e.value)
def test_the_lifecycle_only_moves_forward(state: CallState, event: EventType) -> None:
    out = handle(state, CallEvent(event, AT))
    if out.changed:
        assert out.state.terminal or ORDER.index(out.state.value) > ORDER.index(state.value)


def test_stopped_stream_stays_streaming_with_a_note() -> None:
    out = handle(S.STREAMING, CallEvent(E.STREAM_STOPPED, AT, "media"))
    assert out.accepted and out.state is S.STREAMING and not out.changed
    assert out.reason == "stream stopped: the call goes on until the carrier ends it"
    assert out.effects == ()


@pytest.mark.parametrize(("state", "event", "expected"), PAIRS, ids=lambda v: getattr(v, "value", str(v)))
def test_pair(state: CallState, event: EventType, expected: object) -> None:
    out = handle(state, CallEvent(event, AT, "test"))
    assert out.previous is state
    if expected == STAY:
        assert out.accepted and out.state is state and not out.changed
    elif expected == X:
        assert not out.accepted and out.state is state
        assert out.reason and out.reason.startswith("stale")
    else:
        assert out.accepted and out.state is expected and out.changed


@pytest.mark.parametrize("state", [s for s in CallState if s.terminal], ids=lambda s: s.value)
@pytest.mark.parametrize("event", list(EventType), ids=lambda e: e.value)
def test_terminal_states_absorb_everything(state: CallState, event: EventType) -> None:
    out = handle(state, CallEvent(event, AT))
    assert not out.accepted and out.state is state
    assert out.reason == f"terminal: call already {state.value}"


def test_late_ringing_after_answered_is_stale_with_reason() -> None:
    out = handle(S.IN_PROGRESS, CallEvent(E.RINGING, AT, "status_callback"))
    assert out.reason == "stale: ringing after in-progress"


def test_second_report_of_the_same_stream_is_a_confirmation() -> None:
    # the WebSocket `start` and the stream-started callback both report one stream
    out = handle(S.STREAMING, CallEvent(E.STREAM_STARTED, AT, "media"))
    assert out.accepted and not out.changed and out.reason == "confirms: already streaming"


def test_stream_before_answered_implies_answered() -> None:
    out = handle(S.RINGING, CallEvent(E.STREAM_STARTED, AT, "media"))
    assert out.state is S.STREAMING and "answered implied" in (out.reason or "")
    assert out.effects == ()


def test_terminal_transition_ends_media_and_evaluates() -> None:
    assert handle(S.STREAMING, CallEvent(E.COMPLETED, AT)).effects == (
        EndMedia("call completed"),
        EvaluateCall(),
    )
    assert handle(S.RINGING, CallEvent(E.INTERRUPTED, AT)).effects == (
        EndMedia("call failed"),
        EvaluateCall(),
    )
    assert handle(S.QUEUED, CallEvent(E.RINGING, AT)).effects == ()
    assert handle(S.COMPLETED, CallEvent(E.COMPLETED, AT)).effects == ()  # absorbed: nothing to do again


def test_checked_in_diagram_matches_the_table() -> None:
    from pathlib import Path

    from orchestrator.lifecycle_diagram import page

    docs = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
    assert docs.read_text(encoding="utf-8") == page(), (
        "docs/lifecycle.md is out of date: python -m orchestrator.lifecycle_diagram > docs/lifecycle.md"
    )


def test_diagram_draws_every_move_and_no_backward_one() -> None:
    from orchestrator.lifecycle_diagram import mermaid

    text = mermaid()
    assert "streaming --> completed: completed" in text
    assert "in_progress --> streaming: stream_started" in text
    assert "streaming --> in_progress" not in text


def test_unknown_local_event_type_is_a_bug() -> None:
    with pytest.raises(LifecycleError):
        handle(S.QUEUED, CallEvent("ringing", AT))  # type: ignore[arg-type]
