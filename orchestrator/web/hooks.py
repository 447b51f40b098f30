"""Twilio webhooks: call-progress callbacks, `<Stream>` status callbacks and the voice webhook.

Every request is checked against `X-Twilio-Signature` (orchestrator.web.signing: over the URL Twilio
requested, rebuilt from PUBLIC_URL, since behind a tunnel `request.url` has the wrong scheme, host and
port). A bad or missing signature is answered 403 and still stored as a
rejected event. Handlers store the event and answer: no slow work here (Twilio times out at 15 s and
retries), follow-ups are spawned.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from orchestrator.redact import without_secrets
from orchestrator.service import CallService, Recorded
from orchestrator.settings import log_safe, mask_number, valid_call_id, valid_sid
from orchestrator.twiml import BUSY_MESSAGE as BUSY_MESSAGE  # re-exported: tests read it here
from orchestrator.twiml import busy_twiml, stream_twiml
from orchestrator.web.effects import run_effects
from orchestrator.web.signing import signature_problem
from orchestrator.web.state import STATE
from orchestrator.workers import take_inbound

log = logging.getLogger(__name__)


def _dedupe_key(form: MultiDictProxy[Any], request: web.Request, *extra: str) -> str | None:
    sid = form.get("CallSid")
    seq = form.get("SequenceNumber")
    if sid and seq is not None:
        return f"{sid}:{seq}"
    if sid and extra and all(extra):
        return ":".join([sid, *extra])
    return request.headers.get("I-Twilio-Idempotency-Token")


#: Form fields that carry Twilio identifiers, and the kind each must be.
_ID_FIELDS = {"CallSid": "CA", "ParentCallSid": "CA", "AccountSid": "AC", "StreamSid": "MZ"}


def identifier_problem(call_id: str | None, form: Any) -> str | None:
    """Why the identifiers of a request are not what Twilio (or we) would send; None when they are."""
    if call_id is not None and not valid_call_id(call_id):
        return f"invalid call_id {log_safe(call_id, 40)} in the query"
    for name, kind in _ID_FIELDS.items():
        values = form.getall(name, [])
        if len(values) > 1:
            return f"{name} given {len(values)} times"
        if values and not valid_sid(kind, values[0]):
            return f"invalid {name} {log_safe(values[0], 40)}: expected {kind} and 32 hex digits"
    return None


def _payload(form: Any, token: str | None, *, clean: bool) -> dict[str, Any]:
    """The form as stored: secrets (Twilio's CallToken) never; an invalid identifier escaped and
    shortened, never raw."""
    payload: dict[str, Any] = without_secrets(
        {k: form.getall(k) if len(form.getall(k)) > 1 else form[k] for k in form}
    )
    if not clean:
        for name in _ID_FIELDS:
            if name in payload:
                payload[name] = log_safe(payload[name], 64)
    if token:
        payload["_idempotency_token"] = log_safe(token, 128)
    return payload


async def _record_callback(
    request: web.Request, *, source: str, type_key: str, endpoint: str, extra_key: tuple[str, ...] = ()
) -> tuple[web.Response, Recorded]:
    state = request.app[STATE]
    form = await request.post()
    problem = signature_problem(state.settings, request, form)
    call_id = request.query.get("call_id")
    bad_ids = identifier_problem(call_id, form)
    payload = _payload(form, request.headers.get("I-Twilio-Idempotency-Token"), clean=bad_ids is None)
    call_sid = str(form["CallSid"]) if bad_ids is None and "CallSid" in form else None
    raw_type = log_safe(form.get(type_key) or "unknown", 40)
    if bad_ids:
        call_id = None
    dedupe_key = None if bad_ids else _dedupe_key(form, request, *[str(form.get(k) or "") for k in extra_key])

    def apply(service: CallService) -> tuple[Recorded, str | None]:
        mismatch, known = (None, None) if problem or bad_ids else service.check_identity(call_id, call_sid)
        refused = problem or bad_ids or mismatch
        # a refused request spends no duplicate key: it must not hide the real callback that follows
        key = dedupe_key if refused is None or refused == problem else None
        rec = service.record(
            source=source,
            type=raw_type,
            payload=payload,
            call_id=call_id,
            call_sid=call_sid,
            dedupe_key=key,
            rejected=refused,
            known_call=known,
        )
        return rec, refused

    rec, refused = await state.service.run(apply)
    outcome = "rejected" if refused else ("accepted" if rec.accepted else "ignored")
    state.prom.callbacks.labels(endpoint, outcome).inc()
    if rec.call is not None:
        state.prom.call_state(rec.call["id"], rec.call["state"])
    if problem:
        return web.Response(status=403, text="invalid signature\n"), rec
    if refused:
        log.warning("refused %s: %s", request.path, log_safe(refused, 200))
        return web.Response(status=400, text="identifiers refused\n"), rec
    run_effects(state, rec)
    return web.Response(status=204), rec


async def status_callback(request: web.Request) -> web.Response:
    response, _ = await _record_callback(
        request, source="status_callback", type_key="CallStatus", endpoint="status"
    )
    return response


async def stream_status_callback(request: web.Request) -> web.Response:
    response, _ = await _record_callback(
        request,
        source="stream_status",
        type_key="StreamEvent",
        endpoint="stream-status",
        extra_key=("StreamSid", "StreamEvent"),
    )
    return response


async def voice_webhook(request: web.Request) -> web.Response:
    """A call to our number: create the inbound call and answer with TwiML (or a spoken busy)."""
    state = request.app[STATE]
    form = await request.post()
    problem = signature_problem(state.settings, request, form)
    bad_ids = identifier_problem(None, form) or (None if "CallSid" in form else "no CallSid")
    payload = _payload(form, None, clean=bad_ids is None)
    call_sid = str(form["CallSid"]) if bad_ids is None else None
    if problem or bad_ids:
        await state.service.record(
            source="voice", type="incoming", payload=payload, call_sid=call_sid, rejected=problem or bad_ids
        )
        state.prom.callbacks.labels("voice", "rejected").inc()
        if problem:
            return web.Response(status=403, text="invalid signature\n")
        log.warning("refused voice webhook: %s", bad_ids)
        return web.Response(status=400, text="identifiers refused\n")
    settings = state.settings
    public_url = settings.public_url or f"http://{request.host}"
    fields = {
        "call_sid": call_sid,
        "to_number": form.get("To"),
        "from_number": form.get("From"),
        "backend": state.backend.name,
        "facts": dict(state.facts),
        "payload": payload,
    }
    if settings.worker:  # any worker with a free session takes it (orchestrator.workers)
        me, stale_s = settings.worker, settings.worker_stale_s
        call, worker, busy_why = await state.service.run(
            lambda s: take_inbound(s, me, stale_s=stale_s, say_text=settings.greeting, **fields)
        )
        busy = worker is None
        public_url = (worker or {}).get("public_url") or public_url
    else:
        busy = state.backend.busy
        call = await state.service.create_inbound_call(say_text=None if busy else settings.greeting, **fields)
        busy_why = "model busy with another call"
    state.prom.callbacks.labels("voice", "accepted").inc()
    log.info("inbound call %s from %s", call["id"], mask_number(str(form.get("From") or "")))
    if busy:
        if not settings.worker:  # take_inbound recorded it with the claim
            await state.service.record(
                source="local", type="refused_busy", call_id=call["id"], payload={"reason": busy_why}
            )
        return web.Response(text=busy_twiml(BUSY_MESSAGE), content_type="text/xml")
    twiml = stream_twiml(public_url, call_id=call["id"], token=call["token"], say=settings.greeting)
    return web.Response(text=twiml, content_type="text/xml")
