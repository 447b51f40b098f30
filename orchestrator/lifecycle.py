"""The call lifecycle: states, events and one table that judges every (state, event) pair. Pure: no I/O,
no clock reads.

Theory of operation
-------------------
A call moves forward through ``queued -> ringing -> in-progress -> streaming -> completed`` or ends in
one of the failure terminals ``busy``, ``no-answer``, ``failed``, ``canceled``. It never moves back: a
stopped stream is an event in the call's timeline, not a return to ``in-progress``, so the last
transition says whether the call ever streamed (``streaming -> completed``) or not
(``in-progress -> completed``).

Events arrive from four sources that race each other (the REST create response, status callbacks,
``<Stream>`` status callbacks and the media WebSocket), so the rules are written for the races, not the
happy path. `LIFECYCLE` below answers every pair with one of:

* ``To(state)``: accepted, the call moves (a transition is recorded);
* ``Noted(note)``: accepted, the call stays where it is. Informative events (``initiated``, ``dtmf``),
  confirmations (a second report of a fact already applied: the WebSocket ``start`` and the
  stream-started callback report one stream) and timeline events (the stream stopped);
* ``Late()`` / ``CannotFollow()``: **not an error**, a late or out-of-order remote event. It is
  recorded with ``accepted=False`` and a reason (``stale: ...``) and the state does not move.
  Example: ``ringing`` after ``in-progress`` (callbacks are separate HTTP requests and arrive in any
  order);
* ``Absorbed()``: the call is over; terminal states absorb everything (``terminal: ...``).

The WebSocket ``start`` may beat the ``answered`` callback: ``streaming`` from ``ringing`` (or even
``queued``) means the call was answered. Duplicates (same CallSid + SequenceNumber, or the same
idempotency token) are detected by the service, which owns the memory of what was seen; the lifecycle
judges one event against one state.

What is *not* a lifecycle event is not judged here: notes such as ``refused_busy``, ``backend_ended``
or ``long_gap`` (see `NOTES`) are stored as what they are and never touch the state.

An impossible *local* command (an event type this module does not know) is a bug: it raises
``LifecycleError``. Everything a remote peer can do is answered with an ``Outcome``. The diagram in
``docs/lifecycle.md`` is generated from `LIFECYCLE` (``python -m orchestrator.lifecycle_diagram``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

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


class EventType(str, enum.Enum):
    """What happened (past tense), named after where it came from."""

    QUEUED = "queued"  # REST create accepted (CallSid known)
    INITIATED = "initiated"  # callback: left the queue, dialing (informative)
    RINGING = "ringing"
    ANSWERED = "answered"  # callback CallStatus=in-progress
    STREAM_STARTED = "stream_started"  # WS `start` or stream-started callback
    STREAM_STOPPED = "stream_stopped"  # WS `stop`, socket closed, stream-stopped/-error callback, stream lost
    DTMF = "dtmf"  # informative
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # callback or REST create error
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"  # local: our side lost the call (shutdown, crash found at restart)


# -- the answers a pair can get -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class To:
    """Accepted: the call moves to `state`."""

    state: CallState
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Noted:
    """Accepted: recorded in the timeline, the call stays where it is."""

    note: str | None = None


@dataclass(frozen=True, slots=True)
class Late:
    """Not accepted: the event reports a step the call is already past."""


@dataclass(frozen=True, slots=True)
class CannotFollow:
    """Not accepted: the event cannot happen from here (e.g. a stream stopped before any answer)."""


@dataclass(frozen=True, slots=True)
class Absorbed:
    """Not accepted: the call is over."""


Rule = To | Noted | Late | CannotFollow | Absorbed

_S, _E = CallState, EventType
ANSWER_IMPLIED = "stream started before the answered callback: answered implied"
STREAM_STOPPED = "stream stopped: the call goes on until the carrier ends it"
ABSORBS_ALL: Final[dict[EventType, Rule]] = dict.fromkeys(EventType, Absorbed())

#: The whole lifecycle, every (state, event) pair. Read it as documentation.
LIFECYCLE: Final[dict[CallState, dict[EventType, Rule]]] = {
    _S.QUEUED: {
        _E.QUEUED: Noted(),
        _E.INITIATED: Noted(),
        _E.RINGING: To(_S.RINGING),
        _E.ANSWERED: To(_S.IN_PROGRESS),
        _E.STREAM_STARTED: To(_S.STREAMING, ANSWER_IMPLIED),
        _E.STREAM_STOPPED: CannotFollow(),
        _E.DTMF: Noted(),
        _E.COMPLETED: To(_S.COMPLETED),
        _E.BUSY: To(_S.BUSY),
        _E.NO_ANSWER: To(_S.NO_ANSWER),
        _E.FAILED: To(_S.FAILED),
        _E.CANCELED: To(_S.CANCELED),
        _E.INTERRUPTED: To(_S.FAILED),
    },
    _S.RINGING: {
        _E.QUEUED: Noted(),
        _E.INITIATED: Noted(),
        # an inbound call is created ringing by the voice webhook; its status callback then says so too
        _E.RINGING: Noted("confirms: already ringing"),
        _E.ANSWERED: To(_S.IN_PROGRESS),
        _E.STREAM_STARTED: To(_S.STREAMING, ANSWER_IMPLIED),
        _E.STREAM_STOPPED: CannotFollow(),
        _E.DTMF: Noted(),
        _E.COMPLETED: To(_S.COMPLETED),
        _E.BUSY: To(_S.BUSY),
        _E.NO_ANSWER: To(_S.NO_ANSWER),
        _E.FAILED: To(_S.FAILED),
        _E.CANCELED: To(_S.CANCELED),
        _E.INTERRUPTED: To(_S.FAILED),
    },
    _S.IN_PROGRESS: {
        _E.QUEUED: Noted(),
        _E.INITIATED: Noted(),
        _E.RINGING: Late(),
        _E.ANSWERED: Late(),
        _E.STREAM_STARTED: To(_S.STREAMING),
        # the stream-stopped callback overtook stream-started (separate requests): in the timeline
        _E.STREAM_STOPPED: Noted("stream stopped before its start was seen"),
        _E.DTMF: Noted(),
        _E.COMPLETED: To(_S.COMPLETED),
        _E.BUSY: Late(),
        _E.NO_ANSWER: Late(),
        _E.FAILED: To(_S.FAILED),
        _E.CANCELED: Late(),
        _E.INTERRUPTED: To(_S.FAILED),
    },
    _S.STREAMING: {
        _E.QUEUED: Noted(),
        _E.INITIATED: Noted(),
        _E.RINGING: Late(),
        _E.ANSWERED: Late(),
        _E.STREAM_STARTED: Noted("confirms: already streaming"),
        # forward only: the call stays `streaming` (Twilio runs the verbs after </Connect>, then ends it)
        _E.STREAM_STOPPED: Noted(STREAM_STOPPED),
        _E.DTMF: Noted(),
        _E.COMPLETED: To(_S.COMPLETED),
        _E.BUSY: Late(),
        _E.NO_ANSWER: Late(),
        _E.FAILED: To(_S.FAILED),
        _E.CANCELED: Late(),
        _E.INTERRUPTED: To(_S.FAILED),
    },
    _S.COMPLETED: ABSORBS_ALL,
    _S.BUSY: ABSORBS_ALL,
    _S.NO_ANSWER: ABSORBS_ALL,
    _S.FAILED: ABSORBS_ALL,
    _S.CANCELED: ABSORBS_ALL,
}

#: The states a call ends in: their rows absorb everything.
TERMINAL_STATES: Final = frozenset(s for s, row in LIFECYCLE.items() if row is ABSORBS_ALL)


# -- where events come from ----------------------------------------------------------------------

#: Twilio CallStatus (status callback, or the carrier's answer when reconciling) -> event type.
CALL_STATUS_EVENTS: Final = {
    "queued": _E.QUEUED,
    "initiated": _E.INITIATED,
    "ringing": _E.RINGING,
    "in-progress": _E.ANSWERED,
    "completed": _E.COMPLETED,
    "busy": _E.BUSY,
    "no-answer": _E.NO_ANSWER,
    "failed": _E.FAILED,
    "canceled": _E.CANCELED,
}

#: <Stream statusCallback> StreamEvent -> event type.
STREAM_STATUS_EVENTS: Final = {
    "stream-started": _E.STREAM_STARTED,
    "stream-stopped": _E.STREAM_STOPPED,
    "stream-error": _E.STREAM_STOPPED,
}

#: (source, raw type) -> event type, for sources whose vocabulary is not a Twilio status.
OTHER_EVENTS: Final = {
    ("rest", "queued"): _E.QUEUED,
    ("rest", "create_failed"): _E.FAILED,
    ("media", "start"): _E.STREAM_STARTED,
    ("media", "stop"): _E.STREAM_STOPPED,
    ("media", "ws_closed"): _E.STREAM_STOPPED,
    ("media", "dtmf"): _E.DTMF,
    ("local", "interrupted"): _E.INTERRUPTED,
    ("local", "reconciled_completed"): _E.COMPLETED,
    ("reconcile", "stream_lost"): _E.STREAM_STOPPED,  # the stream died with a previous server process
    ("reconcile", "interrupted"): _E.INTERRUPTED,
}

#: Facts recorded on a call that are not lifecycle events: stored as they are, never judged here.
NOTES: Final = frozenset(
    {
        ("rest", "hangup"),  # we asked the carrier to end it; its callback will say when it did
        ("voice", "incoming"),  # the voice webhook created the (ringing) inbound call
        ("reconcile", "unsettled"),  # the carrier could not say how the call is (why in the payload)
        ("reconcile", "worker_lost"),  # its worker stopped or went quiet: another took it over
        ("local", "worker_claimed"),  # the call holds a session on this worker (orchestrator.workers)
        ("local", "refused_busy"),  # the model was busy: the caller heard a spoken busy
        ("local", "backend_ended"),  # the speech backend could not go on (budget, dead worker)
        ("local", "media_error"),  # the media session failed on our side
        ("local", "media_config"),  # the settings that shaped the call's media path (replay reads them)
        ("local", "replay_of"),  # this call replays another's recorded caller (orchestrator replay)
        ("local", "replayed_as"),  # this call's caller was replayed as another call
        ("media", "long_gap"),  # inbound audio paused longer than the gap the bridge pads
        ("media", "protocol_error"),  # the stream broke the protocol; it is then ended (ws_closed)
    }
)


class Note:
    """What `classify` answers for a raw event in `NOTES`."""


NOTE: Final = Note()


def classify(source: str, raw_type: str) -> EventType | Note | None:
    """The lifecycle event a raw event is, `NOTE` when it is a note, None when nothing knows it."""
    if source == "status_callback" or (source == "reconcile" and raw_type in CALL_STATUS_EVENTS):
        return CALL_STATUS_EVENTS.get(raw_type)
    if source == "stream_status":
        return STREAM_STATUS_EVENTS.get(raw_type)
    if (source, raw_type) in NOTES:
        return NOTE
    return OTHER_EVENTS.get((source, raw_type))


# -- judging -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndMedia:
    """Effect: the call is over at the carrier; a live media session for it must stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class EvaluateCall:
    """Effect: decide the call's criteria from its evidence (media's end does it when a stream was live)."""


