"""Errors of the carrier emulator.

Hierarchy:

    EmulatorError        base
    └── ApiError         a Twilio-shaped REST error the emulator answers with (status, code, message),
                         raised by its REST handlers and turned into Twilio's legacy error body

The emulator's *callers* see Twilio's errors, not these: the `twilio` package turns the body into its
own TwilioRestException, which orchestrator.twilio_rest turns into a CarrierError.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Base class of the emulator's own errors."""


class ApiError(EmulatorError):
    """A Twilio-shaped REST error (legacy body: code, message, more_info, status)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
