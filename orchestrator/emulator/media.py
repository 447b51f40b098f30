"""The carrier's end of a Media Stream: dial the server's WebSocket and play the phone in real time.

`MediaStreamClient` owns the I/O: a signed handshake (through the tunnel route), `connected`, `start`,
a `media` frame every 20 ms on absolute deadlines (silence when the caller is quiet, exactly like
Twilio), the phone's playout, echo and noise, lost and jittered frames, and `stop` when the call ends.
The phone's outbound buffer is the pure `playout.PlayoutBuffer`. It records what it did in the call's ground-truth `stream` section; it never decides the call's fate
(the call playback in `calls.py` does) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import websockets
from scipy.signal import oaconvolve
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from bridge.errors import RemoteProtocolError
from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.protocol import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    Media,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    parse_outbound,
)
from orchestrator.emulator.audio import (
    FRAME,
    RATE,
    CallerScript,
    EchoPath,
    NoiseSource,
    Pcm,
    SpeechDetector,
    SpeechSegment,
    Turn,
    find_speech,
    room_impulse_response,
    threshold_over_floor,
)
from orchestrator.emulator.faults import Faults, FramePlan
from orchestrator.emulator.playout import PlayoutBuffer
from orchestrator.emulator.replay import ReplayCaller
from orchestrator.emulator.step_player import StepPlayer
from orchestrator.emulator.step_truth import overlap_truth, steps_truth
from orchestrator.emulator.steps import Step

logger = logging.getLogger(__name__)

FRAME_S = FRAME / RATE
_SILENCE = b"\xff" * FRAME
_ZEROS: Pcm = np.zeros(FRAME, np.int16)
_ZEROS.setflags(write=False)
USER_AGENT = "Twilio.TmeWs/1.0"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A `<Stream>` from the TwiML."""

    url: str
    parameters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"


def _stamp(mono: float, origin_mono: float, origin_wall: float) -> dict[str, float]:
    return {
        "mono": mono,
        "wall": origin_wall + (mono - origin_mono),
        "ms": round((mono - origin_mono) * 1000, 3),
    }


