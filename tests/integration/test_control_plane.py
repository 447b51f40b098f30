"""Signed Twilio callbacks and the voice webhook through the real app (pytest-aiohttp)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from orchestrator.settings import Settings
from orchestrator.store import Store
from orchestrator.web.app import create_app
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL

SID = "CA" + "12" * 16


def test_documentation_test_vector() -> None:
    # the example from Twilio's webhook security page
    url = "https://example.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    validator = RequestValidator("12345")
    assert validator.compute_signature(url, params) == "L/OH5YylLD5NRKLltdqwSvS0BnU="
    assert validator.validate(url, params, "L/OH5YylLD5NRKLltdqwSvS0BnU=")


def status_params(status: str, seq: int, **extra: str) -> dict[str, str]:
    return {
        "CallSid": SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+15005550006",
        "To": "+14155550100",
        "CallStatus": status,
        "ApiVersion": "2010-04-01",
        "Direction": "outbound-api",
        "SequenceNumber": str(seq),
        "CallbackSource": "call-progress-events",
        "Timestamp": "Tue, 24 Nov 2026 12:00:00 +0000",
        **extra,
    }


async def post_signed(
    client: Any,
    path: str,
    params: dict[str, str],
    *,
    url_base: str = PUBLIC_URL,
    token: str = AUTH_TOKEN,
    headers: dict[str, str] | None = None,
) -> Any:
    signature = RequestValidator(token).compute_signature(url_base + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": signature, **(headers or {})})


@pytest.fixture
async def app_and_call(aiohttp_client: Any, settings: Settings) -> tuple[Any, dict[str, Any]]:
    store = Store(settings.db)
    call = store.create_call(direction="outbound-api", to_number="+14155550100", from_number="+15005550006")
    store.close()
    client = await aiohttp_client(create_app(settings))
    return client, call


def final(settings: Settings, call_id: str) -> tuple[str, list[tuple[str, str]], list[dict[str, Any]]]:
    store = Store(settings.db)
    row = store.get_call(call_id)
    transitions = [(t["from_state"], t["to_state"]) for t in store.transitions_for(call_id)]
    events = store.events_for(row)
    store.close()
    return row["state"], transitions, events


async def test_accepted_duplicate_out_of_order(app_and_call: Any, settings: Settings) -> None:
    client, call = app_and_call
    path = f"/twilio/status?call_id={call['id']}"
    for status, seq in [("initiated", 0), ("ringing", 1), ("in-progress", 2)]:
        resp = await post_signed(client, path, status_params(status, seq))
        assert resp.status == 204
    dup = await post_signed(
        client, path, status_params("in-progress", 2), headers={"I-Twilio-Idempotency-Token": "retry-1"}
    )
    assert dup.status == 204
    late = await post_signed(client, path, status_params("ringing", 1))
    assert late.status == 204
    done = await post_signed(client, path, status_params("completed", 3, CallDuration="12"))
    assert done.status == 204
    state, transitions, events = final(settings, call["id"])
    assert state == "completed"
    assert transitions == [("queued", "ringing"), ("ringing", "in-progress"), ("in-progress", "completed")]
    verdicts = [(e["type"], e["accepted"], e["reason"]) for e in events]
    assert ("in-progress", 0, "duplicate") in verdicts
    assert verdicts.count(("ringing", 0, "duplicate")) == 1  # same CallSid + SequenceNumber as before
    assert all(e["call_id"] == call["id"] for e in events)


async def test_bad_signature_is_403_and_stored(app_and_call: Any, settings: Settings) -> None:
    client, call = app_and_call
    path = f"/twilio/status?call_id={call['id']}"
    resp = await post_signed(client, path, status_params("ringing", 1), token="not-the-token")
    assert resp.status == 403
    missing = await client.post(path, data=status_params("ringing", 1))
    assert missing.status == 403
    state, transitions, events = final(settings, call["id"])
    assert state == "queued" and transitions == []
    assert [(e["accepted"], e["reason"]) for e in events] == [
        (0, "bad signature"),
        (0, "bad signature: missing X-Twilio-Signature"),
    ]


async def test_signature_for_local_url_only_is_rejected(app_and_call: Any, settings: Settings) -> None:
    client, call = app_and_call
    path = f"/twilio/status?call_id={call['id']}"
    local_base = str(client.make_url("")).rstrip("/")
    resp = await post_signed(client, path, status_params("ringing", 1), url_base=local_base)
    assert resp.status == 403  # behind a tunnel, only the public URL is what Twilio signed
    assert final(settings, call["id"])[0] == "queued"


async def test_unknown_call_is_stored_and_answered(app_and_call: Any, settings: Settings) -> None:
    client, _ = app_and_call
    params = status_params("ringing", 1)
    params["CallSid"] = "CA" + "9" * 32
    resp = await post_signed(client, "/twilio/status", params)
    assert resp.status == 204
    store = Store(settings.db)
    row = store.db.execute("SELECT call_sid, accepted, reason FROM events WHERE type = 'ringing'").fetchone()
    assert tuple(row) == ("CA" + "9" * 32, 0, "unknown call")


async def test_stream_status_callback(app_and_call: Any, settings: Settings) -> None:
    client, call = app_and_call
    await post_signed(client, f"/twilio/status?call_id={call['id']}", status_params("in-progress", 2))
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": SID,
        "StreamSid": "MZ" + "1" * 32,
        "StreamName": "s",
        "StreamEvent": "stream-started",
        "Timestamp": "2026-11-24T12:00:00.000Z",
    }
    assert (await post_signed(client, "/twilio/stream-status", params)).status == 204
    assert (await post_signed(client, "/twilio/stream-status", params)).status == 204  # retry: duplicate
    state, _, events = final(settings, call["id"])
    assert state == "streaming"
    assert [e["reason"] for e in events if e["source"] == "stream_status"] == [None, "duplicate"]


async def test_voice_webhook_returns_stream_twiml(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    params = {
        "CallSid": SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+14155550100",
        "To": "+15005550006",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    resp = await post_signed(client, "/twilio/voice", params)
    assert resp.status == 200
    root = ET.fromstring(await resp.text())
    assert [child.tag for child in root] == ["Say", "Connect", "Hangup"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://tunnel.example.test/media" and "?" not in stream.get("url", "")
    assert stream.get("statusCallback") == f"{PUBLIC_URL}/twilio/stream-status"
    params_xml = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    store = Store(settings.db)
    row = store.get_call(SID)
    assert row["direction"] == "inbound" and row["state"] == "ringing"
    assert params_xml == {"call_id": row["id"], "token": row["token"]}


async def test_healthz_and_metrics(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings))
    health = await (await client.get("/healthz")).json()
    assert health["ok"] and health["backend"] == "echo" and health["busy"] is False
    text = await (await client.get("/metrics")).text()
    assert "orchestrator_active_streams" in text and "orchestrator_callbacks_total" in text
