"""A media WebSocket that sends only garbage is closed with a reason and stored; a bad handshake is
refused; a start for an unknown call or with a wrong token is rejected; none of it touches a live call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import websockets
from twilio.request_validator import RequestValidator

from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.twiml import media_url
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak]


def _start(call_id: str, token: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "9" * 32,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": "MZ" + "9" * 32,
                "callSid": "CA" + "9" * 32,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"call_id": call_id, "token": token},
            },
        }
    )


async def test_garbage_bad_handshake_and_bad_start_leave_a_live_call_alone(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, backend="echo", echo_mode="delay", greeting="")
    async with LocalRig(settings, tmp_path / "truth") as rig:
        good = await rig.place(
            CallOptions(
                ring_s=0.1,
                turns=(Turn(text="I am the real caller.", wait_for_answer=False),),
                faults=Faults(hangup_after_stream_s=4.0),
            )
        )
        local = rig.server.local_url.replace("http", "ws") + "/media"
        signed = {
            "x-twilio-signature": RequestValidator(settings.twilio_auth_token or "").compute_signature(
                media_url(settings.public_url or ""), {}
            )
        }

        # 1. no signature: refused before the upgrade
        try:
            async with websockets.connect(local):
                raise AssertionError("an unsigned handshake was accepted")
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 403

        # 2. signed, then only garbage: closed with a reason
        async with websockets.connect(local, additional_headers=signed) as ws:
            for frame in ["not json", "{}", '{"event": "nope"}', b"\x00\x01binary"] * 5:
                try:
                    await ws.send(frame)
                except websockets.ConnectionClosed:
                    break
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1008

        # 3. a start for a call that does not exist, and one with the wrong token
        for call_id, token in (("c_" + "0" * 16, "x"), (good["id"], "wrong-token")):
            async with websockets.connect(local, additional_headers=signed) as ws:
                await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                await ws.send(_start(call_id, token))
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1008

        await rig.emulator.wait_call(good["call_sid"], timeout=30)
        doc = await rig.settled(good["id"])
        rejected = rig.service.store.db.execute(
            "SELECT type, reason FROM events WHERE accepted = 0 AND source = 'media' ORDER BY id"
        ).fetchall()
    reasons = [(t, r) for t, r in rejected]
    assert ("handshake", "bad signature: missing x-twilio-signature on the WebSocket handshake") in reasons
    assert any(t == "garbage" for t, _ in reasons)
    assert any(t == "start_rejected" and "unknown call id" in r for t, r in reasons)
    assert any(t == "start_rejected" and "token" in r for t, r in reasons)
    # the real call streamed and completed untouched
    assert doc["call"]["state"] == "completed"
    assert doc["metrics"]["inbound_speech_s"] > 0.5
