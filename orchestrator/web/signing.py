"""The one check of Twilio's request signatures, for the webhooks and the media WebSocket handshake.

Twilio signs the URL it requested as written in our TwiML or callback URLs (built from PUBLIC_URL),
not the URL this process sees behind a tunnel, so the expected URL is rebuilt from the settings. Each
function answers None when the signature is valid, else one line saying why (never the token).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from twilio.request_validator import RequestValidator

from orchestrator.settings import Settings, log_safe
from orchestrator.twiml import media_url

log = logging.getLogger(__name__)


def public_request_url(settings: Settings, request: web.Request) -> str:
    """The URL Twilio signed: our public base + the path and query it requested."""
    base = (settings.public_url or f"http://{request.host}").rstrip("/")
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{parts.path}{request.rel_url}"


def _validator(settings: Settings, signature: str | None, header: str) -> RequestValidator | str:
    if not signature:
        return f"bad signature: missing {header}"
    if not settings.twilio_auth_token:
        return "bad signature: TWILIO_AUTH_TOKEN not configured, cannot verify"
    return RequestValidator(settings.twilio_auth_token)


def signature_problem(settings: Settings, request: web.Request, params: Any) -> str | None:
    """A webhook (form POST): is `X-Twilio-Signature` valid for our public URL and these params?"""
    signature = request.headers.get("X-Twilio-Signature")
    validator = _validator(settings, signature, "X-Twilio-Signature")
    if isinstance(validator, str):
        return validator
    expected_url = public_request_url(settings, request)
    if validator.validate(expected_url, params, signature):
        return None
    if validator.validate(str(request.url), params, signature):
        log.warning(
            "rejected %s: signature is valid only for the local URL %s; expected it for %s "
            "(is PUBLIC_URL the tunnel's URL?)",
            log_safe(request.path),
            log_safe(request.url, 200),
            log_safe(expected_url, 200),
        )
    else:
        log.warning(
            "rejected %s: bad X-Twilio-Signature for %s", log_safe(request.path), log_safe(expected_url, 200)
        )
    return "bad signature"


def handshake_problem(settings: Settings, request: web.Request) -> str | None:
    """The media WebSocket upgrade: is `x-twilio-signature` valid for the wss:// URL of our TwiML?"""
    signature = request.headers.get("x-twilio-signature")
    validator = _validator(settings, signature, "x-twilio-signature on the WebSocket handshake")
    if isinstance(validator, str):
        return validator
    expected = media_url(settings.public_url or f"http://{request.host}")
    if validator.validate(expected, {}, signature) or validator.validate(expected + "/", {}, signature):
        return None
    log.warning("rejected media handshake: bad signature for %s (is PUBLIC_URL the tunnel's URL?)", expected)
    return "bad signature"
