"""Playback of one emulated call: Twilio's timeline, status callbacks, and the TwiML it runs.

A call goes initiated → ringing → answered (in-progress) / busy / no-answer / failed, as its
`CallOptions` say, then runs its TwiML: `<Say>` takes `SAY_SECONDS_PER_WORD` per word, `<Pause>` its
length, `<Connect><Stream>` streams (see `media.py`) until the server closes the socket or the call
ends, `<Hangup/>` and the end of the document end the call. Every fired event takes the next
SequenceNumber; only subscribed ones are delivered. Everything that happened is written to the call's
`GroundTruth`. This module never answers HTTP requests (rest.py does) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from orchestrator.emulator.audio import Turn, render_turns
from orchestrator.emulator.faults import Faults
from orchestrator.emulator.media import MediaStreamClient, StreamSpec
from orchestrator.emulator.replay import ReplayCaller
from orchestrator.emulator.step_player import render_steps
from orchestrator.emulator.steps import Step, check_step, step_name
from orchestrator.emulator.wire import TERMINAL, rfc2822_now

logger = logging.getLogger(__name__)

SAY_SECONDS_PER_WORD = 0.4
API_VERSION = "2010-04-01"
SIP_CODES = {"completed": 200, "busy": 486, "no-answer": 487, "failed": 404, "canceled": 487}
# StatusCallbackEvent name for each CallStatus (answered is delivered as in-progress).
_SUBSCRIPTION = {
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "answered",
    **dict.fromkeys(TERMINAL, "completed"),
}


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How the far end behaves. `answer` is "answer", "busy", "no-answer" or "failed"; the phone rings
    `ring_s` before answering or giving up (no-answer gives up after min(ring_s, Timeout)). Caller
    speech follows `turns`, the first `caller_start_s` after the stream starts; with
    `hangup_after_turns` the caller hangs up once the script is done. Non-empty `steps` (steps.py) are
    the caller's script instead of `turns`: a `Hangup` step ends the call there (with
    `hangup_after_turns`, so does the end of the steps), and the ground truth's stream section says
    what each step did (`steps`, `dtmf_sent`, `overlap`)."""

    answer: str = "answer"
    ring_s: float = 1.0
    initiate_s: float = 0.05
    turns: tuple[Turn, ...] = ()
    caller_start_s: float = 0.5
    hangup_after_turns: bool = False
    faults: Faults = field(default_factory=Faults)
    steps: tuple[Step, ...] = ()
    # a recorded caller instead of a script (orchestrator replay): its frames, sent as they first arrived
    replay: ReplayCaller | None = None

    def __post_init__(self) -> None:
        for step in self.steps:  # a step that cannot be played is refused here, not mid-call
            check_step(step)