class MediaStreamClient:
    """One stream of one call. `await run()` returns why it ended: "hangup", "server-closed" or "caller-done".

    `hangup` (an asyncio.Event owned by the call) ends the stream from the carrier side: `stop` is
    sent and the socket closed. `truth` is the dict the stream's ground truth is written into.
    """

    def __init__(
        self,
        *,
        spec: StreamSpec,
        connect_url: str,
        auth_token: str,
        account_sid: str,
        call_sid: str,
        stream_sid: str,
        turns: list[tuple[Turn, Pcm]],
        caller_start_s: float,
        hangup_after_turns: bool,
        faults: Faults,
        hangup: asyncio.Event,
        truth: dict[str, Any],
        notify: Callable[[str, str | None], Awaitable[None]],
        steps: list[tuple[Step, Pcm | None]] | None = None,
        replay: ReplayCaller | None = None,
    ) -> None:
        self.spec, self.connect_url, self.token = spec, connect_url, auth_token
        self.account_sid, self.call_sid, self.stream_sid = account_sid, call_sid, stream_sid
        self.faults, self.hangup, self.truth, self.notify = faults, hangup, truth, notify
        self.hangup_after_turns = hangup_after_turns
        self.script = CallerScript(turns, caller_start_s)
        # scripted steps, when given, are the caller instead of the turns (steps.py, step_player.py)
        self.player = StepPlayer(steps, caller_start_s) if steps else None
        # a recorded caller (orchestrator replay): its frames go out as they first arrived, nothing added
        self.replay = replay.cursor() if replay is not None else None
        self.replay_end_s = replay.end_s if replay is not None else 0.0
        self.buffer = PlayoutBuffer()
        self.plan = FramePlan(faults)
        # The phone's own ear (it drives the caller's script): above a noisy line's floor, so line noise
        # echoed back by the far end is not taken for the model speaking.
        floor = -120.0 if faults.noise_dbfs is None else faults.noise_dbfs
        self.heard_vad = SpeechDetector(threshold_over_floor(floor))
        self.caller_frames: list[
            npt.NDArray[np.float32]
        ] = []  # the caller's own voice, before echo and noise
        echo = faults.echo
        self._direct = 0  # the room's direct-path tap after the bulk delay
        rir = None
        if echo and echo.room:
            rir, self._direct = room_impulse_response(echo.rt60_s, echo.distance_m, faults.seed)
        self.echo = EchoPath(echo.delay_ms, echo.loss_db, rir) if echo else None
        self._unsent: str | None = None  # the frame being captured: it leaves once its last sample exists
        self._unsent_delay = 0.0
        self.noise = NoiseSource(faults.noise_dbfs, faults.seed) if faults.noise_dbfs is not None else None
        self.heard: list[bytes] = []
        self.sent_pcm: list[Pcm] = []
        # the line's parts apart (float, before μ-law): the echo of what played, and the line's noise
        self.echo_frames: list[npt.NDArray[np.float32]] = []
        self.noise_frames: list[npt.NDArray[np.float32]] = []
        self._outbox: asyncio.Queue[tuple[float, str | None]] = asyncio.Queue()
        self._unechoed: dict[str, deque[dict[str, Any]]] = {}  # ground-truth entries of marks not echoed yet
        self._seq = 0
        self._chunk = 0  # media chunks numbered (sent or about to be)
        self._t0 = 0.0
        self._wall0 = 0.0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _now_ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 3)

    async def run(self) -> str:
        url = self.spec.url
        headers = {
            "x-twilio-signature": RequestValidator(self.token).compute_signature(url, {}),
            "User-Agent": USER_AGENT,
        }
        self.truth.update(
            url=url, connect_url=self.connect_url, stream_sid=self.stream_sid, name=self.spec.name
        )
        self.truth["custom_parameters"] = dict(self.spec.parameters)
        try:
            ws = await connect(self.connect_url, additional_headers=headers, open_timeout=10, max_size=2**20)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            self.truth["error"] = f"31920 - Stream - WebSocket - Handshake Error: {exc}"
            await self.notify("stream-error", self.truth["error"])
            return "connect-failed"
        async with ws:
            return await self._stream(ws)

    async def _stream(self, ws: Any) -> str:
        await ws.send(Connected().serialize())
        start = Start(
            self._next_seq(),
            self.stream_sid,
            self.account_sid,
            self.call_sid,
            custom_parameters=dict(self.spec.parameters),
        )
        self._t0, self._wall0 = time.monotonic(), time.time()
        await ws.send(start.serialize())
        self.truth["start_sent"] = {"mono": self._t0, "wall": self._wall0}
        self.truth.update(
            frames=0, frames_sent=0, frames_lost=[], marks=[], clears=[], warnings=[], dtmf_sent=[]
        )
        await self.notify("stream-started", None)
        sender = asyncio.create_task(self._sender(ws))
        receiver = asyncio.create_task(self._receiver(ws))
        ticker = asyncio.create_task(self._ticker())
        hangup = asyncio.create_task(self.hangup.wait())
        done, _ = await asyncio.wait({receiver, ticker, hangup}, return_when=asyncio.FIRST_COMPLETED)
        reason = "server-closed" if receiver in done else ("hangup" if hangup in done else ticker.result())
        ticker.cancel()
        hangup.cancel()
        if reason != "server-closed":
            if self._unsent is not None:  # the frame in capture leaves once its last sample exists, then stop
                end = self._t0 + self.truth["frames"] * FRAME_S
                self._outbox.put_nowait((end + self._unsent_delay, self._unsent))
                self._unsent = None
            stop = Stop(self._next_seq(), self.stream_sid, self.account_sid, self.call_sid)
            self._outbox.put_nowait((0.0, stop.serialize()))
            self.truth["stop_sent"] = _stamp(time.monotonic(), self._t0, self._wall0)
        self._outbox.put_nowait((0.0, None))
        try:
            await asyncio.wait_for(sender, timeout=2.0)
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        receiver.cancel()
        await ws.close()
        self._finish(reason)
        await self.notify("stream-stopped", None)
        return reason

    async def _ticker(self) -> str:
        """The phone's clock: one frame every 20 ms on absolute deadlines (no drift from sleep overshoot)."""
        k = 0
        while True:
            deadline = self._t0 + k * FRAME_S
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._tick(k, deadline)
            k += 1
            elapsed = k * FRAME_S
            limit = self.faults.hangup_after_stream_s
            if limit is not None and elapsed >= limit:
                self.truth["hangup_fault_at_ms"] = round(elapsed * 1000, 3)
                return "hangup"
            caller = self.player or self.script
            if (self.player is not None and self.player.hung_up) or (self.hangup_after_turns and caller.done):
                return "caller-done"
            if self.replay is not None and self.replay.done and elapsed >= self.replay_end_s:
                return "caller-done"

    def _tick(self, k: int, deadline: float) -> None:
        # Frame k-1 was captured over [20(k-1), 20k) ms: now that its last sample exists it can leave
        # (a real phone cannot send audio before it was spoken), ahead of the marks echoed at this instant.
        if self._unsent is not None:
            self._outbox.put_nowait((deadline + self._unsent_delay, self._unsent))
            self._unsent = None
        heard, finished = self.buffer.play(FRAME, deadline)
        for name in finished:
            self._echo_mark(name)
        self.heard.append(heard)
        heard_pcm: Pcm
        if heard == _SILENCE:  # nothing queued to play (half of a call): no decode, no detector arithmetic
            heard_pcm = _ZEROS
            self.heard_vad.feed_quiet(FRAME)
        else:
            heard_pcm = ulaw_decode(heard)
            self.heard_vad.feed(heard_pcm)
        onset = self.heard_vad.current_onset
        if self.replay is not None:
            self._replay_tick(k)
            return
        if self.player is not None:
            mic = self.player.next_frame(onset)
            for digit, _ in self.player.take_dtmf():  # a key press leaves with this tick, before its frame
                dtmf = Dtmf(self._next_seq(), self.stream_sid, "inbound_track", digit)
                self._outbox.put_nowait((deadline, dtmf.serialize()))
                self.truth["dtmf_sent"].append({"digit": digit, "at_ms": k * 20.0})
        else:
            mic = self.script.next_frame(onset is not None)
        self.caller_frames.append(mic)
        if self.echo is not None:
            self.echo.feed(heard_pcm)
            part = self.echo.take(FRAME)
            self.echo_frames.append(part)
            mic = mic + part
        if self.noise is not None:
            part = self.noise.take(FRAME)
            self.noise_frames.append(part)
            mic = mic + part
        if self.echo is None and self.noise is None:  # the script's int16 samples, exactly
            pcm = mic.astype(np.int16)
        else:
            pcm = np.clip(np.round(mic), -32768, 32767).astype(np.int16)
        self.sent_pcm.append(pcm)
        self.truth["frames"] = k + 1
        fate = self.plan.fate(k + 1)
        if fate.lost:
            self.truth["frames_lost"].append({"frame": k + 1, "timestamp_ms": k * 20})
            return
        self._chunk += 1
        chunk = self._chunk
        media = Media(self._next_seq(), self.stream_sid, "inbound", chunk, k * 20, ulaw_encode(pcm))
        self._unsent, self._unsent_delay = media.serialize(), fate.delay_s

    def _replay_tick(self, k: int) -> None:
        """The recorded frames that first arrived during this tick, each sent at its recorded time."""
        for frame in self.replay.due((k + 1) * FRAME_S) if self.replay is not None else ():
            self._chunk += 1
            media = Media(
                self._next_seq(), self.stream_sid, "inbound", self._chunk, frame.timestamp_ms, frame.payload
            )
            self._outbox.put_nowait((self._t0 + frame.at_s, media.serialize()))
            self.sent_pcm.append(ulaw_decode(frame.payload))
            self.truth["frames_sent_replay"] = self.truth.get("frames_sent_replay", 0) + 1
        self.caller_frames.append(np.zeros(FRAME, np.float32))
        self.truth["frames"] = k + 1

    def _echo_mark(self, name: str, flushed: bool = False) -> None:
        self._outbox.put_nowait((0.0, Mark(self._next_seq(), self.stream_sid, name).serialize()))
        pending = self._unechoed.get(name)
        if pending:
            pending.popleft().update(echoed_ms=self._now_ms(), flushed=flushed)

    async def _sender(self, ws: Any) -> None:
        """Send in order; a jittered frame holds back the ones after it, as on one TCP connection."""
        max_late = 0.0
        while True:
            at, text = await self._outbox.get()
            if text is None:
                break
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif at:
                max_late = max(max_late, -delay)
            await ws.send(text)
            if text.startswith('{"event":"media"'):
                self.truth["frames_sent"] += 1  # written to the socket (a closing peer may still drop it)
        self.truth["max_send_lateness_ms"] = round(max_late * 1000, 3)

    async def _receiver(self, ws: Any) -> None:
        try:
            async for text in ws:
                if isinstance(text, bytes):
                    self.truth["warnings"].append(
                        {"code": 31950, "at_ms": self._now_ms(), "reason": "binary frame"}
                    )
                    continue
                try:
                    msg = parse_outbound(text)
                except RemoteProtocolError as exc:
                    self.truth["warnings"].append(
                        {"code": 31951, "at_ms": self._now_ms(), "reason": str(exc)}
                    )
                    continue
                if msg.stream_sid != self.stream_sid:
                    self.truth["warnings"].append(
                        {"code": 31951, "at_ms": self._now_ms(), "reason": "wrong streamSid"}
                    )
                elif isinstance(msg, OutboundMedia):
                    self.buffer.push_audio(msg.payload, time.monotonic())
                elif isinstance(msg, OutboundMark):
                    entry = {"name": msg.name, "received_ms": self._now_ms(), "echoed_ms": None}
                    self.truth["marks"].append(entry)
                    self._unechoed.setdefault(msg.name, deque()).append(entry)
                    for name in self.buffer.push_mark(msg.name, time.monotonic()):
                        self._echo_mark(name)
                elif isinstance(msg, Clear):
                    self.truth["clears"].append(self._now_ms())
                    for name in self.buffer.clear():
                        self._echo_mark(name, flushed=True)
        except websockets.ConnectionClosed:
            pass

    def _finish(self, reason: str) -> None:
        """Write the speech the phone heard and the caller said, on the phone's clock, into the truth.

        Computed from the emulator's own signals with its own code (`audio.find_speech`), never with
        the product's meters: heard speech above the heard line's noise floor, the caller's speech on
        the clean voice before echo and noise were added.
        """
        t = self.truth
        t["ended"] = {"reason": reason, **_stamp(time.monotonic(), self._t0, self._wall0)}
        heard = self.heard_pcm()

        def segments(found: list[SpeechSegment]) -> list[dict[str, float]]:
            out = []
            for seg in found:
                onset_s, end_s = seg.onset / RATE, seg.end / RATE
                out.append(
                    {
                        "onset_ms": onset_s * 1000,
                        "end_ms": end_s * 1000,
                        "onset_mono": self._t0 + onset_s,
                        "onset_wall": self._wall0 + onset_s,
                    }
                )
            return out

        heard_found = find_speech(heard, None)
        t["heard_speech"] = segments(heard_found)
        t["first_heard_speech_onset"] = t["heard_speech"][0] if t["heard_speech"] else None
        t["first_heard_onset_ms"] = t["heard_speech"][0]["onset_ms"] if t["heard_speech"] else None
        t["lost_frames"] = t.get("frames_lost", [])  # alias
        voice = np.concatenate(self.caller_frames) if self.caller_frames else np.zeros(0, np.float32)
        voice_found = find_speech(voice, -40.0)
        t["caller_speech"] = segments(voice_found)
        t["overlap"] = overlap_truth(voice_found, heard_found)
        if self.player is not None:
            t["steps"] = steps_truth(self.player.log, voice, heard_found)
        t["turns"] = [
            {"turn": p.index, "start_ms": p.start / RATE * 1000, "end_ms": p.end / RATE * 1000}
            for p in self.script.played
        ]
        t["last_chunk"] = self._chunk
        if self.echo is not None:
            t["echo"] = self._echo_truth(heard)

    def _echo_truth(self, heard: Pcm) -> dict[str, float | None]:
        """The echo path as the line really had it: first arrival, and the loss over what was played.

        The loss is the energy of all that was heard over the energy of all the echo it made (the whole
        response, its tail past the hang-up included), from the signals themselves.
        """
        assert self.echo is not None
        x = heard.astype(np.float64)
        echo = oaconvolve(x, self.echo.response) if x.size else x
        played, returned = float(np.dot(x, x)), float(np.dot(echo, echo))
        loss = 10.0 * np.log10(played / returned) if played > 0 and returned > 0 else None
        return {
            "direct_delay_ms": (self.echo.delay + self._direct) * 1000.0 / RATE,
            "bulk_delay_ms": self.echo.delay * 1000.0 / RATE,
            "loss_db": loss,
        }

    def heard_pcm(self) -> Pcm:
        return ulaw_decode(b"".join(self.heard)) if self.heard else np.zeros(0, dtype=np.int16)

    def parts(self) -> dict[str, npt.NDArray[np.float32]]:
        """The line's audio apart, on the phone's clock (sample i at media time i/8000): the clean caller,
        and the echo of what played and the noise when the line has them."""
        parts = {"caller": self.caller_frames, "echo": self.echo_frames, "noise": self.noise_frames}
        return (
            {
                name: np.concatenate(frames).astype(np.float32)
                for name, frames in parts.items()
                if frames or name == "caller"
            }
            if self.caller_frames
            else {"caller": np.zeros(0, np.float32)}
        )

    def sent(self) -> Pcm:
        return np.concatenate(self.sent_pcm) if self.sent_pcm else np.zeros(0, dtype=np.int16)
