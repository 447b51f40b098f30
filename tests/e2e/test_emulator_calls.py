"""The carrier emulator against a small stand-in server (not the product's): REST through the real `twilio`
client, call timelines, signed status callbacks, callback faults, inbound calls and REST errors.

`FakeServer` is reused by test_emulator_media.py: it validates every signature against the PUBLIC URL
(reached through the emulator's route map, as through a tunnel) and serves a /media WebSocket that
records the frames and plays a scripted reply.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bridge.g711 import ulaw_encode
from bridge.protocol import Clear, Media, OutboundMark, OutboundMedia, Start, Stop, parse_inbound
from orchestrator.emulator import CallbackFaults, CallOptions, CarrierEmulator, Faults

ACCOUNT = "AC" + "1" * 32
TOKEN = "emulator-test-token"
PUBLIC = "https://demo.tunnel.invalid"
FROM = "+15550001111"


def tone(seconds: float, freq: float = 440.0, dbfs: float = -12.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (np.sin(2 * np.pi * freq * t) * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


@dataclass
class Reply:
    """What the fake server's /media does after `start`: send audio (all at once), then a mark, then
    optionally `clear` after clear_after_s; close the socket after close_after_s (None: never)."""

    audio: np.ndarray | None = None
    delay_s: float = 0.0
    mark: str | None = "reply-end"
    clear_after_s: float | None = None
    close_after_s: float | None = 1.2


@dataclass
class FakeServer:
    reply: Reply = field(default_factory=Reply)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    stream_callbacks: list[dict[str, Any]] = field(default_factory=list)
    voice_requests: list[dict[str, Any]] = field(default_factory=list)
    inbound: list[tuple[float, Any]] = field(default_factory=list)  # (arrival mono, parsed message)
    marks_sent: dict[str, float] = field(default_factory=dict)
    ws_signature_valid: bool | None = None
    voice_twiml: str = ""

    async def _form(self, request: web.Request, into: list[dict[str, Any]]) -> web.Response:
        form = await request.post()
        url = PUBLIC + request.rel_url.raw_path_qs  # rebuilt from the public base, as behind a tunnel
        valid = RequestValidator(TOKEN).validate(url, form, request.headers.get("X-Twilio-Signature", ""))
        into.append(
            {
                "params": dict(form),
                "valid": valid,
                "at": time.monotonic(),
                "query": dict(request.query),
                "token": request.headers.get("I-Twilio-Idempotency-Token"),
            }
        )
        return web.Response(status=204 if valid else 403)

    async def status(self, request: web.Request) -> web.Response:
        return await self._form(request, self.callbacks)

    async def stream_status(self, request: web.Request) -> web.Response:
        return await self._form(request, self.stream_callbacks)

    async def voice(self, request: web.Request) -> web.Response:
        await self._form(request, self.voice_requests)
        return web.Response(text=self.voice_twiml, content_type="text/xml")

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        sig = request.headers.get("x-twilio-signature", "")
        self.ws_signature_valid = RequestValidator(TOKEN).validate(
            PUBLIC.replace("https", "wss") + "/media", {}, sig
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        closer: asyncio.Task[None] | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            parsed = parse_inbound(msg.data)
            self.inbound.append((time.monotonic(), parsed))
            if isinstance(parsed, Start):
                closer = asyncio.create_task(self._play(ws, parsed.stream_sid))
            if isinstance(parsed, Stop):
                break
        if closer is not None:
            closer.cancel()
        return ws

    async def _play(self, ws: web.WebSocketResponse, sid: str) -> None:
        r = self.reply
        await asyncio.sleep(r.delay_s)
        if r.audio is not None:
            payload = ulaw_encode(r.audio)
            for i in range(0, len(payload), 160):
                await ws.send_str(OutboundMedia(sid, payload[i : i + 160]).serialize())
        if r.mark is not None:
            self.marks_sent[r.mark] = time.monotonic()
            await ws.send_str(OutboundMark(sid, r.mark).serialize())
        if r.clear_after_s is not None:
            await asyncio.sleep(r.clear_after_s)
            self.marks_sent["<clear>"] = time.monotonic()
            await ws.send_str(Clear(sid).serialize())
        if r.close_after_s is not None:
            await asyncio.sleep(r.close_after_s - (r.clear_after_s or 0) - r.delay_s)
            await ws.close()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twilio/status", self.status)
        app.router.add_post("/twilio/stream-status", self.stream_status)
        app.router.add_post("/twilio/voice", self.voice)
        app.router.add_get("/media", self.media)
        return app

    def media_frames(self) -> list[Media]:
        return [m for _, m in self.inbound if isinstance(m, Media)]

    def echoed(self, name: str) -> float | None:
        return next(
            (t for t, m in self.inbound if getattr(m, "event", "") == "mark" and m.name == name), None
        )


class RebasingHttpClient(TwilioHttpClient):
    """The `twilio` package's extension point for another API origin: a custom http_client."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self._base = urlsplit(base_url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        url = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


