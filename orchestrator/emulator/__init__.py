"""The carrier emulator: a local Twilio stand-in that plays whole phone calls, with ground truth and faults.

It serves the Twilio REST calls the `twilio` package makes (point `TWILIO_API_BASE_URL` at it), then
plays each call as Twilio would: signed status callbacks, the TwiML (`<Say>` takes
`SAY_SECONDS_PER_WORD` per word, `<Connect><Stream>` dials the media WebSocket with a signed handshake
and streams the caller in real time, `<Hangup/>`), Twilio's outbound buffer (marks, `clear`), and it
records what really happened — including what it broke on purpose — as a ground-truth JSON per call.

Public URLs in TwiML and callbacks are signed as written (https://PUBLIC/..., wss://PUBLIC/media) and
reached through `routes` (public base -> local base), as through a tunnel.

Python API::

    emu = CarrierEmulator("AC" + "0" * 32, "token", routes={"https://demo.invalid": "http://127.0.0.1:8080"},
                          truth_dir=Path("truth"))
    base_url = await emu.start()                    # http://127.0.0.1:PORT (port=0: a free one)
    emu.set_defaults(CallOptions(turns=(Turn(text="Hello, can you hear me?"),),
                                 faults=Faults(echo=EchoSpec(delay_ms=150, loss_db=25))))
    emu.set_number("+15551230000", CallOptions(answer="busy"))
    ...  # the product places a call through the REST API
    call = await emu.next_call(timeout=5)           # or emu.calls[sid]
    truth = await emu.wait_call(call.sid, timeout=60)  # GroundTruth (also <truth_dir>/<CallSid>.json)
    sid = await emu.dial_in("https://demo.invalid/twilio/voice", "+15550001111", "+15550002222")
    await emu.stop()

Outcome by called number (unless `set_number` says otherwise; `set_defaults` covers the rest):

    ==============  ==========================================
    +15005550002    busy (SipResponseCode 486)
    +15005550003    no-answer after ring_s (487)
    +15005550004    failed right after initiated (404)
    anything else   answered after ring_s
    ==============  ==========================================

REST errors: To/From not E.164 -> 400 21211 / 21212; missing To/From -> 21201 / 21603; no Twiml or Url
-> 21205; bad credentials -> 401 20003; unknown call -> 404 20404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator.emulator.audio import Turn
from orchestrator.emulator.calls import SAY_SECONDS_PER_WORD, CallOptions, EmulatedCall, GroundTruth
from orchestrator.emulator.faults import CallbackFaults, EchoSpec, Faults
from orchestrator.emulator.rest import create_rest_app
from orchestrator.emulator.webhooks import Webhooks

__all__ = [
    "MAGIC_NUMBERS",
    "SAY_SECONDS_PER_WORD",
    "CallOptions",
    "CallbackFaults",
    "CarrierEmulator",
    "EchoSpec",
    "EmulatedCall",
    "Faults",
    "GroundTruth",
    "Turn",
]

MAGIC_NUMBERS: dict[str, str] = {
    "+15005550002": "busy",
    "+15005550003": "no-answer",
    "+15005550004": "failed",
}


class CarrierEmulator:
    """A Twilio stand-in on its own port. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        routes: dict[str, str] | None = None,
        truth_dir: str | Path | None = None,
        defaults: CallOptions | None = None,
    ) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.truth_dir = Path(truth_dir) if truth_dir is not None else None
        if self.truth_dir is not None:
            self.truth_dir.mkdir(parents=True, exist_ok=True)
        self.webhooks = Webhooks(auth_token, routes or {}, self.truth_dir)
        self.defaults = defaults or CallOptions()
        self.numbers: dict[str, CallOptions] = {}
        self.calls: dict[str, EmulatedCall] = {}
        self.base_url: str | None = None
        self._tasks: dict[str, asyncio.Task[GroundTruth]] = {}
        self._created: asyncio.Queue[EmulatedCall] = asyncio.Queue()
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the REST surface; returns its base URL (what TWILIO_API_BASE_URL should be)."""
        self._runner = web.AppRunner(create_rest_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{bound[0]}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        """Hang up every live call, wait briefly for them to end, and close everything."""
        for call in self.calls.values():
            call.hang_up()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks.values()), timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def set_defaults(self, options: CallOptions) -> None:
        self.defaults = options

    def set_number(self, number: str, options: CallOptions) -> None:
        """Options for calls to (or, for dial_in, from) one number; they win over magic numbers."""
        self.numbers[number] = options

    def options_for(self, number: str) -> CallOptions:
        if number in self.numbers:
            return self.numbers[number]
        if number in MAGIC_NUMBERS:
            return dataclasses.replace(self.defaults, answer=MAGIC_NUMBERS[number])
        return self.defaults

    def place_call(
        self,
        *,
        to: str,
        from_: str,
        twiml: str | None,
        url: str | None = None,
        method: str = "POST",
        status_callback: str | None = None,
        events: list[str] | None = None,
        timeout_s: float = 60,
        time_limit_s: float = 14400,
        options: CallOptions | None = None,
    ) -> EmulatedCall:
        """Create an outbound call and start playing it (what the REST create does)."""
        return self._start_call(
            to=to,
            from_=from_,
            twiml=twiml,
            url=url,
            method=method,
            direction="outbound-api",
            status_callback=status_callback,
            events=events or [],
            timeout_s=timeout_s,
            time_limit_s=time_limit_s,
            options=options or self.options_for(to),
        )

    async def dial_in(
        self,
        voice_url: str,
        from_: str,
        to: str,
        options: CallOptions | None = None,
        status_callback: str | None = None,
    ) -> str:
        """An inbound call: POST the voice webhook (signed, Direction=inbound) and run the TwiML it returns.

        `status_callback` plays the number's configured "call status changes" webhook (Twilio sends
        status callbacks for inbound calls only when the number has one).
        """
        call = self._start_call(
            to=to,
            from_=from_,
            twiml=None,
            url=voice_url,
            method="POST",
            direction="inbound",
            status_callback=status_callback,
            events=["initiated", "ringing", "answered", "completed"] if status_callback else [],
            timeout_s=60,
            time_limit_s=14400,
            options=options or self.options_for(from_),
        )
        return call.sid

    def _start_call(self, *, options: CallOptions, **kwargs: Any) -> EmulatedCall:
        call = EmulatedCall(
            sid=Webhooks.new_sid("CA"),
            account_sid=self.account_sid,
            auth_token=self.auth_token,
            options=options,
            webhooks=self.webhooks,
            **kwargs,
        )
        self.calls[call.sid] = call
        self._tasks[call.sid] = asyncio.create_task(call.play(), name=f"call {call.sid}")
        self._created.put_nowait(call)
        return call

    async def next_call(self, timeout: float = 10.0) -> EmulatedCall:
        """The next call created after the previous `next_call` (for drivers that don't see the CallSid)."""
        return await asyncio.wait_for(self._created.get(), timeout)

    async def wait_call(self, call_sid: str, timeout: float = 60.0) -> GroundTruth:
        """Wait until the call has ended and all its callbacks were delivered; its ground truth."""
        deadline = time.monotonic() + timeout
        task = self._tasks[call_sid]
        return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))

    async def hang_up(self, call_sid: str) -> None:
        """The far end hangs up (as if the person on the phone did)."""
        self.calls[call_sid].hang_up()
