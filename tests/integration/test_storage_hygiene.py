"""What the server stores, end to end: DTMF in batches, no CallToken, redaction on request, bounded recordings."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.store import Store, utcnow
from orchestrator.web.app import STATE, create_app
from tests.conftest import ACCOUNT_SID
from tests.integration.test_control_plane import post_signed
from tests.integration.test_hostile_media import (
    STREAM_SID,
    OneSlotBackend,
    media_frame,
    new_call,
    signed_headers,
    start_frame,
    wait_for,
)
from tests.unit.test_cli import run

SID = "CA" + "3c" * 16
CALL_TOKEN = "%7B%22parentCallInfoToken%22%3A%22eyJhbGciOiJFUzI1NiJ9.secret%22%7D"


def events(settings: Settings, call_id: str) -> list[dict[str, Any]]:
    store = Store(settings.db)
    try:
        return store.events_for(store.get_call(call_id))
    finally:
        store.close()


def dtmf_frame(seq: int, digit: str) -> str:
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": STREAM_SID,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


async def test_a_dtmf_flood_is_stored_in_a_few_rows_with_its_count(
    aiohttp_client: Any, settings: Settings
) -> None:
    backend = OneSlotBackend()
    client = await aiohttp_client(create_app(settings, backend=backend))
    call = new_call(settings)
    ws = await client.ws_connect("/media", headers=signed_headers())
    await ws.send_str(start_frame(call["id"], call["token"]))
    await ws.send_str(media_frame(2, 0))
    assert await wait_for(lambda: backend.busy)
    for i in range(3000):
        await ws.send_str(dtmf_frame(3 + i, "0123456789#*"[i % 12]))
    await ws.send_str(media_frame(3003, 20))
    await ws.close()
    assert await wait_for(lambda: not client.server.app[STATE].sessions)
    rows = [e for e in events(settings, call["id"]) if e["type"] == "dtmf"]
    assert 1 <= len(rows) <= 3, len(rows)  # one batch per second of flood at most (and the rest at the end)
    payloads = [json.loads(e["payload"]) for e in rows]
    assert sum(p["count"] for p in payloads) == 3000
    assert payloads[0]["digits"].startswith("0123456789#*0123")
    assert all(e["accepted"] == 1 for e in rows)


async def test_callers_call_token_is_never_stored_and_never_shown(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings))
    params = {
        "CallSid": SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+14155550100",
        "To": "+15005550006",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "CallToken": CALL_TOKEN,
    }
    assert (await post_signed(client, "/twilio/voice", params)).status == 200
    store = Store(settings.db)
    raw = store.db.execute("SELECT payload FROM events WHERE source = 'voice'").fetchone()[0]
    assert CALL_TOKEN not in raw and json.loads(raw)["CallToken"] == "(redacted)"
    # a row written before CallToken was a secret is not shown with it either
    call = store.get_call(SID)
    store.insert_event(
        source="status_callback",
        type="ringing",
        at=utcnow(),
        call_id=call["id"],
        payload={"CallToken": CALL_TOKEN},
    )
    doc = CallService(store).document(SID)
    store.close()
    assert CALL_TOKEN not in json.dumps(doc)


def test_show_json_holds_full_numbers_for_the_owner_and_redact_masks_them(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    service = CallService(Store(db))
    call = service.store.create_call(
        direction="outbound-api", to_number="+14155550100", from_number="+15005550006"
    )
    service.record(
        source="status_callback",
        type="ringing",
        call_id=call["id"],
        payload={"To": "+14155550100", "From": "+15005550006", "ToCity": "SAN FRANCISCO"},
    )
    service.store.close()
    full = json.loads(run("show", call["id"], "--json", db=db).stdout)
    assert full["call"]["to"] == "+14155550100" and full["events"][0]["payload"]["ToCity"] == "SAN FRANCISCO"
    shared = run("show", call["id"], "--json", "--redact", db=db).stdout
    assert "+14155550100" not in shared and "5550006" not in shared and "SAN FRANCISCO" not in shared
    assert json.loads(shared)["call"]["to"] == "…0100"
    listed = run("calls", "--json", "--redact", db=db).stdout
    assert "+14155550100" not in listed and json.loads(listed)["calls"][0]["from"] == "…0006"
    report = run("report", "--format", "json", "--redact", db=db)
    assert report.returncode == 0 and "+14155550100" not in report.stdout


async def test_retention_removes_old_recordings_at_start_and_forgets_them(
    aiohttp_client: Any, settings: Settings
) -> None:
    folder = settings.recordings_dir
    assert folder is not None
    folder.mkdir(parents=True)
    old = new_call(settings, state="completed", call_sid="CA" + "4" * 32)
    recent = new_call(settings, state="completed", call_sid="CA" + "5" * 32)
    store = Store(settings.db)
    for c in (old, recent):
        path = folder / f"{c['id']}.wav"
        path.write_bytes(b"\0" * 1000)
        for companion in (".model-in.wav", ".trace.npz"):  # what AEC=on and MEDIA_TRACE=on keep beside it
            (folder / f"{c['id']}{companion}").write_bytes(b"\0" * 100)
        store.update_call(c["id"], recording_path=str(path))
    store.close()
    forty_days = time.time() - 40 * 86400
    os.utime(folder / f"{old['id']}.wav", (forty_days, forty_days))
    settings = dataclasses.replace(settings, recordings_max_age_days=30, recordings_max_total_mb=0)
    await aiohttp_client(create_app(settings))

    def recording_path(call_id: str) -> str | None:
        s = Store(settings.db)
        try:
            return s.get_call(call_id)["recording_path"]
        finally:
            s.close()

    assert await wait_for(lambda: recording_path(old["id"]) is None)
    assert not (folder / f"{old['id']}.wav").exists()
    assert not list(folder.glob(f"{old['id']}.*"))  # its companions went with it
    assert (folder / f"{recent['id']}.wav").exists() and recording_path(recent["id"]) is not None
    assert len(list(folder.glob(f"{recent['id']}.*"))) == 3
