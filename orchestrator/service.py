"""The service: the one place that turns a raw event into stored state.

For every event: store it raw (before anything can go wrong), find the call, drop duplicates, judge it
with the lifecycle, save the new state and the transition, record the verdict on the event, and return
what happened so the caller can run the effects. All of it runs on one thread (the store's writer), so
read-judge-write cannot interleave between two events of the same call.

Entrypoints name what they do (`create_inbound_call`, `authorize_start`, `attach_stream`,
`note_backend_ended`, `save_media_results`, ...) and never touch the store themselves. The server
reaches this through `orchestrator.writer.AsyncService`, the same API as coroutines on one writer thread.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator import lifecycle
from orchestrator.criteria import Verdict
from orchestrator.lifecycle import CallEvent, CallState, EventType, Outcome
from orchestrator.redact import without_secrets
from orchestrator.settings import log_safe
from orchestrator.store import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from orchestrator.stores import AnyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `record()` did with one event."""

    event_id: int
    accepted: bool
    reason: str | None
    call: dict[str, Any] | None  # the call row after the event (None: unknown call)
    outcome: Outcome | None = None

    @property
    def changed(self) -> bool:
        return bool(self.outcome and self.outcome.changed)


class CallService:
    def __init__(self, store: AnyStore) -> None:
        self.store = store
        self._facts_cache: tuple[int, dict[str, Any]] | None = None

    def record(
        self,
        *,
        source: str,
        type: str,
        payload: dict[str, Any] | None = None,
        call_id: str | None = None,
        call_sid: str | None = None,
        dedupe_key: str | None = None,
        at: datetime | None = None,
        rejected: str | None = None,
        detail: str | None = None,
        known_call: dict[str, Any] | None = None,
    ) -> Recorded:
        """Store one raw event, then judge and apply it. `rejected` stores it as refused (bad signature).

        `known_call`: the call these identifiers name, read in this same transaction (`check_identity`),
        so it is not read again.

        One transaction: the raw row first, then the judgement inside a savepoint. If judging fails
        (a bug), the savepoint is rolled back, the raw event is kept with the error as its reason and
        committed, and the error is raised. The caller answers only after the commit, so a callback
        that got its 2xx is on disk; one that did not is retried by Twilio.
        """
        at = at or utcnow()
        payload = payload or {}
        store = self.store
        with store.atomic():  # inside the writer's batch: no savepoint of its own (the judging has one)
            event_id = store.insert_event(
                source=source,
                type=type,
                at=at,
                payload=payload,
                call_id=call_id,
                call_sid=call_sid,
                dedupe_key=dedupe_key,
            )
            try:
                with store.savepoint():
                    recorded = self._judge(
                        event_id,
                        source=source,
                        type=type,
                        call_id=call_id,
                        call_sid=call_sid,
                        dedupe_key=dedupe_key,
                        at=at,
                        rejected=rejected,
                        detail=detail,
                        known_call=known_call,
                    )
            except Exception as exc:  # keep the raw event (committed below), then let the error out
                store.judge_event(
                    event_id,
                    accepted=False,
                    reason=f"error: {exc.__class__.__name__}: {exc}"[:500],
                    call_id=None,
                )
                failure: Exception | None = exc
            else:
                failure = None
        if failure is not None:
            raise failure
        return recorded

    def _judge(
        self,
        event_id: int,
        *,
        source: str,
        type: str,
        call_id: str | None,
        call_sid: str | None,
        dedupe_key: str | None,
        at: datetime,
        rejected: str | None,
        detail: str | None,
        known_call: dict[str, Any] | None = None,
    ) -> Recorded:
        store = self.store
        if source == "server" and not rejected:  # facts about the server itself, not about a call
            store.judge_event(event_id, accepted=True, reason=None, call_id=None)
            return Recorded(event_id, True, None, None)
        call = known_call or store.find_call(call_id=call_id, call_sid=call_sid)
        cid = call["id"] if call else None
        if rejected:
            store.judge_event(event_id, accepted=False, reason=rejected, call_id=cid)
            return Recorded(event_id, False, rejected, call)
        if call is None:
            reason = "unknown call"
            store.judge_event(event_id, accepted=False, reason=reason, call_id=None)
            log.warning(
                "event %s/%s for unknown call (id=%s sid=%s) stored",
                log_safe(source),
                log_safe(type),
                log_safe(call_id),
                log_safe(call_sid),
            )
            return Recorded(event_id, False, reason, None)
        if dedupe_key and store.dedupe_seen(dedupe_key, event_id):
            store.judge_event(event_id, accepted=False, reason="duplicate", call_id=cid)
            return Recorded(event_id, False, "duplicate", call)
        kind = lifecycle.classify(source, type)
        if kind is None:
            reason = f"unknown event {source}/{type}"
            store.judge_event(event_id, accepted=False, reason=reason, call_id=cid)
            return Recorded(event_id, False, reason, call)
        updates: dict[str, Any] = {}
        if call_sid and not call.get("call_sid"):
            updates["call_sid"] = call_sid
        if isinstance(kind, lifecycle.Note):  # a fact about the call, not a lifecycle event: kept as it is
            if updates:
                store.update_call(call["id"], **updates)
                call = {**call, **updates}
            store.judge_event(event_id, accepted=True, reason=None, call_id=cid)
            return Recorded(event_id, True, None, call)
        state = CallState(call["state"])
        outcome = lifecycle.handle(state, CallEvent(kind, at, source, detail))
        if outcome.changed:
            updates["state"] = outcome.state.value
            store.record_transition(
                call["id"],
                from_state=state.value,
                to_state=outcome.state.value,
                trigger=f"{source}:{type}",
                at=at,
                event_id=event_id,
            )
            if outcome.state.terminal:
                updates["ended_at"] = iso(at)
                if detail or not call.get("end_reason"):
                    updates["end_reason"] = detail or f"{source}:{type}"
        if updates:
            store.update_call(call["id"], **updates)
            call = {**call, **updates}
        store.judge_event(event_id, accepted=outcome.accepted, reason=outcome.reason, call_id=cid)
        return Recorded(event_id, outcome.accepted, outcome.reason, call, outcome)

    def identity_problem(self, call_id: str | None, call_sid: str | None) -> str | None:
        """Why a request naming our call id *and* a CallSid cannot be applied (None: they agree).

        They disagree when the call named by `call_id` already has another CallSid, or the CallSid
        belongs to another call (also when `call_id` names no call at all: the request is not that
        call's either). Applying such a request to either call would let one captured signature move
        any call, and keying it by the CallSid would spend the other call's duplicate key. Both values
        are validated identifiers by the time they get here (see `orchestrator.settings`).
        """
        return self.check_identity(call_id, call_sid)[0]

    def check_identity(
        self, call_id: str | None, call_sid: str | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """`identity_problem`, and the call when they agree (read once, locked in a transaction on
        PostgreSQL: `record(known_call=...)` then judges it without reading it again)."""
        if not call_id or not call_sid:
            return None, None
        rows = self.store.find_calls(call_id=call_id, call_sid=call_sid)
        by_id = next((r for r in rows if r["id"] == call_id), None)
        by_sid = next((r for r in rows if r["call_sid"] == call_sid), None)
        if by_id is not None and by_id["call_sid"] and by_id["call_sid"] != call_sid:
            return (
                f"identity mismatch: call_id {call_id} has CallSid {by_id['call_sid']}, the request says {call_sid}",
                None,
            )
        if by_sid is not None and (by_id is None or by_sid["id"] != by_id["id"]):
            return (
                f"identity mismatch: CallSid {call_sid} belongs to call {by_sid['id']}, not {call_id}",
                None,
            )
        return None, by_id or by_sid

    def stream_ended(self, call: dict[str, Any]) -> bool:
        """Whether the call's last accepted stream event says its stream stopped (a `streaming` call
        stays `streaming` after its stream ends: the lifecycle only moves forward)."""
        for e in reversed(self.store.events_for(call)):
            if e["accepted"]:
                kind = lifecycle.classify(e["source"], e["type"])
                if kind is EventType.STREAM_STOPPED:
                    return True
                if kind is EventType.STREAM_STARTED:
                    return False
        return False

    # -- what the server's handlers do ---------------------------------------------------------------

    def find_call(self, *, call_id: str | None = None, call_sid: str | None = None) -> dict[str, Any] | None:
        return self.store.find_call(call_id=call_id, call_sid=call_sid)

    def create_inbound_call(
        self,
        *,
        call_sid: str | None,
        to_number: str | None,
        from_number: str | None,
        backend: str,
        say_text: str | None,
        facts: dict[str, Any],
        payload: dict[str, Any],
    ) -> dict[str, Any]:
        """A call to our number (the voice webhook): created `ringing`, once per CallSid (a retried
        webhook finds the call it made), with the `voice/incoming` note."""
        existing = self.store.find_call(call_sid=call_sid) if call_sid else None
        call = existing or self.store.create_call(
            direction="inbound",
            to_number=to_number,
            from_number=from_number,
            call_sid=call_sid,
            backend=backend,
            say_text=say_text,
            facts=facts,
            state="ringing",
        )
        self.record(
            source="voice",
            type="incoming",
            payload=payload,
            call_id=call["id"],
            call_sid=call_sid,
            dedupe_key=f"{call_sid}:voice" if call_sid else None,
        )
        return call

    def authorize_start(
        self, call_id: str, token: str | None, call_sid: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The call a media `start` names, and why it may not stream now (None: it may).

        The per-call token must match, the start's CallSid must be that call's, and the call must not
        have ended. Whether a stream is already open for it is the server's to know, not the store's.
        """
        call = self.store.find_call(call_id=call_id)
        if call is None:
            return None, f"unknown call id {log_safe(call_id, 40)} in start.customParameters"
        if not token or not secrets.compare_digest(token.encode(), str(call["token"]).encode()):
            return call, "wrong or missing per-call token in start.customParameters"
        mismatch = self.identity_problem(call_id, call_sid)
        if mismatch:
            return call, f"start.callSid: {mismatch}"
        if CallState(call["state"]).terminal:
            return call, f"call already {call['state']}: no stream for a call that has ended"
        return call, None

    def attach_stream(self, call_id: str, *, stream_sid: str, recording_path: str | None) -> None:
        """The call's stream went live: remember its StreamSid and where its recording goes."""
        self.store.update_call(call_id, stream_sid=stream_sid, recording_path=recording_path)

    def note_backend_ended(self, call_id: str, reason: str) -> Recorded:
        """The speech backend could not go on (budget spent, dead worker): a note, and the call's end reason."""
        with self.store.transaction():
            rec = self.record(
                source="local",
                type="backend_ended",
                call_id=call_id,
                payload={"reason": reason},
                detail=reason,
            )
            self.store.update_call(call_id, end_reason=reason)
        return rec

    def save_media_results(
        self,
        call_id: str,
        *,
        metrics: Mapping[str, float | None],
        units: Mapping[str, str],
        summary: dict[str, Any],
        transcript: list[tuple[float, str]],
    ) -> None:
        """What the end-of-call analysis found: metrics, the report's summary and the transcript, at once."""
        with self.store.transaction():
            self.store.put_metrics(call_id, metrics, units)
            self.store.put_analysis(call_id, summary)
            self.store.add_transcript(call_id, transcript)

    def save_evaluation(
        self,
        call_id: str,
        *,
        metrics: Mapping[str, float | None],
        units: Mapping[str, str],
        verdicts: Sequence[Verdict],
    ) -> None:
        """The call-level metrics and the automatic verdicts (replacing earlier automatic ones), at once."""
        with self.store.transaction():
            self.store.put_metrics(call_id, metrics, units)
            for v in verdicts:
                self.store.add_check(call_id, v.criterion, v.status, v.evidence, "auto")

    def unfinished_calls(self, *, quiet_before: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.unfinished_calls(quiet_before=quiet_before, limit=limit)

    def last_event(self, call_id: str, source: str) -> dict[str, Any] | None:
        return self.store.last_event(call_id, source)

    def forget_recordings(self, removed: Iterable[tuple[str, str]]) -> None:
        """(call id, path) of recordings removed from disk: their calls no longer point at them."""
        for call_id, path in removed:
            self.store.forget_recording(call_id, path)

    # -- documents ----------------------------------------------------------------------------------

    def server_facts(self) -> dict[str, Any]:
        """What the last server start recorded (bound address, public URL, tunnel health, model load)."""
        row = self.store.server_event("listening")
        if row is None:
            return {}
        if self._facts_cache is None or self._facts_cache[0] != row[0]:
            self._facts_cache = (row[0], json.loads(row[1]))
        return dict(self._facts_cache[1])

    def document(self, ref: str) -> dict[str, Any]:
        """The `orchestrator show CALL --json` document."""
        store = self.store
        call = store.get_call(ref)
        facts = {**self.server_facts(), **json.loads(call.get("facts") or "{}")}
        doc_call = {
            "id": call["id"],
            "call_sid": call["call_sid"],
            "direction": call["direction"],
            "to": call["to_number"],
            "from": call["from_number"],
            "state": call["state"],
            "run": store.run_label(call["run_id"]),
            "created_at": call["created_at"],
            "ended_at": call["ended_at"],
            "end_reason": call["end_reason"],
            "backend": call["backend"],
            "say_text": call["say_text"],
            "recording_path": call["recording_path"],
            "worker": call.get("worker"),  # the worker whose session it held (orchestrator.workers)
            "stream_sid": call["stream_sid"],
        }
        events = [
            {
                "id": e["id"],
                "source": e["source"],
                "type": e["type"],
                "at": e["at"],
                "accepted": None if e["accepted"] is None else bool(e["accepted"]),
                "reason": e["reason"],
                "payload": without_secrets(json.loads(e["payload"] or "{}")),
            }
            for e in store.events_for(call)
        ]
        return {
            "call": doc_call,
            "transitions": [
                {"from": t["from_state"], "to": t["to_state"], "trigger": t["trigger"], "at": t["at"]}
                for t in store.transitions_for(call["id"])
            ],
            "events": events,
            "metrics": store.metrics_for(call["id"]),
            "metric_units": store.metric_units_for(call["id"]),
            "checks": [
                {
                    "criterion": c["criterion"],
                    "status": c["status"],
                    "evidence": c["evidence"],
                    "decided_by": c["decided_by"],
                    "note": c["note"],
                    "at": c["at"],
                }
                for c in store.checks_for(call["id"])
            ],
            "facts": facts,
            "analysis": store.analysis_for(call["id"]) or {},
            "transcript": store.transcript_for(call["id"]),
        }


def relative_ms(at: str, origin: str) -> float:
    return (parse_iso(at) - parse_iso(origin)).total_seconds() * 1000.0
