"""The words the emulator's call playback (calls.py) and its HTTP side (rest.py) share.

Twilio's vocabulary both need lives here so that neither imports the other for it: rest.py may name
calls.py's types, calls.py sees the HTTP side only through its own `WebhookSender` shape, and the
REST surface sees the emulator through `rest.Carrier`. No I/O here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

#: Twilio's final CallStatus values.
TERMINAL = ("completed", "busy", "no-answer", "failed", "canceled")
#: The CallStatus values that come after the answer (or instead of it).
ANSWERED_OR_OVER = ("in-progress", *TERMINAL)


def rfc2822_now() -> str:
    """Now, as Twilio writes dates in its REST resources and callbacks."""
    return format_datetime(datetime.now(timezone.utc))
