"""The webhooks the carrier emulator sends, as Twilio sends them.

Form POSTs signed like Twilio (`X-Twilio-Signature` over the public URL as written, with an
`I-Twilio-Idempotency-Token`), connecting through the tunnel route map (`route`), one ordered queue per
call, with the callback faults applied (held, shuffled, duplicated, forged). It does not decide how a
call goes (calls.py does).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from twilio.request_validator import RequestValidator

from orchestrator.emulator.audio import write_wav
from orchestrator.emulator.calls import EmulatedCall, GroundTruth
from orchestrator.emulator.faults import shuffled
from orchestrator.emulator.media import MediaStreamClient
from orchestrator.emulator.wire import ANSWERED_OR_OVER, rfc2822_now

logger = logging.getLogger(__name__)

USER_AGENT = "TwilioProxy/1.1"


def route(url: str, routes: dict[str, str]) -> str:
    """The URL to connect to for a public URL: the longest matching route's local base, else the URL."""
    alias = {"wss": "https", "ws": "http"}
    scheme, _, rest = url.partition("://")
    as_http = f"{alias.get(scheme, scheme)}://{rest}"
    best = max((p for p in routes if as_http.startswith(p.rstrip("/"))), key=len, default=None)
    if best is None:
        return url
    local = routes[best].rstrip("/") + as_http[len(best.rstrip("/")) :]
    if scheme in alias:  # back to a WebSocket scheme
        lscheme, _, lrest = local.partition("://")
        local = ("wss" if lscheme == "https" else "ws") + "://" + lrest
    return local


