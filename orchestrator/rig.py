"""A local rig: the real server and the carrier emulator wired together on 127.0.0.1.

The server trusts only its public https URL (as in production); the emulator signs for that URL and
reaches the server through a route, as a tunnel would. Used by `orchestrator demo` and the e2e tests.

    async with LocalRig(settings, truth_dir) as rig:
        row = await rig.place(CallOptions(...), to="+15005550010")
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=60)
        doc = await rig.settled(row["id"])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.bootstrap import RunningServer, open_service, place, start_server
from orchestrator.emulator import CallOptions, CarrierEmulator
from orchestrator.lifecycle import TERMINAL_STATES
from orchestrator.service import CallService
from orchestrator.settings import Settings
from orchestrator.web.state import STATE

log = logging.getLogger(__name__)
RIG_PUBLIC_URL = "https://demo-tunnel.invalid"


def rig_settings(workdir: Path, **overrides: Any) -> Settings:
    """Settings for a rig: fresh random credentials, a database and recordings under `workdir`."""
    base: dict[str, Any] = {
        "twilio_account_sid": "AC" + secrets.token_hex(16),
        "twilio_auth_token": secrets.token_hex(16),
        "twilio_from_number": "+15005550006",
        "public_url": RIG_PUBLIC_URL,
        "db": workdir / "calls.db",
        "host": "127.0.0.1",
        "port": 0,
        "backend": "echo",
        "recordings_dir": workdir / "recordings",
        "media_trace": "on",  # emulator calls: the caller is a script, and replay needs the stream
    }
    base.update(overrides)
    return Settings(**base).validated()


class LocalRig:
    def __init__(self, settings: Settings, truth_dir: Path | None = None, *, backend: Any = None) -> None:
        self.settings = settings
        self.truth_dir = truth_dir
        self.backend = backend
        self.emulator: CarrierEmulator
        self.server: RunningServer
        self.service: CallService

    async def __aenter__(self) -> LocalRig:
        s = self.settings
        assert s.twilio_account_sid and s.twilio_auth_token and s.public_url
        self.emulator = CarrierEmulator(s.twilio_account_sid, s.twilio_auth_token, truth_dir=self.truth_dir)
        emulator_url = await self.emulator.start()
        s = s.with_overrides(twilio_api_base_url=emulator_url)
        self.server = await start_server(s, backend=self.backend)
        self.emulator.webhooks.routes[s.require_public_url()] = self.server.local_url  # the emulated tunnel
        self.settings = s.with_overrides(port=self.server.port)
        self.service = open_service(self.settings.db)
        # The server imports its analysis modules in a thread just after start; a call timed through that
        # import shares the GIL with it (the same process holds the emulator's phones here), so the rig
        # dials only once the server is warm.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.server.app[STATE].warmed.wait(), timeout=60)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.server.stop()
        await self.emulator.stop()
        self.service.store.close()

    async def place(
        self,
        options: CallOptions | None = None,
        *,
        to: str = "+15005550010",
        run: str | None = None,
        say: str | None = None,
    ) -> dict[str, Any]:
        """Place one call through the real REST path (`orchestrator call`'s code) with these far-end options."""
        if options is not None:
            self.emulator.set_number(to, options)

        def dial() -> dict[str, Any]:
            service = open_service(self.settings.db)
            try:
                return place(
                    self.settings,
                    service,
                    to=to,
                    from_=self.settings.twilio_from_number,
                    run=run,
                    say=say,
                    timeout_s=30,
                    record=False,
                )
            finally:
                service.store.close()

        return await asyncio.to_thread(dial)

    async def settled(self, call_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The call's document once it is over and its analysis and checks are stored."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            doc = self.service.document(call_id)
            terminal = doc["call"]["state"] in TERMINAL_STATES
            streamed = any(
                e["source"] == "media" and e["type"] == "start" and e["accepted"] for e in doc["events"]
            )
            analysed = bool(doc["analysis"]) or not streamed
            checked = any(c["decided_by"] == "auto" for c in doc["checks"])
            if (terminal and analysed and checked) or loop.time() > deadline:
                if loop.time() > deadline:
                    log.warning("call %s did not settle within %.0f s", call_id, timeout_s)
                return doc
            await asyncio.sleep(0.1)
