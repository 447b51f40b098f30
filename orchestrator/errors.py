"""Errors of the orchestrator package.

Hierarchy:

    OrchestratorError            base; `str(err)` is one line a user can act on
    ├── SettingsError            a setting is missing or malformed (names the setting and the fix)
    │   └── ThresholdError       a CHECK_* threshold is unknown or its value malformed
    ├── StoreError               the database cannot be opened, is newer than this code, ...
    │   └── StoreUnreachable     the database server did not answer (also an Unavailable: exit 3)
    ├── UnknownCall              no call with that id or CallSid
    ├── LifecycleError           an impossible *local* command (a bug): remote surprises never raise
    └── Unavailable              something outside did not cooperate (a port taken, a network down)
        └── CarrierError         the carrier (Twilio or the emulator) refused or did not answer a request

Errors of other packages: `bridge.errors` (media protocol), `bridge.backends.base.BackendError`
(speech backends), `orchestrator.emulator.errors` (the carrier emulator).

The command line turns each into one line and an exit code (orchestrator.exits): 3 for Unavailable,
2 for the rest.

Remote problems (duplicate or late callbacks, bad signatures, garbage frames) are not exceptions
here: they are recorded as rejected events and answered.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class: the message is one line that says what to do."""


class SettingsError(OrchestratorError):
    pass


class ThresholdError(SettingsError):
    """A CHECK_* setting is unknown or its value is malformed."""


class StoreError(OrchestratorError):
    pass


class UnknownCall(OrchestratorError):
    pass


class LifecycleError(OrchestratorError):
    pass


class Unavailable(OrchestratorError):
    pass


class CarrierError(Unavailable):
    def __init__(
        self, message: str, code: int | None = None, status: int | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.unreachable = unreachable  # no answer at all (connection refused, timeout), not a refusal


class StoreUnreachable(StoreError, Unavailable):
    """The database server did not answer (PostgreSQL down, a wrong host or port): exit code 3."""
