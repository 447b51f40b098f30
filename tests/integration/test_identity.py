"""One identity per request: `call_id` and `CallSid` must agree, and identifiers must look like Twilio's.

A signed callback with `?call_id=A` and `CallSid=B` was once applied to call A and keyed as B's, so B's
own later callback with that SequenceNumber was dropped as a duplicate. A signed CallSid with a newline
forged a log line, 5,000 characters broke the calls table, a right-to-left override reordered a terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp import WSMsgType
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.web.app import STATE, create_app
from tests.conftest import AUTH_TOKEN, PUBLIC_URL
from tests.integration.test_control_plane import post_signed, status_params
from tests.integration.test_hostile_media import OneSlotBackend, new_call, signed_headers, start_frame

SID_A = "CA" + "a1" * 16
SID_B = "CA" + "b2" * 16
HOSTILE_SIDS = [
    pytest.param("CA" + "1" * 16 + "\nINFO forged line" + "1" * 16, id="newline"),
    pytest.param("CA" + "1" * 4998, id="5000-chars"),
    pytest.param("CA" + "1" * 16 + "\u202e" + "1" * 15, id="rtl-override"),
]


def rows(settings: Settings, sql: str, *args: Any) -> list[dict[str, Any]]:
    store = Store(settings.db)
    try:
        return store._rows(sql, list(args))
    finally:
        store.close()


def call_row(settings: Settings, call_id: str) -> dict[str, Any]:
    store = Store(settings.db)
    try:
        return store.get_call(call_id)
    finally:
        store.close()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, backend=OneSlotBackend()))


async def test_mismatched_call_id_and_callsid_is_refused_and_spends_no_duplicate_key(
    client: Any, settings: Settings
) -> None:
    a = new_call(settings, state="in-progress", call_sid=SID_A)
    b = new_call(settings, state="ringing", call_sid=SID_B)

    forged = await post_signed(
        client, f"/twilio/status?call_id={a['id']}", status_params("busy", 3, CallSid=SID_B)
    )
    assert forged.status == 400

    assert call_row(settings, a["id"])["state"] == "in-progress"  # A untouched
    assert call_row(settings, b["id"])["state"] == "ringing"  # and B too
    [stored] = rows(settings, "SELECT * FROM events WHERE source = 'status_callback'")
    assert stored["accepted"] == 0 and stored["dedupe_key"] is None
    assert stored["reason"] == (
        f"identity mismatch: call_id {a['id']} has CallSid {SID_A}, the request says {SID_B}"
    )
    assert json.loads(stored["payload"])["CallStatus"] == "busy"  # the request itself is kept

    # B's genuine callback with the same SequenceNumber is applied, not taken for a duplicate
    genuine = await post_signed(
        client, f"/twilio/status?call_id={b['id']}", status_params("completed", 3, CallSid=SID_B)
    )
    assert genuine.status == 204
    assert call_row(settings, b["id"])["state"] == "completed"
    assert call_row(settings, a["id"])["state"] == "in-progress"


async def test_a_callsid_of_another_call_is_refused_even_before_the_first_call_knows_its_own(
    client: Any, settings: Settings
) -> None:
    a = new_call(settings, state="queued", call_sid=SID_A)
    store = Store(settings.db)
    store.update_call(a["id"], call_sid=None)  # the REST answer with A's CallSid is not stored yet
    store.close()
    b = new_call(settings, state="ringing", call_sid=SID_B)
    unknown_id = "c_" + "0" * 16

    for call_id in (a["id"], unknown_id):  # A without a CallSid yet, and a call id that names no call
        resp = await post_signed(
            client, f"/twilio/status?call_id={call_id}", status_params("busy", 4, CallSid=SID_B)
        )
        assert resp.status == 400
    reasons = [r["reason"] for r in rows(settings, "SELECT reason FROM events ORDER BY id")]
    assert reasons == [
        f"identity mismatch: CallSid {SID_B} belongs to call {b['id']}, not {a['id']}",
        f"identity mismatch: CallSid {SID_B} belongs to call {b['id']}, not {unknown_id}",
    ]
    assert call_row(settings, a["id"])["call_sid"] is None  # B's CallSid was not given to A
    assert call_row(settings, b["id"])["state"] == "ringing"


async def test_an_agreeing_callback_still_teaches_a_call_its_callsid(client: Any, settings: Settings) -> None:
    a = new_call(settings, state="queued", call_sid=SID_A)
    store = Store(settings.db)
    store.update_call(a["id"], call_sid=None)
    store.close()
    resp = await post_signed(
        client, f"/twilio/status?call_id={a['id']}", status_params("ringing", 1, CallSid=SID_A)
    )
    assert resp.status == 204
    row = call_row(settings, a["id"])
    assert (row["state"], row["call_sid"]) == ("ringing", SID_A)


@pytest.mark.parametrize("bad_sid", HOSTILE_SIDS)
async def test_a_malformed_callsid_is_refused_stored_escaped_and_never_logged_raw(
    client: Any, settings: Settings, caplog: pytest.LogCaptureFixture, bad_sid: str
) -> None:
    a = new_call(settings, state="ringing", call_sid=SID_A)
    caplog.set_level(logging.DEBUG)
    resp = await post_signed(
        client, f"/twilio/status?call_id={a['id']}", status_params("busy", 2, CallSid=bad_sid)
    )
    assert resp.status == 400
    voice = await post_signed(
        client,
        "/twilio/voice",
        {"CallSid": bad_sid, "From": "+14155550100", "To": "+15005550006", "CallStatus": "ringing"},
    )
    assert voice.status == 400

    assert call_row(settings, a["id"])["state"] == "ringing"
    calls = rows(settings, "SELECT id, call_sid FROM calls")
    assert calls == [{"id": a["id"], "call_sid": SID_A}]  # no call created for the voice webhook
    events = rows(settings, "SELECT * FROM events ORDER BY id")
    assert [(e["source"], e["accepted"], e["call_sid"]) for e in events] == [
        ("status_callback", 0, None),
        ("voice", 0, None),
    ]
    for e in events:
        assert e["reason"].startswith("invalid CallSid CA1")
        assert e["reason"].endswith("expected CA and 32 hex digits")
        stored_sid = json.loads(e["payload"])["CallSid"]
        assert stored_sid != bad_sid and len(stored_sid) < 100
        assert stored_sid.isprintable() and "\u202e" not in stored_sid
    # the status callback had a valid call_id, but a refused request is not filed under it
    assert events[0]["call_id"] is None

    messages = [r.getMessage() for r in caplog.records]
    assert any("refused" in m and "invalid CallSid" in m for m in messages)
    for m in messages:
        assert "\n" not in m and "\u202e" not in m and len(m) < 1000, m


async def test_duplicated_identifier_fields_are_refused(client: Any, settings: Settings) -> None:
    a = new_call(settings, state="ringing", call_sid=SID_A)
    params = [*status_params("busy", 2, CallSid=SID_A).items(), ("CallSid", SID_B)]
    url = f"{PUBLIC_URL}/twilio/status?call_id={a['id']}"
    # the validator signs a multi-valued field by sorting its values, as Twilio does
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, MultiDict(params))
    resp = await client.post(
        f"/twilio/status?call_id={a['id']}", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert resp.status == 400
    [e] = rows(settings, "SELECT reason FROM events")
    assert e["reason"] == "CallSid given 2 times"
    assert call_row(settings, a["id"])["state"] == "ringing"


async def test_a_malformed_call_id_in_the_query_is_refused(client: Any, settings: Settings) -> None:
    a = new_call(settings, state="ringing", call_sid=SID_A)
    resp = await post_signed(
        client, "/twilio/status?call_id=c_%0Aforged", status_params("busy", 2, CallSid=SID_A)
    )
    assert resp.status == 400
    [e] = rows(settings, "SELECT reason, call_id FROM events")
    assert e == {"reason": "invalid call_id c_\\u000aforged in the query", "call_id": None}
    assert call_row(settings, a["id"])["state"] == "ringing"


async def _rejected_start(client: Any, frame: str) -> int | None:
    ws = await client.ws_connect("/media", headers=signed_headers())
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send_str(frame)
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    return ws.close_code


async def test_a_media_start_with_another_calls_callsid_is_refused(client: Any, settings: Settings) -> None:
    a = new_call(settings, state="in-progress", call_sid=SID_A)
    new_call(settings, state="in-progress", call_sid=SID_B)
    assert await _rejected_start(client, start_frame(a["id"], a["token"], call_sid=SID_B)) == 1008
    backend = client.server.app[STATE].backend
    assert backend.opened == 0 and client.server.app[STATE].sessions == {}
    [e] = rows(settings, "SELECT * FROM events WHERE type = 'start_rejected'")
    assert e["accepted"] == 0 and e["call_id"] == a["id"]
    assert (
        e["reason"] == f"start.callSid: identity mismatch: call_id {a['id']} has CallSid {SID_A}, "
        f"the request says {SID_B}"
    )
    assert call_row(settings, a["id"])["state"] == "in-progress"


@pytest.mark.parametrize("bad_sid", HOSTILE_SIDS)
async def test_a_media_start_with_a_malformed_callsid_is_refused_and_stored_escaped(
    client: Any, settings: Settings, caplog: pytest.LogCaptureFixture, bad_sid: str
) -> None:
    a = new_call(settings, state="in-progress", call_sid=SID_A)
    caplog.set_level(logging.DEBUG)
    assert await _rejected_start(client, start_frame(a["id"], a["token"], call_sid=bad_sid)) == 1008
    assert client.server.app[STATE].backend.opened == 0
    [e] = rows(settings, "SELECT * FROM events WHERE type = 'start_rejected'")
    assert e["call_sid"] is None and e["call_id"] is None
    assert e["reason"].startswith("invalid start.callSid CA1")
    payload = json.loads(e["payload"])
    assert (
        payload["callSid"] != bad_sid and len(payload["callSid"]) < 100 and payload["callSid"].isprintable()
    )
    assert "token" not in payload["customParameters"]  # the per-call secret is not kept either
    for m in (r.getMessage() for r in caplog.records):
        assert "\n" not in m and "\u202e" not in m and len(m) < 1000, m
