"""TwiML for our calls, built with the `twilio` package's TwiML classes. Pure: no I/O.

`<Say>` first (the caller hears it while the stream is not yet open), then `<Connect><Stream>` to our
media WebSocket with our call id and a per-call random token as `<Parameter>`s (Twilio strips query
strings from stream URLs), then `<Hangup/>` so the call ends when our server closes the stream.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from twilio.twiml.voice_response import VoiceResponse


def media_url(public_url: str) -> str:
    """The wss:// URL of our media WebSocket as written in TwiML (and signed by Twilio)."""
    parts = urlsplit(public_url.rstrip("/"))
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path + "/media", "", ""))


def stream_twiml(public_url: str, *, call_id: str, token: str, say: str | None) -> str:
    base = public_url.rstrip("/")
    response = VoiceResponse()
    if say:
        response.say(say)
    connect = response.connect()
    stream = connect.stream(
        url=media_url(base),
        status_callback=f"{base}/twilio/stream-status",
        status_callback_method="POST",
    )
    stream.parameter(name="call_id", value=call_id)
    stream.parameter(name="token", value=token)
    response.hangup()
    return str(response)


BUSY_MESSAGE = "Sorry, Moshi is on another call. Please try again in a few minutes."


def busy_twiml(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