def twiml(words: str = "Please hold", with_stream: bool = True) -> str:
    stream = (
        f'<Connect><Stream url="wss://demo.tunnel.invalid/media" statusCallback="{PUBLIC}/twilio/stream-status">'
        '<Parameter name="call_id" value="c-42"/><Parameter name="token" value="t0k"/></Stream></Connect>'
    )
    return f"<Response><Say>{words}</Say>{stream if with_stream else ''}<Hangup/></Response>"


@pytest.fixture
async def rig(tmp_path: Any) -> Any:
    server = FakeServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    emu = CarrierEmulator(ACCOUNT, TOKEN, routes={PUBLIC: f"http://{host}:{port}"}, truth_dir=tmp_path)
    emu.set_defaults(CallOptions(ring_s=0.1))
    base = await emu.start()
    client = Client(ACCOUNT, TOKEN, http_client=RebasingHttpClient(base))
    yield server, emu, client
    await emu.stop()
    await runner.cleanup()


async def create(client: Client, to: str, body: str, **kw: Any) -> Any:
    return await asyncio.to_thread(
        client.calls.create,
        to=to,
        from_=FROM,
        twiml=body,
        status_callback=f"{PUBLIC}/twilio/status?call_id=c-42",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        status_callback_method="POST",
        timeout=20,
        **kw,
    )


async def test_normal_call_callbacks_in_order_and_signed(rig: Any) -> None:
    server, emu, client = rig
    call = await create(client, "+15551234567", twiml("Please hold"))
    assert call.sid.startswith("CA") and len(call.sid) == 34 and call.status == "queued"
    truth = await emu.wait_call(call.sid, timeout=15)

    statuses = [c["params"]["CallStatus"] for c in server.callbacks]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert [c["params"]["SequenceNumber"] for c in server.callbacks] == ["0", "1", "2", "3"]
    assert all(c["valid"] for c in server.callbacks) and server.ws_signature_valid
    assert all(c["query"] == {"call_id": "c-42"} for c in server.callbacks)
    done = server.callbacks[-1]["params"]
    assert done["SipResponseCode"] == "200" and "CallDuration" in done and "Duration" in done
    assert done["CallbackSource"] == "call-progress-events" and done["Direction"] == "outbound-api"
    assert done["Timestamp"].endswith("+0000")
    assert [c["params"]["StreamEvent"] for c in server.stream_callbacks] == [
        "stream-started",
        "stream-stopped",
    ]

    start = next(m for _, m in server.inbound if isinstance(m, Start))
    assert start.custom_parameters == {"call_id": "c-42", "token": "t0k"} and start.call_sid == call.sid
    # <Say> of two words took 0.8 s before the stream started (generous bound, never a speed assert)
    answered, started = truth.time_of("in-progress")["mono"], truth.stream["start_sent"]["mono"]
    assert started - answered >= 0.8
    assert truth.status == "completed" and truth.stream["ended"]["reason"] == "server-closed"
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "completed"


@pytest.mark.parametrize(
    ("to", "status", "sip"), [("+15005550002", "busy", "486"), ("+15005550003", "no-answer", "487")]
)
async def test_unanswered_calls(rig: Any, to: str, status: str, sip: str) -> None:
    server, emu, client = rig
    call = await create(client, to, twiml())
    truth = await emu.wait_call(call.sid, timeout=10)
    assert [c["params"]["CallStatus"] for c in server.callbacks] == ["initiated", "ringing", status]
    last = server.callbacks[-1]["params"]
    assert last["SipResponseCode"] == sip and last["CallDuration"] == "0" and last["SequenceNumber"] == "2"
    assert truth.status == status and truth.stream is None and server.inbound == []


async def test_only_subscribed_events_are_sent_but_all_are_counted(rig: Any) -> None:
    server, emu, client = rig
    call = await asyncio.to_thread(
        client.calls.create,
        to="+15551234567",
        from_=FROM,
        twiml="<Response><Say>Hi</Say></Response>",
        status_callback=f"{PUBLIC}/twilio/status",
        status_callback_event=["answered", "completed"],
    )
    await emu.wait_call(call.sid, timeout=10)
    got = [(c["params"]["CallStatus"], c["params"]["SequenceNumber"]) for c in server.callbacks]
    assert got == [("in-progress", "2"), ("completed", "3")]