Effect = EndMedia | EvaluateCall


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
    effects: tuple[Effect, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.state is not self.previous


def handle(state: CallState, event: CallEvent) -> Outcome:
    """Judge `event` against a call in `state`. Never raises for remote events."""
    if not isinstance(event.type, EventType):
        raise LifecycleError(f"unknown event type {event.type!r}: this is a bug in the caller")
    rule = LIFECYCLE[state][event.type]
    if isinstance(rule, To):
        effects: tuple[Effect, ...] = ()
        if rule.state.terminal:
            effects = (EndMedia(f"call {rule.state.value}"), EvaluateCall())
        return Outcome(True, rule.state, state, rule.note, effects)
    if isinstance(rule, Noted):
        return Outcome(True, state, state, rule.note)
    if isinstance(rule, Late):
        return Outcome(False, state, state, f"stale: {event.type.value} after {state.value}")
    if isinstance(rule, CannotFollow):
        return Outcome(False, state, state, f"stale: {event.type.value} cannot follow {state.value}")
    return Outcome(False, state, state, f"terminal: call already {state.value}")


def moves(state: CallState, kind: EventType) -> bool:
    """Would `kind` move a call in `state` (forward: nothing here moves back)?"""
    return isinstance(LIFECYCLE[state][kind], To)
