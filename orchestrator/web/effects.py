"""The one dispatcher of the lifecycle's effects in the server.

`orchestrator.lifecycle.handle` says what must follow an event (`EndMedia`, `EvaluateCall`); the
handlers that record events (callbacks, reconciliation) hand the result here, never act on it
themselves. Effects run off the request path (spawned): a callback is answered once its event is
stored, not once the call's analysis is done.
"""

from __future__ import annotations

from orchestrator.evaluation import evaluate_call_async
from orchestrator.lifecycle import EndMedia, EvaluateCall
from orchestrator.service import Recorded
from orchestrator.web.state import AppState


def run_effects(state: AppState, rec: Recorded) -> None:
    """Start the effects of one recorded event.

    `EndMedia` stops the call's live media session, if this process has one. `EvaluateCall` decides
    the criteria now only when no media session is live: a live one evaluates at its own end, once
    its audio is analysed (evaluation is idempotent, but deciding twice would only cost time).
    """
    if rec.outcome is None or rec.call is None:
        return
    call_id = rec.call["id"]
    session = state.sessions.get(call_id)
    for effect in rec.outcome.effects:
        if isinstance(effect, EndMedia):
            if session is not None:
                state.spawn(session.remote_ended(effect.reason), f"end-{call_id}")
        elif isinstance(effect, EvaluateCall):
            if session is None:
                state.spawn(evaluate_call_async(state, call_id), f"evaluate-{call_id}")