class Webhooks:
    """Signed outgoing requests for every call, and the per-call files (ground truth, audio)."""

    def __init__(self, auth_token: str, routes: dict[str, str], truth_dir: Path | None) -> None:
        self.token, self.routes, self.truth_dir = auth_token, dict(routes), truth_dir
        self.session: aiohttp.ClientSession | None = None
        self._queues: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._held: dict[str, list[dict[str, Any]]] = {}
        self._forged: set[str] = set()

    @staticmethod
    def new_sid(prefix: str) -> str:
        return prefix + uuid.uuid4().hex

    def route(self, url: str) -> str:
        return route(url, self.routes)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        if self.session is not None:
            await self.session.close()

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # A pooled connection is reused for at most 5 s idle: servers close idle keep-alive
            # connections (ours after 10 s), and a request written into one the server is closing at that
            # instant fails with a reset that no retry policy of Twilio's would cover.
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15, connect=5),
                connector=aiohttp.TCPConnector(keepalive_timeout=5.0),
            )
        return self.session

    # --- delivery with faults ------------------------------------------------------------------------

    def deliver(
        self, call: EmulatedCall, url: str, params: dict[str, str], *, kind: str, event: str, seq: int | None
    ) -> None:
        """Queue one webhook (status or stream callback) for the call, applying its callback faults."""
        faults = call.options.faults.callbacks
        item = {
            "url": url,
            "params": params,
            "kind": kind,
            "event": event,
            "seq": seq,
            "token": str(uuid.uuid4()),
            "delivery": "normal",
            "signature_valid": True,
            "fired": {"mono": time.monotonic(), "wall": time.time()},
        }
        items = [item]
        if kind == "status" and faults.duplicates(event):
            items.append({**item, "delivery": "duplicate"})
        if kind == "status" and faults.shuffle:
            held = self._held.setdefault(call.sid, [])
            held.extend(items)
            if event not in ANSWERED_OR_OVER:
                return
            items = shuffled(held, call.options.faults.seed)
            held.clear()
        for it in items:
            self._queue(call).put_nowait(it)
        if kind == "status" and faults.retries(event):
            self._spawn(call, self._later(call, {**item, "delivery": "retry"}, faults.retry_after_s))

    def on_fired(self, call: EmulatedCall, status: str, seq: int) -> None:
        """Forge one badly signed callback after the answer (or the end), if the call asks for it."""
        faults = call.options.faults.callbacks
        if faults.bad_signature is None or call.sid in self._forged or status not in ANSWERED_OR_OVER:
            return
        if not call.status_callback:
            return
        self._forged.add(call.sid)
        params = call.callback_params(faults.bad_signature)
        params.update(CallbackSource="call-progress-events", SequenceNumber=str(seq + 1))
        if faults.bad_signature in ANSWERED_OR_OVER[1:]:
            params.update(CallDuration="0", SipResponseCode="200")
        item = {
            "url": call.status_callback,
            "params": params,
            "kind": "status",
            "event": faults.bad_signature,
            "seq": seq + 1,
            "token": str(uuid.uuid4()),
            "delivery": "forged",
            "signature_valid": False,
            "fired": {"mono": time.monotonic(), "wall": time.time()},
        }
        self._spawn(call, self._later(call, item, faults.bad_signature_after_s))

    def _queue(self, call: EmulatedCall) -> asyncio.Queue[dict[str, Any] | None]:
        if call.sid not in self._queues:
            self._queues[call.sid] = asyncio.Queue()
            self._workers[call.sid] = asyncio.create_task(self._worker(call, self._queues[call.sid]))
        return self._queues[call.sid]

    def _spawn(self, call: EmulatedCall, coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks = self._tasks.setdefault(call.sid, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _later(self, call: EmulatedCall, item: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        if item["delivery"] == "forged":
            item["params"]["Timestamp"] = rfc2822_now()
        await self._post(call, item)

    async def _worker(self, call: EmulatedCall, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        while (item := await queue.get()) is not None:
            ok = await self._post(call, item)
            if not ok:  # Twilio's default: one retry on a failed connection
                await asyncio.sleep(1.0)
                await self._post(call, {**item, "delivery": "retry"})

    async def drain(self, call: EmulatedCall) -> None:
        """Deliver everything still held or queued for the call (at its end)."""
        held = self._held.pop(call.sid, [])
        for it in shuffled(held, call.options.faults.seed):
            self._queue(call).put_nowait(it)
        if call.sid in self._queues:
            self._queues[call.sid].put_nowait(None)
            await self._workers.pop(call.sid)
            del self._queues[call.sid]
        while self._tasks.get(call.sid):
            await asyncio.gather(*list(self._tasks[call.sid]), return_exceptions=True)

    async def _post(self, call: EmulatedCall, item: dict[str, Any]) -> bool:
        url, params = item["url"], item["params"]
        key = self.token if item["signature_valid"] else "not-" + self.token
        method = "POST"
        headers = {
            "I-Twilio-Idempotency-Token": item["token"],
            "User-Agent": USER_AGENT,
            "X-Forwarded-Proto": urlsplit(url).scheme,
            "X-Forwarded-Host": urlsplit(url).netloc,
        }
        headers["X-Twilio-Signature"] = RequestValidator(key).compute_signature(url, params)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        record = {
            k: item[k] for k in ("kind", "event", "seq", "token", "delivery", "signature_valid", "fired")
        }
        record["url"] = url
        record["sent"] = {"mono": time.monotonic(), "wall": time.time()}
        call.truth.callbacks.append(record)
        try:
            async with self._session().request(
                method, self.route(url), data=urlencode(params), headers=headers
            ) as resp:
                record["http_status"] = resp.status
                await resp.read()
            return True
        except (aiohttp.ClientError, TimeoutError) as exc:
            record["http_status"], record["error"] = None, repr(exc)
            logger.warning("call %s: %s callback to %s failed: %r", call.sid, item["event"], url, exc)
            return bool(item["delivery"] != "normal")  # only a first attempt is retried

    async def fetch_twiml(
        self, call: EmulatedCall, url: str | None = None, method: str | None = None
    ) -> str | None:
        """Ask the voice URL for TwiML, as Twilio does on answer (or on an inbound call, or a <Redirect>)."""
        url = url or call.url
        if not url:
            return None
        params = call.callback_params(
            "ringing" if call.direction == "inbound" and call.status != "in-progress" else "in-progress"
        )
        headers = {
            "X-Twilio-Signature": RequestValidator(self.token).compute_signature(url, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "User-Agent": USER_AGENT,
        }
        entry = call.truth.record("twiml-requested", url=url)
        try:
            async with self._session().post(self.route(url), data=params, headers=headers) as resp:
                text = await resp.text()
                entry["http_status"] = resp.status
                return text if resp.status < 300 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            entry["error"] = repr(exc)
            return None

    # --- files ---------------------------------------------------------------------------------------

    async def save_audio(self, call_sid: str, client: MediaStreamClient) -> dict[str, str]:
        if self.truth_dir is None:
            return {}
        heard, sent = self.truth_dir / f"{call_sid}.heard.wav", self.truth_dir / f"{call_sid}.sent.wav"
        await asyncio.to_thread(write_wav, heard, client.heard_pcm())
        await asyncio.to_thread(write_wav, sent, client.sent())
        parts = self.truth_dir / f"{call_sid}.parts.npz"  # caller, echo, noise apart (float32)
        await asyncio.to_thread(_save_parts, parts, client.parts())
        return {"heard_wav": str(heard), "sent_wav": str(sent), "parts_npz": str(parts)}

    def write_truth(self, truth: GroundTruth) -> None:
        if self.truth_dir is not None:
            path = self.truth_dir / f"{truth.call_sid}.json"
            truth.files["ground_truth"] = str(path)
            path.write_text(json.dumps(truth.to_json(), indent=2, default=str))


# --- the REST surface ----------------------------------------------------------------------------------


def _save_parts(path: Path, parts: dict[str, Any]) -> None:
    import numpy as np

    np.savez(path, **parts)
