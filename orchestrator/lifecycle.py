"""The call lifecycle: states, events and the transition table. Pure: no I/O, no clock reads.

Theory of operation
-------------------
A call moves forward through ``queued -> ringing -> in-progress -> streaming -> completed`` or ends in
one of the failure terminals ``busy``, ``no-answer``, ``failed``, ``canceled``. Events arrive from four
sources that race each other (the REST create response, status callbacks, ``<Stream>`` status
callbacks and the media WebSocket), so the rules are written for the races, not the happy path:

* The table below lists every transition that *changes* something. An event that has no row from the
  current state is **not an error**: it is a late or out-of-order remote event. It is recorded with
  ``accepted=False`` and a reason (``stale`` or ``terminal``) and the state does not move.
  Example: ``ringing`` after ``in-progress`` (callbacks are separate HTTP requests and arrive in any
  order), or ``completed`` after ``failed``.
* The WebSocket ``start`` may beat the ``answered`` callback: ``streaming`` from ``ringing`` (or even
  ``queued``) means the call was answered.
* Terminal states absorb everything.
* Some events are informative and never move the state (``initiated``: the call left Twilio's queue;
  ``dtmf``). They are accepted and recorded without a transition.
* Duplicates (same CallSid + SequenceNumber, or the same idempotency token) are detected by the
  service, which owns the memory of what was seen; the lifecycle judges one event against one state.

An impossible *local* command (an event type this module does not know) is a bug: it raises
``LifecycleError``. Everything a remote peer can do is answered with an ``Outcome``.

The table is executed by the ``transitions`` library (one shared machine, Enum states, triggers named
after the events, ``ignore_invalid_triggers`` because late events are normal here).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from transitions import Machine

from orchestrator.errors import LifecycleError


class CallState(str, enum.Enum):
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    STREAMING = "streaming"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {CallState.COMPLETED, CallState.BUSY, CallState.NO_ANSWER, CallState.FAILED, CallState.CANCELED}
)


class EventType(str, enum.Enum):
    """What happened (past tense), named after where it came from."""

    QUEUED = "queued"  # REST create accepted (CallSid known)
    INITIATED = "initiated"  # callback: left the queue, dialing (informative)
    RINGING = "ringing"
    ANSWERED = "answered"  # callback CallStatus=in-progress
    STREAM_STARTED = "stream_started"  # WS `start` or stream-started callback
    STREAM_STOPPED = "stream_stopped"  # WS `stop`, socket closed, stream-stopped callback
    DTMF = "dtmf"  # informative
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # callback, REST create error, or stream-error
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"  # local: our side lost the call (shutdown, crash found at restart)


# Informative events: accepted from any non-terminal state, never move the state.
INFORMATIVE = frozenset({EventType.INITIATED, EventType.DTMF, EventType.QUEUED})

_S = CallState
_PRE_ANSWER = [_S.QUEUED, _S.RINGING]
_ALIVE = [_S.QUEUED, _S.RINGING, _S.IN_PROGRESS, _S.STREAMING]

# The whole lifecycle. Each row: trigger, from, to. Read it as documentation.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "ringing", "source": _S.QUEUED, "dest": _S.RINGING},
    {"trigger": "answered", "source": _PRE_ANSWER, "dest": _S.IN_PROGRESS},
    # the media WebSocket can beat the answered callback: streaming implies answered
    {"trigger": "stream_started", "source": [*_PRE_ANSWER, _S.IN_PROGRESS], "dest": _S.STREAMING},
    # the stream ended but the call is still up (Twilio runs the verbs after </Connect>)
    {"trigger": "stream_stopped", "source": _S.STREAMING, "dest": _S.IN_PROGRESS},
    {"trigger": "completed", "source": _ALIVE, "dest": _S.COMPLETED},
    {"trigger": "busy", "source": _PRE_ANSWER, "dest": _S.BUSY},
    {"trigger": "no_answer", "source": _PRE_ANSWER, "dest": _S.NO_ANSWER},
    {"trigger": "failed", "source": _ALIVE, "dest": _S.FAILED},
    {"trigger": "canceled", "source": _PRE_ANSWER, "dest": _S.CANCELED},
    {"trigger": "interrupted", "source": _ALIVE, "dest": _S.FAILED},
]

#: (state, event) pairs that confirm what the state already says: accepted, no transition.
_CONFIRMATIONS = {
    (_S.STREAMING, EventType.STREAM_STARTED): "confirms: already streaming",
    # an inbound call is created ringing by the voice webhook; its status callback then says so too
    (_S.RINGING, EventType.RINGING): "confirms: already ringing",
    (_S.IN_PROGRESS, EventType.STREAM_STOPPED): "confirms: stream already stopped",
}

#: Rank of each non-terminal state, used to explain why a late event was ignored.
RANK = {_S.QUEUED: 0, _S.RINGING: 1, _S.IN_PROGRESS: 2, _S.STREAMING: 3}

#: Twilio CallStatus (status callback) -> event type.
CALL_STATUS_EVENTS = {
    "queued": EventType.QUEUED,
    "initiated": EventType.INITIATED,
    "ringing": EventType.RINGING,
    "in-progress": EventType.ANSWERED,
    "completed": EventType.COMPLETED,
    "busy": EventType.BUSY,
    "no-answer": EventType.NO_ANSWER,
    "failed": EventType.FAILED,
    "canceled": EventType.CANCELED,
}

#: <Stream statusCallback> StreamEvent -> event type.
STREAM_STATUS_EVENTS = {
    "stream-started": EventType.STREAM_STARTED,
    "stream-stopped": EventType.STREAM_STOPPED,
    "stream-error": EventType.STREAM_STOPPED,
}


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened to a call, stamped by whoever observed it."""

    type: EventType
    at: datetime
    source: str = "local"
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The judgement of one event against one state."""

    accepted: bool
    state: CallState  # the state after the event
    previous: CallState
    reason: str | None = None  # why it was not accepted, or a note on an accepted one
    effects: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.state is not self.previous


class _CallModel:
    """The minimal object the shared machine drives for one judgement."""

    state: CallState


# Ignored triggers are normal here (late callbacks) and are recorded with a reason by the service;
# the library's own warning for each would only be noise.
logging.getLogger("transitions.core").setLevel(logging.ERROR)

_MACHINE = Machine(
    model=None,
    states=CallState,
    transitions=TRANSITIONS,
    initial=None,
    auto_transitions=False,
    ignore_invalid_triggers=True,
    send_event=True,
)


def handle(state: CallState, event: CallEvent) -> Outcome:
    """Judge `event` against a call in `state`. Never raises for remote events."""
    if not isinstance(event.type, EventType):
        raise LifecycleError(f"unknown event type {event.type!r}: this is a bug in the caller")
    if state.terminal:
        return Outcome(False, state, state, f"terminal: call already {state.value}")
    if event.type in INFORMATIVE:
        return Outcome(True, state, state)
    # Two sources report the same stream (the WebSocket itself and <Stream statusCallback>): the
    # second report of a fact already applied is confirmation, not a stale event.
    if (state, event.type) in _CONFIRMATIONS:
        return Outcome(True, state, state, _CONFIRMATIONS[(state, event.type)])
    new_state = _TABLE[(state, event.type)]
    if new_state is None:
        return Outcome(False, state, state, _why_ignored(state, event.type))
    effects: list[str] = []
    note = None
    if event.type is EventType.STREAM_STARTED and state in _PRE_ANSWER:
        note = "stream started before the answered callback: answered implied"
    if new_state.terminal:
        effects.append("call_ended")
    if new_state is CallState.STREAMING:
        effects.append("stream_live")
    return Outcome(True, new_state, state, note, tuple(effects))


def _run_machine(state: CallState, kind: EventType) -> CallState | None:
    """Where the transitions machine takes a call in `state` on `kind` (None: no such transition)."""
    model = _CallModel()
    _MACHINE.add_model(model, initial=state)
    try:
        moved = bool(getattr(model, kind.value)())
    finally:
        _MACHINE.remove_model(model)
    return model.state if moved else None


# The machine is deterministic and has no guards, so its answer for every (state, event) pair is
# computed once here; `handle` then costs a dict lookup (callbacks arrive by the thousand).
_TABLE: dict[tuple[CallState, EventType], CallState | None] = {
    (st, kind): _run_machine(st, kind)
    for st in CallState
    if not st.terminal
    for kind in EventType
    if kind not in INFORMATIVE
}


def _why_ignored(state: CallState, kind: EventType) -> str:
    dest = _destination(kind)
    if dest is not None and dest in RANK and RANK[dest] <= RANK[state]:
        return f"stale: {kind.value} after {state.value}"
    return f"stale: {kind.value} cannot follow {state.value}"


def _destination(kind: EventType) -> CallState | None:
    for row in TRANSITIONS:
        if row["trigger"] == kind.value:
            return row["dest"]  # type: ignore[no-any-return]
    return None

