"""Redaction: secrets are never stored or shown; personal data is masked on request (`--redact`).

Two rules, two strengths:

- **secrets** (`SECRET_KEYS`: our per-call token, Twilio's `CallToken`, an auth token) are replaced by
  "(redacted)" before a payload is stored, and again whenever a document is shown, so an old row
  written before a key was listed here does not leak it either;
- **personal data** stays in the owner's database and in `show --json` (the owner needs the numbers),
  and `--redact` masks it for a document or report shared elsewhere: phone numbers keep their last
  four digits (`settings.mask_number`), caller name and place (city, state, zip) become "(redacted)",
  and any E.164 number written inside free text (an evidence line, a reason) is masked too.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.settings import mask_number

REDACTED = "(redacted)"
SECRET_KEYS = frozenset({"token", "AuthToken", "auth_token", "CallToken", "twilio_auth_token"})
#: keys whose value is a phone number (Twilio's form fields and our documents)
PHONE_KEYS = frozenset(
    {"to", "from", "to_number", "from_number", "To", "From", "Caller", "Called", "ForwardedFrom", "CallerId"}
)
_PLACE = re.compile(r"^(Caller|Called|From|To)(City|State|Zip)$")
_NAME_KEYS = frozenset({"CallerName", "StirPassportToken"})  # the passport token carries both numbers
_E164_IN_TEXT = re.compile(r"\+[1-9]\d{6,14}\b")


def without_secrets(value: Any) -> Any:
    """`value` with every secret replaced (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_KEYS and v else without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


def personal_data_masked(value: Any) -> Any:
    """`value` with phone numbers masked and caller name and place removed, for sharing elsewhere."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in PHONE_KEYS and isinstance(v, str):
                out[k] = mask_number(v, empty=v)
            elif (k in _NAME_KEYS or _PLACE.match(str(k))) and v:
                out[k] = REDACTED
            else:
                out[k] = personal_data_masked(v)
        return out
    if isinstance(value, list):
        return [personal_data_masked(v) for v in value]
    if isinstance(value, str) and "+" in value:
        return _E164_IN_TEXT.sub(lambda m: mask_number(m.group(0)), value)
    return value
