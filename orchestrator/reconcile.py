"""Reconciliation: every unfinished call is settled from what the carrier says, never left silently.

Twilio does not retry status callbacks by default, so a `completed` that arrives while the server is
down is lost and the call would stay `in-progress` for ever (7 of 31 calls did, over 13 crashes). At
start, and then every RECONCILE_INTERVAL_S for calls quiet that long, every unfinished call without a
live media session in this process is fetched from the carrier's REST API (`GET Calls/{sid}.json`):

- the carrier says it ended: it is settled with the carrier's status at the carrier's end time (event
  source `reconcile`, transition trigger `reconcile:<status>`, an end reason that names the carrier);
- the carrier says it is still live: a `streaming` call whose stream was still open lost it with the
  old process (`stream_lost`, once: a timeline event, the call stays `streaming` and goes on); an
  answer we missed is applied; it is asked again the next round;
- the carrier cannot say (not configured, unreachable, no such call): an `unsettled` event says why
  (recorded again only when the why changes) and it is asked again the next round; a call still
  unfinished past MAX_CALL_SECONDS + 600 s is settled `interrupted` (failed), with why.

`plan()` holds these rules and is pure (no I/O, no clock); `reconcile_call()` applies them on the
store's writer thread; `Reconciler` is the server's shell around both.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.errors import CarrierError, SettingsError
from orchestrator.lifecycle import CALL_STATUS_EVENTS, TERMINAL_STATES, CallState, moves
from orchestrator.service import CallService, Recorded
from orchestrator.settings import log_safe
from orchestrator.store import iso, parse_iso, utcnow
from orchestrator.twilio_rest import CarrierCall

if TYPE_CHECKING:
    from orchestrator.web.state import AppState

log = logging.getLogger(__name__)

GRACE_S = 600.0  # past MAX_CALL_SECONDS + this, nothing can still be happening to a call


@dataclass(frozen=True, slots=True)
class CarrierAnswer:
    """The carrier's view of one call, or why there is none."""

    call: CarrierCall | None
    why: str | None = None  # set when `call` is None
    unreachable: bool = False  # no answer at all: the rest of this round need not ask again


@dataclass(frozen=True, slots=True)
class Step:
    """One event to record for the call (source `reconcile`)."""

    type: str
    detail: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None  # None: now


def carrier_payload(c: CarrierCall) -> dict[str, Any]:
    return {
        "carrier_status": c.status,
        "start_time": iso(c.start_time) if c.start_time else None,
        "end_time": iso(c.end_time) if c.end_time else None,
        "duration_s": c.duration_s,
    }


def plan(
    call: Mapping[str, Any],
    answer: CarrierAnswer,
    *,
    now: datetime,
    max_call_seconds: float,
    last_unsettled_why: str | None = None,
    stream_ended: bool = False,
) -> list[Step]:
    """What to record for an unfinished call (without a live media session here) given the carrier's answer.

    `stream_ended`: the call's last stream event says its stream stopped (so it is not lost now)."""
    state = CallState(call["state"])
    stream_lost = state is CallState.STREAMING and not stream_ended
    if state.terminal:
        return []
    carrier = answer.call
    if carrier is not None:
        payload = carrier_payload(carrier)
        if (
            carrier.status in TERMINAL_STATES
        ):  # Twilio's final CallStatus values are our terminal states' names
            ended = carrier.end_time
            detail = f"reconciled: the carrier reports {carrier.status}" + (
                f", ended {iso(ended)}" if ended else ""
            )
            return [Step(carrier.status, detail, payload, at=ended)]
        steps = []
        if stream_lost:
            steps.append(Step("stream_lost", payload={**payload, "why": _STREAM_LOST}))
        said = CALL_STATUS_EVENTS.get(carrier.status)
        if said is not None and moves(state, said):  # an answer (or ringing) we never heard of
            steps.append(Step(carrier.status, payload=payload))
        return steps
    why = answer.why or "the carrier could not say"
    age_s = (now - parse_iso(call["created_at"])).total_seconds()
    if age_s > max_call_seconds + GRACE_S:
        return [
            Step(
                "interrupted",
                f"interrupted: still {state.value} past MAX_CALL_SECONDS + {GRACE_S:.0f} s, and "
                f"the carrier could not say how it ended ({why})",
                {"found_state": state.value, "why": why},
            )
        ]
    steps = []
    if stream_lost:
        steps.append(Step("stream_lost", payload={"why": _STREAM_LOST}))
    if why != last_unsettled_why:
        steps.append(Step("unsettled", payload={"found_state": state.value, "why": why}))
    return steps


_STREAM_LOST = "no media session in this server process: the stream was lost when the previous one stopped"


