"""Twilio webhooks: call-progress callbacks, `<Stream>` status callbacks and the voice webhook.

Every request is checked against `X-Twilio-Signature` with the `twilio` package's RequestValidator, over
the URL Twilio requested, which we rebuild from PUBLIC_URL (behind a tunnel, `request.url` has the
wrong scheme, host and port). A bad or missing signature is answered 403 and still stored as a
rejected event. Handlers store the event and answer: no slow work here (Twilio times out at 15 s and
retries), follow-ups are spawned.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator

from orchestrator.service import Recorded
from orchestrator.settings import mask_number
from orchestrator.twiml import busy_twiml, stream_twiml
from orchestrator.web.app import STATE, AppState

log = logging.getLogger(__name__)
BUSY_MESSAGE = "Sorry, Moshi is on another call. Please try again in a few minutes."


def public_request_url(state: AppState, request: web.Request) -> str:
    """The URL Twilio signed: our public base + the path and query it requested."""
    base = (state.settings.public_url or f"http://{request.host}").rstrip("/")
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{parts.path}{request.rel_url}"


def signature_problem(state: AppState, request: web.Request, params: Any) -> str | None:
    """None when the signature is valid for our public URL; else why not (one line, no secrets)."""
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        return "bad signature: missing X-Twilio-Signature"
    token = state.settings.twilio_auth_token
    if not token:
        return "bad signature: TWILIO_AUTH_TOKEN not configured, cannot verify"
    validator = RequestValidator(token)
    expected_url = public_request_url(state, request)
    if validator.validate(expected_url, params, signature):
        return None
    if validator.validate(str(request.url), params, signature):
        log.warning(
            "rejected %s: signature is valid only for the local URL %s; expected it for %s "
            "(is PUBLIC_URL the tunnel's URL?)", request.path, request.url, expected_url,
        )
    else:
        log.warning("rejected %s: bad X-Twilio-Signature for %s", request.path, expected_url)
    return "bad signature"


def _dedupe_key(form: MultiDictProxy[Any], request: web.Request, *extra: str) -> str | None:
    sid = form.get("CallSid")
    seq = form.get("SequenceNumber")
    if sid and seq is not None:
        return f"{sid}:{seq}"
    if sid and extra and all(extra):
        return ":".join([sid, *extra])
    return request.headers.get("I-Twilio-Idempotency-Token")


async def _record_callback(request: web.Request, *, source: str, type_key: str, endpoint: str,
                           extra_key: tuple[str, ...] = ()) -> tuple[web.Response, Recorded]:
    state = request.app[STATE]
    form = await request.post()
    payload: dict[str, Any] = {k: form.getall(k) if len(form.getall(k)) > 1 else form[k] for k in form}
    token = request.headers.get("I-Twilio-Idempotency-Token")
    if token:
        payload["_idempotency_token"] = token
    problem = signature_problem(state, request, form)
    call_id = request.query.get("call_id")
    call_sid = form.get("CallSid")
    raw_type = str(form.get(type_key) or "unknown")
    rec = await state.service.record(
        source=source, type=raw_type, payload=payload, call_id=call_id, call_sid=call_sid,
        dedupe_key=_dedupe_key(form, request, *[str(form.get(k) or "") for k in extra_key]),
        rejected=problem,
    )
    state.prom.callbacks.labels(endpoint, "rejected" if problem else ("accepted" if rec.accepted else "ignored")).inc()
    if rec.call is not None:
        state.prom.call_state(rec.call["id"], rec.call["state"])
    if problem:
        return web.Response(status=403, text="invalid signature\n"), rec
    if rec.changed and rec.outcome and "call_ended" in rec.outcome.effects and rec.call:
        session = state.sessions.get(rec.call["id"])
        if session is not None:
            state.spawn(session.remote_ended(f"call {rec.call['state']}"), f"end-{rec.call['id']}")
        else:
            from orchestrator.evaluation import evaluate_call_async

            state.spawn(evaluate_call_async(state, rec.call["id"]), f"evaluate-{rec.call['id']}")
    return web.Response(status=204), rec


async def status_callback(request: web.Request) -> web.Response:
    response, _ = await _record_callback(request, source="status_callback", type_key="CallStatus",
                                         endpoint="status")
    return response


async def stream_status_callback(request: web.Request) -> web.Response:
    response, _ = await _record_callback(request, source="stream_status", type_key="StreamEvent",
                                         endpoint="stream-status", extra_key=("StreamSid", "StreamEvent"))
    return response


async def voice_webhook(request: web.Request) -> web.Response:
    """A call to our number: create the inbound call and answer with TwiML (or a spoken busy)."""
    state = request.app[STATE]
    form = await request.post()
    payload = {k: form[k] for k in form}
    problem = signature_problem(state, request, form)
    call_sid = str(form["CallSid"]) if "CallSid" in form else None
    if problem:
        await state.service.record(source="voice", type="incoming", payload=payload, call_sid=call_sid,
                                   rejected=problem)
        state.prom.callbacks.labels("voice", "rejected").inc()
        return web.Response(status=403, text="invalid signature\n")
    settings = state.settings
    public_url = settings.public_url or f"http://{request.host}"
    busy = state.backend.busy
    facts = dict(state.facts)

    def create(service: Any) -> Any:
        existing = service.store.find_call(call_sid=call_sid) if call_sid else None
        call = existing or service.store.create_call(
            direction="inbound", to_number=form.get("To"), from_number=form.get("From"), call_sid=call_sid,
            backend=state.backend.name, say_text=None if busy else settings.greeting, facts=facts,
            state="ringing",
        )
        service.record(source="voice", type="incoming", payload=payload, call_id=call["id"], call_sid=call_sid,
                       dedupe_key=f"{call_sid}:voice" if call_sid else None)
        return call

    call = await state.service.run(create)
    state.prom.callbacks.labels("voice", "accepted").inc()
    log.info("inbound call %s from %s", call["id"], mask_number(str(form.get("From") or "")))
    if busy:
        await state.service.record(source="local", type="refused_busy", call_id=call["id"],
                                   payload={"reason": "model busy with another call"})
        return web.Response(text=busy_twiml(BUSY_MESSAGE), content_type="text/xml")
    twiml = stream_twiml(public_url, call_id=call["id"], token=call["token"], say=settings.greeting)
    return web.Response(text=twiml, content_type="text/xml")