@dataclass
class GroundTruth:
    """What really happened on one call (written as JSON to the ground-truth directory)."""

    call_sid: str
    account_sid: str
    direction: str
    from_: str
    to: str
    options: dict[str, Any]
    status: str = "queued"
    sip_response_code: int | None = None
    call_duration_s: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # timeline: {"event", "mono", "wall", ...}
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # every HTTP delivery attempt
    says: list[dict[str, Any]] = field(default_factory=list)
    stream: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def record(self, event: str, **extra: Any) -> dict[str, Any]:
        entry = {"event": event, "mono": time.monotonic(), "wall": time.time(), **extra}
        self.events.append(entry)
        return entry

    def time_of(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data


def _country(number: str) -> str:
    for prefix, country in (("+1", "US"), ("+44", "GB"), ("+33", "FR"), ("+49", "DE")):
        if number.startswith(prefix):
            return country
    return ""


class WebhookSender(Protocol):
    """What a playing call asks of the HTTP side (`webhooks.Webhooks` is one): this module never imports it."""

    def new_sid(self, prefix: str) -> str: ...

    def route(self, url: str) -> str: ...

    def deliver(
        self, call: EmulatedCall, url: str, params: dict[str, str], *, kind: str, event: str, seq: int | None
    ) -> None: ...

    def on_fired(self, call: EmulatedCall, status: str, seq: int) -> None: ...

    async def fetch_twiml(
        self, call: EmulatedCall, url: str | None = None, method: str | None = None
    ) -> str | None: ...

    async def save_audio(self, call_sid: str, client: MediaStreamClient) -> dict[str, str]: ...

    async def drain(self, call: EmulatedCall) -> None: ...

    def write_truth(self, truth: GroundTruth) -> None: ...


class EmulatedCall:
    """One call, from `queued` to a terminal status. Start it with `asyncio.create_task(call.play())`."""

    def __init__(
        self,
        *,
        sid: str,
        account_sid: str,
        auth_token: str,
        to: str,
        from_: str,
        direction: str,
        twiml: str | None,
        url: str | None,
        method: str,
        status_callback: str | None,
        events: list[str],
        time_limit_s: float,
        timeout_s: float,
        options: CallOptions,
        webhooks: WebhookSender,
    ) -> None:
        self.sid, self.account_sid, self.token = sid, account_sid, auth_token
        self.to, self.from_, self.direction = to, from_, direction
        self.twiml, self.url, self.method = twiml, url, method
        self.status_callback = status_callback
        self.subscribed = set(events) if events else {"completed"}
        self.time_limit_s, self.timeout_s = time_limit_s, timeout_s
        self.options, self.webhooks = options, webhooks
        self._rendered: asyncio.Task[list[tuple[Turn, Any]]] | None = None
        self._rendered_steps: asyncio.Task[list[tuple[Step, Any]]] | None = None
        self.heard_pcm: Any = None  # what the phone heard (int16, 8 kHz), once the stream ended
        self.sent_pcm: Any = None  # what the phone sent before losses (int16, 8 kHz)
        self.status = "queued"
        self.created_at = datetime.now(timezone.utc)
        self.start_time: datetime | None = None
        self.end_time: datetime | None = None
        self.answered_mono: float | None = None
        self.truth = GroundTruth(sid, account_sid, direction, from_, to, _options_json(options))
        self.truth.record("created")
        self.done = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._end_status: str | None = None
        self._next_twiml: str | None = None
        self._seq = 0

    # --- control from the REST surface or the Python API ------------------------------------------

    def hang_up(self, status: str = "completed") -> None:
        """End the call: a live call completes; one not yet answered is canceled."""
        if self.status in TERMINAL or self._end_status is not None:
            return
        self._end_status = "completed" if self.status == "in-progress" else "canceled"
        self.truth.record("hangup-requested", requested=status)
        self._interrupt.set()

    def redirect(self, twiml: str) -> None:
        """Replace the TwiML of a live call (REST update with Twiml=)."""
        if self.status != "in-progress":
            self.twiml = twiml  # not answered yet: it runs on answer
            return
        self._next_twiml = twiml
        self._interrupt.set()

    @property
    def duration_s(self) -> int | None:
        return self.truth.call_duration_s if self.status in TERMINAL else None

    # --- playback ------------------------------------------------------------------------------------

    async def _wait(self, seconds: float) -> bool:
        """Sleep unless interrupted; True if the call was interrupted (hang-up or redirect)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), timeout=max(0.0, seconds))
        return self._interrupt.is_set()

    async def play(self) -> GroundTruth:
        opts = self.options
        # espeak-ng runs while the phone rings; the stream waits for it only if it is not done yet.
        if opts.steps:
            self._rendered_steps = asyncio.create_task(asyncio.to_thread(render_steps, opts.steps))
        else:
            self._rendered = asyncio.create_task(asyncio.to_thread(render_turns, opts.turns))
        try:
            if self.direction == "inbound":
                await self._answer_and_run()
            elif not await self._wait(opts.initiate_s):
                self._fire("initiated")
                if opts.answer == "failed":
                    await self._end("failed")
                elif not await self._wait(0.05):
                    self._fire("ringing")
                    ring = min(opts.ring_s, self.timeout_s) if opts.answer == "no-answer" else opts.ring_s
                    if not await self._wait(ring):
                        if opts.answer in ("busy", "no-answer"):
                            await self._end(opts.answer)
                        else:
                            await self._answer_and_run()
            if self.status not in TERMINAL:
                await self._end(self._end_status or "canceled")
        except Exception:
            logger.exception("call %s: playback failed", self.sid)
            if self.status not in TERMINAL:
                await self._end("failed")
        finally:
            self.done.set()
        return self.truth

    async def _answer_and_run(self) -> None:
        self.start_time = datetime.now(timezone.utc)
        self.answered_mono = time.monotonic()
        self._fire("in-progress")
        timer = asyncio.create_task(self._time_limit())
        try:
            twiml = self.twiml if self.twiml is not None else await self.webhooks.fetch_twiml(self)
            while twiml is not None and self._end_status is None:
                self._interrupt.clear()
                await self._run_twiml(twiml)
                twiml, self._next_twiml = self._next_twiml, None
        finally:
            timer.cancel()
        await self._end("completed")

    async def _time_limit(self) -> None:
        limit = self.time_limit_s
        fault = self.options.faults.hangup_after_answer_s
        if fault is not None and fault < limit:
            await asyncio.sleep(fault)
            self.truth.record("hangup-fault", after_answer_s=fault)
        else:
            await asyncio.sleep(limit)
            self.truth.record("time-limit", after_answer_s=limit)
        self.hang_up()

    async def _run_twiml(self, twiml: str) -> None:
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as exc:
            self.truth.record("twiml-error", error=f"12100 - Document parse failure: {exc}")
            return
        for verb in root:
            if self._interrupt.is_set():
                return
            if verb.tag == "Say":
                text = (verb.text or "").strip()
                loops = max(1, int(verb.get("loop", "1") or 1))
                seconds = len(text.split()) * SAY_SECONDS_PER_WORD * loops
                entry = {"text": text, "seconds": seconds, "start": self.truth.record("say-start")}
                self.truth.says.append(entry)
                interrupted = await self._wait(seconds)
                entry["end"] = self.truth.record("say-end", interrupted=interrupted)
            elif verb.tag == "Pause":
                await self._wait(float(verb.get("length", "1")))
            elif verb.tag == "Connect":
                stream = verb.find("Stream")
                if stream is not None:
                    reason = await self._run_stream(stream)
                    # "hangup" also ends the stream on a redirect, which must not end the call.
                    if reason == "caller-done" or (reason == "hangup" and self._next_twiml is None):
                        self.hang_up()
                        return
            elif verb.tag == "Hangup":
                self.truth.record("twiml-hangup")
                self.hang_up()
                return
            elif verb.tag == "Redirect" and verb.text:
                self._next_twiml = await self.webhooks.fetch_twiml(
                    self, url=verb.text.strip(), method=verb.get("method", "POST")
                )
                return
            else:
                self.truth.record("twiml-unsupported", verb=verb.tag)

    async def _run_stream(self, el: ET.Element) -> str:
        params = {p.get("name", ""): p.get("value", "") for p in el.findall("Parameter")}
        spec = StreamSpec(
            el.get("url", ""),
            params,
            el.get("name"),
            el.get("statusCallback"),
            el.get("statusCallbackMethod", "POST"),
        )
        stream_sid = self.webhooks.new_sid("MZ")
        truth: dict[str, Any] = {}  # filled in by the media client
        self.truth.stream = truth
        client = MediaStreamClient(
            spec=spec,
            connect_url=self.webhooks.route(spec.url),
            auth_token=self.token,
            account_sid=self.account_sid,
            call_sid=self.sid,
            stream_sid=stream_sid,
            turns=await self._rendered if self._rendered is not None else [],
            caller_start_s=self.options.caller_start_s,
            hangup_after_turns=self.options.hangup_after_turns,
            faults=self.options.faults,
            hangup=self._interrupt,
            truth=truth,
            notify=lambda event, error: self._stream_event(spec, stream_sid, event, error),
            steps=await self._rendered_steps if self._rendered_steps is not None else None,
            replay=self.options.replay,
        )
        reason = await client.run()
        self.heard_pcm, self.sent_pcm = client.heard_pcm(), client.sent()
        self.truth.files.update(await self.webhooks.save_audio(self.sid, client))
        return reason

    async def _stream_event(self, spec: StreamSpec, stream_sid: str, event: str, error: str | None) -> None:
        self.truth.record(event, stream_sid=stream_sid)
        if spec.status_callback:
            params = {
                "AccountSid": self.account_sid,
                "CallSid": self.sid,
                "StreamSid": stream_sid,
                "StreamName": spec.name or stream_sid,
                "StreamEvent": event,
                "Timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            }
            if error is not None:
                params["StreamError"] = error
            self.webhooks.deliver(self, spec.status_callback, params, kind="stream", event=event, seq=None)

    # --- status callbacks ----------------------------------------------------------------------------

    def _fire(self, status: str) -> None:
        self.status = status
        seq, self._seq = self._seq, self._seq + 1
        self.truth.status = status
        self.truth.record(status, sequence_number=seq)
        self.webhooks.on_fired(self, status, seq)
        if not self.status_callback or _SUBSCRIPTION[status] not in self.subscribed:
            return
        params = self.callback_params(status)
        params.update(CallbackSource="call-progress-events", SequenceNumber=str(seq), Timestamp=rfc2822_now())
        if status in TERMINAL:
            params.update(
                CallDuration=str(self.truth.call_duration_s or 0), SipResponseCode=str(SIP_CODES[status])
            )
            if status == "completed":
                params["Duration"] = str(math.ceil((self.truth.call_duration_s or 0) / 60))
        self.webhooks.deliver(self, self.status_callback, params, kind="status", event=status, seq=seq)

    def callback_params(self, status: str) -> dict[str, str]:
        """The parameters Twilio sends on every webhook of this call."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.sid,
            "CallStatus": status,
            "Called": self.to,
            "Caller": self.from_,
            "Direction": self.direction,
            "From": self.from_,
            "To": self.to,
        }
        for prefix, number in (
            ("Called", self.to),
            ("To", self.to),
            ("Caller", self.from_),
            ("From", self.from_),
        ):
            params.update(
                {
                    f"{prefix}City": "",
                    f"{prefix}State": "",
                    f"{prefix}Zip": "",
                    f"{prefix}Country": _country(number),
                }
            )
        return params

    async def _end(self, status: str) -> None:
        self.end_time = datetime.now(timezone.utc)
        if self.answered_mono is not None and status == "completed":
            self.truth.call_duration_s = round(time.monotonic() - self.answered_mono)
        else:
            self.truth.call_duration_s = 0
        self.truth.sip_response_code = SIP_CODES[status]
        self._fire(status)
        await self.webhooks.drain(self)
        self.webhooks.write_truth(self.truth)


def _options_json(options: CallOptions) -> dict[str, Any]:
    data = asdict(options)
    data["steps"] = [{"step": step_name(s), **asdict(s)} for s in options.steps]
    return data