async def test_callback_faults_shuffle_duplicate_bad_signature(rig: Any) -> None:
    server, emu, client = rig
    faults = Faults(
        callbacks=CallbackFaults(
            shuffle=True, duplicate=("ringing",), bad_signature="completed", bad_signature_after_s=0.1
        )
    )
    emu.set_number("+15557654321", CallOptions(ring_s=0.1, faults=faults))
    call = await create(client, "+15557654321", '<Response><Pause length="1"/></Response>')
    truth = await emu.wait_call(call.sid, timeout=10)

    valid = [c for c in server.callbacks if c["valid"]]
    forged = [c for c in server.callbacks if not c["valid"]]
    assert len(forged) == 1 and forged[0]["params"]["CallStatus"] == "completed"
    seqs = [int(c["params"]["SequenceNumber"]) for c in valid]
    assert sorted(set(seqs)) == [0, 1, 2, 3] and seqs[:3] != sorted(seqs[:3])  # delivered out of order
    ringing = [c for c in valid if c["params"]["CallStatus"] == "ringing"]
    assert len(ringing) == 2 and ringing[0]["token"] == ringing[1]["token"]
    assert truth.status == "completed"  # the forged completion changed nothing
    assert forged[0]["at"] < server.callbacks[-1]["at"]  # ...and arrived while the call was still live
    kinds = sorted(c["delivery"] for c in truth.callbacks if c["kind"] == "status")
    assert kinds.count("duplicate") == 1 and kinds.count("forged") == 1


async def test_retry_carries_the_same_idempotency_token(rig: Any) -> None:
    server, emu, client = rig
    emu.set_number(
        "+15550000007",
        CallOptions(
            ring_s=0.1, faults=Faults(callbacks=CallbackFaults(retry=("in-progress",), retry_after_s=0.2))
        ),
    )
    call = await create(client, "+15550000007", '<Response><Pause length="1"/></Response>')
    await emu.wait_call(call.sid, timeout=10)
    answered = [c for c in server.callbacks if c["params"]["CallStatus"] == "in-progress"]
    assert len(answered) == 2 and answered[0]["token"] == answered[1]["token"]
    assert answered[1]["at"] - answered[0]["at"] >= 0.15


async def test_rest_errors_are_twilio_shaped(rig: Any) -> None:
    _, emu, client = rig
    with pytest.raises(TwilioRestException) as bad_to:
        await create(client, "5551234", twiml())
    assert bad_to.value.status == 400 and bad_to.value.code == 21211
    with pytest.raises(TwilioRestException) as bad_from:
        await asyncio.to_thread(client.calls.create, to="+15551234567", from_="nope", twiml=twiml())
    assert bad_from.value.code == 21212
    with pytest.raises(TwilioRestException) as unknown:
        await asyncio.to_thread(client.calls("CA" + "0" * 32).fetch)
    assert unknown.value.status == 404 and unknown.value.code == 20404
    wrong = Client(ACCOUNT, "wrong-token", http_client=RebasingHttpClient(emu.base_url))
    with pytest.raises(TwilioRestException) as auth:
        await create(wrong, "+15551234567", twiml())
    assert auth.value.status == 401 and auth.value.code == 20003
    assert emu.calls == {}


async def test_rest_hangup_ends_the_stream(rig: Any) -> None:
    server, emu, client = rig
    server.reply = Reply(close_after_s=None)  # the server would stream forever
    call = await create(client, "+15551234567", twiml("Hi"))
    for _ in range(200):
        if len(server.media_frames()) >= 25:
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    truth = await emu.wait_call(call.sid, timeout=10)
    assert isinstance(server.inbound[-1][1], Stop)
    assert truth.stream["ended"]["reason"] == "hangup" and truth.status == "completed"
    done = server.callbacks[-1]["params"]
    assert done["CallStatus"] == "completed" and int(done["CallDuration"]) >= 0


async def test_inbound_call_runs_the_voice_webhook_twiml(rig: Any) -> None:
    server, emu, _ = rig
    server.voice_twiml = twiml("Hello")
    sid = await emu.dial_in(f"{PUBLIC}/twilio/voice", "+15559990000", "+15558880000")
    truth = await emu.wait_call(sid, timeout=10)
    (req,) = server.voice_requests
    assert req["valid"] and req["params"]["Direction"] == "inbound" and req["params"]["CallSid"] == sid
    assert truth.direction == "inbound" and truth.stream["frames_sent"] > 10
