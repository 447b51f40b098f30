"""Twilio REST adapter: place and end calls with the `twilio` package.

`TWILIO_API_BASE_URL` points the client at another Twilio-compatible endpoint (the carrier emulator)
through the package's own extension point, a custom `http_client`: every request keeps its path and
parameters and only the origin changes. Errors become `CarrierError` with Twilio's code and message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from orchestrator.errors import CarrierError
from orchestrator.settings import Settings

log = logging.getLogger(__name__)
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class RebasingHttpClient(TwilioHttpClient):
    """Sends every Twilio API request to `base_url` instead of *.twilio.com (same path and query)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base_url.rstrip("/"))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        url = urlunsplit(
            (self._base.scheme, self._base.netloc, self._base.path + parts.path, parts.query, "")
        )
        return super().request(method, url, *args, **kwargs)


def make_client(settings: Settings, timeout_s: float = 10.0) -> Client:
    """A client whose every request gives up after `timeout_s` (the package's default never does)."""
    sid, token = settings.require_twilio()
    base = settings.twilio_api_base_url
    http_client = RebasingHttpClient(base, timeout_s) if base else TwilioHttpClient(timeout=timeout_s)
    return Client(sid, token, http_client=http_client)


@dataclass(frozen=True, slots=True)
class PlacedCall:
    sid: str
    status: str


def place_call(
    client: Client,
    *,
    to: str,
    from_: str,
    twiml: str,
    status_callback: str,
    timeout_s: int = 30,
    record: bool = False,
) -> PlacedCall:
    kw: dict[str, Any] = {}
    if record:
        kw.update(record=True, recording_channels="dual")
    try:
        call = client.calls.create(
            to=to,
            from_=from_,
            twiml=twiml,
            status_callback=status_callback,
            status_callback_event=STATUS_EVENTS,
            status_callback_method="POST",
            timeout=timeout_s,
            **kw,
        )
    except TwilioException as exc:
        raise _carrier_error("create the call", exc) from exc
    except requests.RequestException as exc:
        raise _unreachable(client, exc) from exc
    return PlacedCall(sid=str(call.sid), status=str(call.status))


def hang_up(client: Client, call_sid: str, *, status: str = "completed") -> str:
    try:
        call = client.calls(call_sid).update(status=status)
    except TwilioException as exc:
        raise _carrier_error(f"hang up {call_sid}", exc) from exc
    except requests.RequestException as exc:
        raise _unreachable(client, exc) from exc
    return str(call.status)


@dataclass(frozen=True, slots=True)
class CarrierCall:
    """What the carrier's REST API says about one call now."""

    sid: str
    status: str  # Twilio's CallStatus: queued, ringing, in-progress, completed, busy, ...
    start_time: datetime | None  # answered (None when it never was)
    end_time: datetime | None
    duration_s: float | None


def fetch_call(client: Client, call_sid: str) -> CarrierCall:
    """GET Calls/{sid}.json. Raises CarrierError: `.status` 404 when the carrier has no such call, None
    (and `unreachable`) when it could not be asked at all."""
    try:
        call = client.calls(call_sid).fetch()
    except TwilioException as exc:
        raise _carrier_error(f"fetch {call_sid}", exc) from exc
    except requests.RequestException as exc:
        raise _unreachable(client, exc) from exc
    duration = getattr(call, "duration", None)
    return CarrierCall(
        sid=str(call.sid),
        status=str(call.status),
        start_time=call.start_time,
        end_time=call.end_time,
        duration_s=float(duration) if duration not in (None, "") else None,
    )


def _unreachable(client: Client, exc: requests.RequestException) -> CarrierError:
    """The carrier did not answer at all: which one, and what to check (one line, no urllib3 chain)."""
    http = client.http_client
    where = urlunsplit(http._base) if isinstance(http, RebasingHttpClient) else "api.twilio.com"
    hint = (
        "is `orchestrator emulator` running there? (TWILIO_API_BASE_URL)"
        if isinstance(http, RebasingHttpClient)
        else "check the network connection"
    )
    kind = "timed out" if isinstance(exc, requests.Timeout) else "did not answer"
    return CarrierError(
        f"carrier unreachable: {where} {kind} ({exc.__class__.__name__}); {hint}", unreachable=True
    )


def _carrier_error(action: str, exc: TwilioException) -> CarrierError:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    message = (
        getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None) or str(exc)
    )
    if isinstance(exc, TwilioRestException) and status == 401:
        message += " (check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
    return CarrierError(f"carrier refused to {action}: {code} {message}", code=code, status=status)
