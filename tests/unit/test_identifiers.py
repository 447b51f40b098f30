"""Identifier checks and log escaping: a peer's text cannot forge a log line or reorder a terminal."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from bridge.protocol import Start
from orchestrator.settings import log_safe, valid_call_id, valid_sid
from orchestrator.web.hooks import identifier_problem
from orchestrator.web.media import start_identifier_problem

HEX32 = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CA" + HEX32, "CA" + HEX32),  # a clean value is untouched
        ("a\nb", "a\\u000ab"),  # no second log line
        ("a\r\nb", "a\\u000d\\u000ab"),
        ("ab\u202ecd", "ab\\u202ecd"),  # right-to-left override
        ("a\u200bb", "a\\u200bb"),  # zero-width space (format)
        ("a\u2028b", "a\\u2028b"),  # line separator
        ("a\x1b[31mred", "a\\u001b[31mred"),  # terminal escape
        ("back\\slash", "back\\\\slash"),  # a literal backslash cannot pose as an escape
        ("\udcff", "\\udcff"),  # lone surrogate
        ("caf\u00e9 ok", "caf\u00e9 ok"),  # printable non-ASCII and spaces stay readable
        ("\U000e0001", "\\U000e0001"),  # a tag character above the BMP
        ("a\u2005b", "a\\u2005b"),  # a space that is not ' ' (it can pass for one)
        ("a\ue000b", "a\\ue000b"),  # private use
        (None, "None"),
        (42, "42"),
    ],
)
def test_log_safe_escapes_what_could_forge_or_reorder_a_line(text: object, expected: str) -> None:
    assert log_safe(text) == expected


def test_log_safe_bounds_the_length_and_says_how_long_it_was() -> None:
    out = log_safe("x" * 5000, limit=40)
    assert out == "x" * 40 + "…(5000 chars)"
    assert log_safe("x" * 40, limit=40) == "x" * 40  # at the limit: nothing cut


def test_log_safe_output_is_one_printable_line_for_any_input() -> None:
    nasty = "".join(chr(c) for c in range(0, 0x3000, 7)) + "\u202e\u2066\ufeff\n"
    out = log_safe(nasty, limit=10_000)
    assert out.isprintable() and "\n" not in out


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("CA", "CA" + HEX32, True),
        ("CA", "CA" + HEX32.upper(), True),
        ("MZ", "MZ" + HEX32, True),
        ("AC", "AC" + HEX32, True),
        ("CA", "MZ" + HEX32, False),  # the wrong kind
        ("CA", "CA" + HEX32[:-1], False),  # 31 digits
        ("CA", "CA" + HEX32 + "0", False),  # 33 digits
        ("CA", "CA" + HEX32 + "\n", False),  # `$` would have let a trailing newline through
        ("CA", "CA" + HEX32[:-1] + "g", False),
        ("CA", "ca" + HEX32, False),
        ("CA", "CA" + "1" * 4998, False),
        ("CA", None, False),
        ("CA", 12, False),
    ],
)
def test_valid_sid(kind: str, value: object, ok: bool) -> None:
    assert valid_sid(kind, value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("c_" + "0" * 16, True),
        ("c_" + "a" * 16, True),
        ("c_doesnotexist", False),
        ("c_" + "0" * 17, False),
        ("c_" + "A" * 16, False),
        ("c_" + "0" * 15 + "\n", False),
        ("", False),
        (None, False),
    ],
)
def test_valid_call_id(value: object, ok: bool) -> None:
    assert valid_call_id(value) is ok


def test_identifier_problem_names_the_field_and_what_was_expected() -> None:
    good = MultiDict({"CallSid": "CA" + HEX32, "AccountSid": "AC" + HEX32, "From": "+1 anything\n"})
    assert identifier_problem("c_" + "0" * 16, good) is None
    assert identifier_problem(None, MultiDict()) is None  # nothing to check is not a problem here
    assert identifier_problem("c_x", good) == "invalid call_id c_x in the query"
    bad = MultiDict({"CallSid": "CA" + HEX32, "StreamSid": "MZ\u202e"})
    assert identifier_problem(None, bad) == "invalid StreamSid MZ\\u202e: expected MZ and 32 hex digits"
    twice = MultiDict([("AccountSid", "AC" + HEX32), ("AccountSid", "AC" + HEX32)])
    assert identifier_problem(None, twice) == "AccountSid given 2 times"


def test_start_identifier_problem() -> None:
    def start(call_sid: str = "CA" + HEX32, stream_sid: str = "MZ" + HEX32) -> Start:
        return Start(1, stream_sid, "AC" + HEX32, call_sid)

    assert start_identifier_problem(start(), "c_" + "0" * 16) is None
    assert start_identifier_problem(start(), None) is None
    assert start_identifier_problem(start(call_sid="CA1\n"), None) == (
        "invalid start.callSid CA1\\u000a: expected CA and 32 hex digits"
    )
    assert start_identifier_problem(start(stream_sid="MZ" + "1" * 500), None).startswith(  # type: ignore[union-attr]
        "invalid start.streamSid MZ1111"
    )
    assert start_identifier_problem(start(), "c_bad") == "invalid call_id c_bad in start.customParameters"
