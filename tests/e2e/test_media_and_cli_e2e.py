"""The media bridge end to end (echo backend, delay mode), inbound calls, and `orchestrator call` as a
subprocess against the carrier emulator's REST surface."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ECHO_MS = 400.0


async def test_echo_backend_returns_the_callers_speech_after_the_delay(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, backend="echo", echo_mode="delay", echo_delay_ms=ECHO_MS, greeting="")
    far = CallOptions(
        ring_s=0.2,
        caller_start_s=0.3,
        turns=(Turn(text="The quick brown fox jumps over the lazy dog.", wait_for_answer=False),),
        faults=Faults(hangup_after_stream_s=4.5),
    )
    async with LocalRig(settings, tmp_path / "truth") as rig:
        row = await rig.place(far)
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=30)
        doc = await rig.settled(row["id"])
        call = rig.emulator.calls[row["call_sid"]]
    assert [(t["from"], t["to"]) for t in doc["transitions"]][2:] == [
        ("in-progress", "streaming"),
        ("streaming", "completed"),
    ]
    # what the phone heard is what the caller said, ECHO_MS (plus the bridge's own latency) later
    said = call.sent_pcm.astype(np.float64)
    heard = call.heard_pcm.astype(np.float64)
    n = min(len(said), len(heard))
    said, heard = said[:n], heard[:n]
    spectrum = np.fft.rfft(heard, 2 * n) * np.conj(np.fft.rfft(said, 2 * n))
    xcorr = np.fft.irfft(spectrum)[:n]
    lag = int(np.argmax(xcorr))
    lag_ms = lag / 8.0
    norm = xcorr[lag] / np.sqrt(np.sum(said[: n - lag] ** 2) * np.sum(heard[lag:] ** 2))
    assert ECHO_MS <= lag_ms <= ECHO_MS + 150, lag_ms  # jitter buffer, 80 ms framing, resampler
    assert norm > 0.8, norm  # the same speech, not just bytes
    # outbound frames were valid Twilio messages for this stream, and marks came back as played
    assert not truth.stream["warnings"]
    echoed = [m for m in truth.stream["marks"] if m["echoed_ms"] is not None]  # the last may be in flight
    assert len(echoed) > 10 and not any(m["flushed"] for m in echoed)
    assert doc["metrics"]["marks_played"] == len(echoed)
    assert recording_bytes(Path(doc["call"]["recording_path"])) > 44 + 4 * 8000 * 3


def recording_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_inbound_call_gets_twiml_and_streams(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, backend="echo", echo_mode="delay", greeting="Welcome.")
    far = CallOptions(
        turns=(Turn(text="Hello from the caller side.", wait_for_answer=False),),
        faults=Faults(hangup_after_stream_s=2.5),
    )
    async with LocalRig(settings, tmp_path / "truth") as rig:
        sid = await rig.emulator.dial_in(
            f"{settings.public_url}/twilio/voice",
            "+14155550177",
            "+15005550006",
            options=far,
            status_callback=f"{settings.public_url}/twilio/status",
        )
        await rig.emulator.wait_call(sid, timeout=30)
        row = rig.service.store.get_call(sid)
        doc = await rig.settled(row["id"], timeout_s=10)
    assert doc["call"]["direction"] == "inbound"
    assert doc["call"]["state"] == "completed"  # the number's status callback reported the end
    states = [t["to"] for t in doc["transitions"]]
    assert "streaming" in states  # the voice webhook's TwiML led the carrier to our media stream
    assert any(e["source"] == "media" and e["type"] == "start" and e["accepted"] for e in doc["events"])
    assert doc["metrics"]["inbound_speech_s"] > 0.5


async def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _env(settings: Any, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": settings.twilio_api_base_url,
        "PUBLIC_URL": settings.public_url,
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(settings.port),
        "ORCHESTRATOR_DB": str(settings.db),
        **extra,
    }


async def test_orchestrator_call_sends_what_twilio_expects(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, backend="echo")
    async with LocalRig(settings, tmp_path / "truth") as rig:
        rig.emulator.set_defaults(CallOptions(ring_s=0.2, faults=Faults(hangup_after_answer_s=2.0)))
        # no PUBLIC_URL here: the running server says which public URL it serves
        code, out, err = await _cli(
            ["call", "+14155550123", "--run", "cli", "--say", "Hi there", "--json"],
            _env(rig.settings, PUBLIC_URL=""),
        )
        assert code == 0, err
        placed = json.loads(out)
        call = rig.emulator.calls[placed["call_sid"]]
        row = rig.service.store.get_call(placed["id"])
        await rig.emulator.wait_call(placed["call_sid"], timeout=30)
        # what the twilio package sent to the (emulated) REST API
        assert (call.to, call.from_) == ("+14155550123", "+15005550006")
        assert call.status_callback == f"{settings.public_url}/twilio/status?call_id={row['id']}"
        assert call.subscribed == {"initiated", "ringing", "answered", "completed"}
        root = ET.fromstring(call.twiml)
        assert [c.tag for c in root] == ["Say", "Connect", "Hangup"] and root[0].text == "Hi there"
        stream = root.find("Connect/Stream")
        assert stream is not None and stream.get("url") == "wss://demo-tunnel.invalid/media"
        assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {
            "call_id": row["id"],
            "token": row["token"],
        }
        assert row["call_sid"] == placed["call_sid"] and row["direction"] == "outbound-api"

        # the carrier refuses (bad credentials): one clear line, and the call is kept as failed
        code, out, err = await _cli(
            ["call", "+14155550123", "--json"], _env(rig.settings, TWILIO_AUTH_TOKEN="wrong-token")
        )
        assert code != 0 and "20003" in err and "Traceback" not in err
        failed = rig.service.store.list_calls(state="failed")
        assert len(failed) == 1
        doc = rig.service.document(failed[0]["id"])
        refused = [e for e in doc["events"] if e["type"] == "create_failed"]
        assert refused and refused[0]["payload"]["code"] == 20003


async def test_second_call_refused_when_the_backend_is_busy(tmp_path: Path) -> None:
    from bridge.backends.base import BackendBusy, BackendSession, SpeechBackend, StepOutput

    class OneAtATime(SpeechBackend):
        name = "one-at-a-time"
        open_sessions = 0

        @property
        def busy(self) -> bool:
            return self.open_sessions > 0

        async def open_session(self, call_id: str, max_seconds: float) -> BackendSession:
            if self.busy:
                raise BackendBusy("serving another call")
            self.open_sessions += 1
            backend = self

            class Session(BackendSession):
                async def process(self, frame: np.ndarray) -> StepOutput:
                    return StepOutput(frames=[np.zeros(1920, np.float32)])

                async def close(self) -> None:
                    backend.open_sessions -= 1

            return Session()

    settings = rig_settings(tmp_path, greeting="")
    async with LocalRig(settings, tmp_path / "truth", backend=OneAtATime()) as rig:
        rig.emulator.set_defaults(CallOptions(ring_s=0.1, faults=Faults(hangup_after_stream_s=3.0)))
        first = await rig.place()
        for _ in range(100):
            if rig.service.store.get_call(first["id"])["state"] == "streaming":
                break
            await asyncio.sleep(0.05)
        code, _, err = await _cli(["call", "+14155550124"], _env(rig.settings))
        assert code != 0 and "model is busy" in err
        # a stream that arrives anyway (an inbound call racing us) is closed with the reason recorded
        sid = await rig.emulator.dial_in(
            f"{settings.public_url}/twilio/voice", "+14155550178", "+15005550006"
        )
        await rig.emulator.wait_call(sid, timeout=20)
        inbound = rig.service.document(sid)
        assert any(e["type"] in ("refused_busy", "start_rejected") for e in inbound["events"])
