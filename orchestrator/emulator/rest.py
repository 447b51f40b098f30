"""The Twilio REST surface the carrier emulator serves (the webhooks it sends are in webhooks.py).

`create_rest_app` answers what the `twilio` package sends (create, fetch and update a Call, HTTP basic
auth, Twilio-shaped JSON and error bodies). It does not decide how a call goes (calls.py does).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any, Protocol

from aiohttp import web

from orchestrator.emulator.calls import EmulatedCall
from orchestrator.emulator.errors import ApiError
from orchestrator.emulator.wire import TERMINAL

logger = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class Carrier(Protocol):
    """What the REST surface asks of the emulator (`orchestrator.emulator.Carrier` is one)."""

    account_sid: str
    auth_token: str

    calls: dict[str, EmulatedCall]

    def place_call(
        self,
        *,
        to: str,
        from_: str,
        twiml: str | None,
        url: str | None = None,
        method: str = "POST",
        status_callback: str | None = None,
        events: list[str] | None = None,
        timeout_s: float = 60,
        time_limit_s: float = 14400,
    ) -> EmulatedCall: ...


EMULATOR_KEY: web.AppKey[Carrier] = web.AppKey("emulator")


def _check_auth(request: web.Request) -> Carrier:
    emu = request.app[EMULATOR_KEY]
    user = password = ""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            pass
    if user != emu.account_sid or password != emu.auth_token:
        raise ApiError(401, 20003, "Authenticate")
    if request.match_info.get("account") != emu.account_sid:
        raise ApiError(404, 20404, f"The requested resource {request.path} was not found")
    return emu


def _call_or_404(emu: Carrier, request: web.Request) -> EmulatedCall:
    call = emu.calls.get(request.match_info["sid"])
    if call is None:
        raise ApiError(404, 20404, f"The requested resource {request.path} was not found")
    return call


async def _create(request: web.Request) -> web.Response:
    emu = _check_auth(request)
    form = await request.post()
    to, from_ = str(form.get("To", "")), str(form.get("From", ""))
    if not to:
        raise ApiError(400, 21201, "No 'To' number is specified")
    if not from_:
        raise ApiError(400, 21603, "A 'From' phone number is required.")
    if not E164.match(to):
        raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not E164.match(from_):
        raise ApiError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    twiml, url = form.get("Twiml"), form.get("Url")
    if twiml is None and url is None:
        raise ApiError(400, 21205, "Url parameter is required.")
    if twiml is not None and len(str(twiml)) > 4000:
        raise ApiError(400, 21220, "Twiml exceeds the 4000 character limit")
    events = [str(e) for e in form.getall("StatusCallbackEvent", [])]
    events = [e for ev in events for e in ev.split()]  # also accept space-separated values
    bad = [e for e in events if e not in ("initiated", "ringing", "answered", "completed")]
    if bad:
        raise ApiError(400, 21626, f"Invalid StatusCallbackEvent: {bad[0]}")
    call = emu.place_call(
        to=to,
        from_=from_,
        twiml=str(twiml) if twiml is not None and url is None else None,
        url=str(url) if url is not None else None,
        method=str(form.get("Method", "POST")),
        status_callback=str(form["StatusCallback"]) if form.get("StatusCallback") else None,
        events=events,
        timeout_s=float(str(form.get("Timeout", "60"))),
        time_limit_s=float(str(form.get("TimeLimit", "14400"))),
    )
    return web.json_response(call_resource(call), status=201)


async def _fetch(request: web.Request) -> web.Response:
    emu = _check_auth(request)
    return web.json_response(call_resource(_call_or_404(emu, request)))


async def _update(request: web.Request) -> web.Response:
    emu = _check_auth(request)
    call = _call_or_404(emu, request)
    form = await request.post()
    status = str(form["Status"]) if "Status" in form else None
    twiml = str(form["Twiml"]) if "Twiml" in form else None
    if status is not None:
        if status not in ("completed", "canceled"):
            raise ApiError(400, 21218, f"Invalid Status: {status}")
        if status == "completed" or call.status in ("queued", "initiated", "ringing"):
            call.hang_up(str(status))
    elif twiml is not None:
        if call.status in TERMINAL:
            raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        call.redirect(str(twiml))
    return web.json_response(call_resource(call))


def _date(value: Any) -> str | None:
    from email.utils import format_datetime

    return format_datetime(value) if value is not None else None


def call_resource(call: EmulatedCall) -> dict[str, Any]:
    """The Call resource as Twilio's JSON (what `CallInstance` reads)."""
    uri = f"/2010-04-01/Accounts/{call.account_sid}/Calls/{call.sid}.json"
    duration = call.duration_s
    return {
        "sid": call.sid,
        "account_sid": call.account_sid,
        "parent_call_sid": None,
        "api_version": "2010-04-01",
        "to": call.to,
        "to_formatted": call.to,
        "from": call.from_,
        "from_formatted": call.from_,
        "phone_number_sid": None,
        "status": call.status,
        "direction": call.direction,
        "date_created": _date(call.created_at),
        "date_updated": _date(call.end_time or call.created_at),
        "start_time": _date(call.start_time),
        "end_time": _date(call.end_time),
        "duration": str(duration) if duration is not None else None,
        "price": None,
        "price_unit": "USD",
        "answered_by": None,
        "annotation": None,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "trunk_sid": None,
        "uri": uri,
        "subresource_uris": {
            k: uri.replace(".json", f"/{v}.json")
            for k, v in (
                ("notifications", "Notifications"),
                ("recordings", "Recordings"),
                ("payments", "Payments"),
                ("events", "Events"),
                ("siprec", "Siprec"),
                ("streams", "Streams"),
                ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                ("user_defined_messages", "UserDefinedMessages"),
                ("transcriptions", "Transcriptions"),
            )
        },
    }


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:  # Twilio's legacy error body
        return web.json_response(exc.body(), status=exc.status)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "calls": len(request.app[EMULATOR_KEY].calls)})


def create_rest_app(emulator: Carrier) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[EMULATOR_KEY] = emulator
    base = "/2010-04-01/Accounts/{account}/Calls"
    app.router.add_post(base + ".json", _create)
    app.router.add_get(base + "/{sid}.json", _fetch)
    app.router.add_post(base + "/{sid}.json", _update)
    app.router.add_get("/healthz", _healthz)
    return app
