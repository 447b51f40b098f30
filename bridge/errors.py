"""Errors of the `bridge` package (media path: Twilio stream protocol, audio, backends).

Hierarchy::

    BridgeError                  base of everything raised by `bridge`
    ├── LocalProtocolError       *we* tried something the protocol forbids (a bug in our code),
    │                            e.g. sending media before the stream started or after it stopped
    ├── RemoteProtocolError      *the peer* sent something invalid; carries Twilio's warning `code`
    │                            (31950 binary frame, 31951 invalid message), a short `reason`
    │                            and the offending `field` when known
    └── BackendError             a speech backend could not do what was asked (bad weights, a dead
        │                        worker, a model server that refused); the call ends with the reason
        ├── BackendBusy          it already serves as many calls as it can
        └── ServerProtocolError  a Moshi model server sent what its protocol does not allow

The split follows h11: a local error should crash loudly in tests, a remote error is counted, logged
and survived (one bad frame must never take down the server or touch another call). Other modules may
add classes below `BridgeError`; this module does no I/O.
"""

from __future__ import annotations

# Twilio's own warning codes for a bad frame on a Media Stream (twilio.com/docs/api/errors/<code>).
BINARY_FRAME = 31950
INVALID_MESSAGE = 31951


class BridgeError(Exception):
    """Base of every error raised by the `bridge` package."""


class LocalProtocolError(BridgeError):
    """We tried to do something the protocol forbids: a bug in the caller, never the peer's fault."""


class RemoteProtocolError(BridgeError):
    """The peer sent something invalid.

    `code` is Twilio's warning code for the same fault (31950 binary frame, 31951 invalid message),
    `reason` a short human description, `field` the dotted name of the offending field when known
    (e.g. ``"media.payload"``).
    """

    def __init__(self, reason: str, *, code: int = INVALID_MESSAGE, field: str | None = None) -> None:
        self.reason = reason
        self.code = code
        self.field = field
        where = f" (field {field!r})" if field else ""
        super().__init__(f"{code}: {reason}{where}")


class BackendError(BridgeError):
    """A backend could not do what was asked (bad weights, dead worker...)."""


class BackendBusy(BackendError):
    """The backend already serves as many calls as it can."""


class ServerProtocolError(BackendError):
    """A Moshi server sent something its protocol does not allow (the peer's fault, not ours)."""