def reconcile_call(
    service: CallService,
    call_id: str,
    answer: CarrierAnswer,
    *,
    max_call_seconds: float,
    now: datetime | None = None,
) -> list[Recorded]:
    """Apply `plan()` to the call as it is now (run on the store's writer thread)."""
    call = service.find_call(call_id=call_id)
    if call is None:
        return []
    last = service.last_event(call_id, "reconcile")
    last_why = (
        json.loads(last["payload"] or "{}").get("why") if last and last["type"] == "unsettled" else None
    )
    now = now or utcnow()
    done = []
    for step in plan(
        call,
        answer,
        now=now,
        max_call_seconds=max_call_seconds,
        last_unsettled_why=last_why,
        stream_ended=service.stream_ended(call),
    ):
        rec = service.record(
            source="reconcile",
            type=step.type,
            call_id=call_id,
            call_sid=call["call_sid"],
            payload=step.payload,
            at=step.at or now,
            detail=step.detail,
        )
        if step.detail:
            log.info("call %s: %s", call_id, step.detail)
        elif step.type in ("unsettled", "stream_lost"):
            log.warning("call %s (%s): %s: %s", call_id, call["state"], step.type, step.payload.get("why"))
        done.append(rec)
    return done


Fetch = Callable[[str], CarrierCall]


def ask(fetch: Fetch | None, why_not: str | None, call: Mapping[str, Any]) -> CarrierAnswer:
    """Ask the carrier about one call (blocking: run it in a thread)."""
    if fetch is None:
        return CarrierAnswer(None, why_not or "the carrier cannot be asked")
    sid = call.get("call_sid")
    if not sid:
        return CarrierAnswer(None, "no CallSid was recorded for this call: the carrier cannot be asked")
    try:
        return CarrierAnswer(fetch(str(sid)))
    except CarrierError as exc:
        return CarrierAnswer(None, log_safe(exc, 200), unreachable=exc.unreachable)
    except Exception as exc:  # a bug or a surprise in the client: the call is still marked, with why
        return CarrierAnswer(None, log_safe(f"{exc.__class__.__name__}: {exc}", 200))


class Reconciler:
    """The server's reconciliation rounds: one at start, then one every `interval_s`."""

    def __init__(
        self, state: AppState, fetch: Fetch | None, why_not: str | None = None, batch: int = 100
    ) -> None:
        self.state, self.fetch, self.why_not, self.batch = state, fetch, why_not, batch

    @classmethod
    def for_state(cls, state: AppState) -> Reconciler:
        from orchestrator.twilio_rest import fetch_call, make_client

        try:
            client = make_client(state.settings)
        except SettingsError as exc:
            return cls(state, None, f"the carrier cannot be asked: {exc}")
        return cls(state, functools.partial(fetch_call, client))

    async def round(self, *, quiet_s: float | None = None) -> list[Recorded]:
        """Reconcile the unfinished calls (only those quiet for `quiet_s`, when given)."""
        state = self.state
        quiet_before = iso(utcnow() - timedelta(seconds=quiet_s)) if quiet_s else None
        calls = await state.service.unfinished_calls(quiet_before=quiet_before, limit=self.batch)
        if state.settings.worker is not None:  # another worker that is up follows its own calls
            from orchestrator.workers import others_up

            me, stale_s = state.settings.worker, state.settings.worker_stale_s
            others = await state.service.run(lambda s: others_up(s, me, stale_s=stale_s))
            calls = [c for c in calls if c.get("worker") not in others]
        return await self.settle(calls)

    async def settle(self, calls: list[dict[str, Any]]) -> list[Recorded]:
        """Ask the carrier about each call (but those with a live media session here) and apply `plan()`."""
        state = self.state
        unreachable: CarrierAnswer | None = None
        done: list[Recorded] = []
        for call in calls:
            if call["id"] in state.sessions:  # followed live by this process
                continue
            if unreachable is not None:
                answer = unreachable
            else:
                answer = await asyncio.to_thread(ask, self.fetch, self.why_not, call)
                unreachable = answer if answer.unreachable else None
            recs = await state.service.run(
                functools.partial(
                    reconcile_call,
                    call_id=call["id"],
                    answer=answer,
                    max_call_seconds=state.settings.max_call_seconds,
                )
            )
            self._effects(call["id"], recs)
            done.extend(recs)
        return done

    def _effects(self, call_id: str, recs: list[Recorded]) -> None:
        from orchestrator.web.effects import run_effects

        for rec in recs:
            if rec.call is not None:
                self.state.prom.call_state(call_id, rec.call["state"])
            run_effects(self.state, rec)

    async def run(self, interval_s: float) -> None:
        """A round now, then one every `interval_s` for calls quiet that long. Never raises."""
        await self._safe_round(None)
        while interval_s > 0:
            await asyncio.sleep(interval_s)
            await self._safe_round(interval_s)

    async def _safe_round(self, quiet_s: float | None) -> None:
        try:
            await self.round(quiet_s=quiet_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round tries again; one failed round must not end reconciliation
            log.exception("reconciliation round failed; retrying in the next round")
