"""`GET /media`: the Twilio Media Streams WebSocket.

The handshake's `x-twilio-signature` is checked against the wss:// URL written in our TwiML (built from
PUBLIC_URL), before the upgrade. `start.customParameters` must carry a known call id and that call's
random token; anything else is stored as rejected and the socket closed with the reason. Malformed
frames are counted by the sans-I/O `MediaStream` and never reach another call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bridge.backends.base import BackendBusy
from bridge.protocol import MAX_GAP_MS, Dtmf, MediaStream, Start, Stop
from bridge.session import MediaLink, MediaSession, SessionConfig
from bridge.trace import trace_path
from orchestrator.lifecycle import CallState
from orchestrator.settings import Settings, log_safe, valid_call_id, valid_sid
from orchestrator.web.dtmf import DtmfBatch
from orchestrator.web.signing import handshake_problem
from orchestrator.web.state import STATE, AppState
from orchestrator.web.wswrite import BatchSender
from orchestrator.workers import move_claim

log = logging.getLogger(__name__)
MAX_FRAME = 64 * 1024


class LiveCall:
    """The glue between one socket, one call row and one media session."""

    def __init__(
        self,
        state: AppState,
        ws: web.WebSocketResponse,
        call: dict[str, Any],
        session: MediaSession,
        start: Start,
    ) -> None:
        self.state = state
        self.ws = ws
        self.call = call
        self.session = session
        self.start = start
        self.transcript: list[tuple[float, str]] = []
        self.dtmf = DtmfBatch(origin=session.t0)  # digit times on the analysis's clock
        self.hangup_reason: str | None = None

    async def remote_ended(self, reason: str) -> None:
        """The carrier says the call is over: stop media and close the socket."""
        self.hangup_reason = self.hangup_reason or reason
        self.session.done.set()
        await self.ws.close(code=1000, message=reason.encode()[:120])

    async def interrupt(self, reason: str) -> None:
        """Our side is going away (shutdown): record it on the call, then stop media and the socket."""
        self.hangup_reason = reason
        await self.state.service.record(
            source="local",
            type="interrupted",
            call_id=self.call["id"],
            payload={"reason": reason},
            detail=reason,
        )
        await self.session.finish(reason)
        await self.ws.close(code=1001, message=b"server shutting down")


async def media_websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    problem = handshake_problem(state.settings, request)
    if problem:
        await state.service.record(
            source="media",
            type="handshake",
            rejected=problem,
            payload={"peer": request.remote, "path": request.path},
        )
        return web.Response(status=403, text="invalid signature\n")
    # compress=False: never negotiate permessage-deflate (Twilio does not use it; base64 mu-law does not
    # compress), else zlib runs on every frame both ways when a client offers it.
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=True, compress=False)
    await ws.prepare(request)
    state.websockets.add(ws)
    link = MediaLink(max_frame_bytes=MAX_FRAME)  # the stream's one driver (bridge.session)
    stream = link.stream
    reader = _Reader()
    try:
        await _read_loop(state, ws, link, BatchSender(ws, request.transport), reader)
    except Exception as exc:  # MemoryError included: whatever broke, this stream ends the normal way
        reader.end = "internal_error"
        reader.problem = f"{exc.__class__.__name__}: {exc}"[:300]
        log.exception("media stream failed (%s)", reader.live.call["id"] if reader.live else "no call yet")
        if not ws.closed:
            await ws.close(code=1011, message=b"internal error")
    finally:
        state.websockets.discard(ws)
        if reader.live is not None:
            await _end_live_call(state, reader.live, reader.end, stream, reader.problem)
        else:
            if reader.problem:
                await state.service.record(
                    source="media",
                    type="media_error",
                    rejected=reader.problem,
                    payload={"peer": request.remote},
                )
            if not ws.closed:
                await ws.close()
    return ws


class _Refused(Exception):
    """A start refused after its backend session was opened (closed already)."""


class _Reader:
    """What the read loop leaves behind for the end-of-stream path, even when it raised."""

    __slots__ = ("end", "live", "problem")

    def __init__(self) -> None:
        self.live: LiveCall | None = None
        self.end = "ws_closed"
        self.problem: str | None = None  # a protocol error or an exception that ended the stream


async def _read_loop(
    state: AppState, ws: web.WebSocketResponse, link: MediaLink, sender: BatchSender, reader: _Reader
) -> None:
    """Feed every frame to the media link (media and marks reach the live session there) and handle the
    events it returns until the stream ends.

    One plain `receive()` per frame (this runs 50 times a second per call). When the session ends on
    our side (budget, dead backend, the carrier hung up), its watcher closes the socket, which ends
    the pending `receive()`. Sets `reader.live` as soon as a call is live and `reader.end` to why the
    loop returned, so that whatever happens the caller ends the call through one path.
    """
    stream = link.stream
    errors_seen = 0
    start_by = time.monotonic() + state.settings.media_start_timeout_s
    while True:
        if reader.live is None:  # the handshake is bounded: an upgraded socket must say `start` in time
            try:
                msg = await ws.receive(timeout=max(0.001, start_by - time.monotonic()))
            except asyncio.TimeoutError:
                reason = (
                    f"no start within {state.settings.media_start_timeout_s:g} s of the WebSocket upgrade"
                )
                await state.service.record(
                    source="media",
                    type="start_timeout",
                    rejected=reason,
                    payload={"frames": stream.frames_received},
                )
                await ws.close(code=1008, message=reason.encode()[:120])
                reader.end = "start_timeout"
                return
        else:
            msg = await ws.receive()
        now = time.monotonic()
        live = reader.live
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):  # CLOSE, CLOSING, CLOSED, ERROR
            ended_here = live is not None and live.session.done.is_set()
            reader.end = "session_ended" if ended_here else "ws_closed"
            return
        for ev in link.receive(msg.data, now):
            if isinstance(ev, Start):
                live = reader.live = await _on_start(state, ws, link, ev, sender)
                if live is None:
                    reader.end = "start_rejected"
                    return
            elif isinstance(ev, Dtmf) and live is not None:
                live.dtmf.add(ev.digit, ev.track, now)  # stored in batches (orchestrator.web.dtmf)
            elif isinstance(ev, Stop):
                reader.end = "stop"
                return
        if live is not None and live.dtmf.due(now):
            await _store_dtmf(state, live)
        if stream.errors > errors_seen:
            state.prom.media_errors.inc(stream.errors - errors_seen)
            errors_seen = stream.errors
        if stream.close_reason:
            log.warning(
                "closing media stream %s: %s", live.call["id"] if live else "(no call)", stream.close_reason
            )
            if live is None:
                await state.service.record(
                    source="media",
                    type="garbage",
                    rejected=stream.close_reason,
                    payload={"errors": [e.reason for e in stream.error_log]},
                )
            else:
                reader.problem = stream.close_reason
                await state.service.record(
                    source="media",
                    type="protocol_error",
                    call_id=live.call["id"],
                    payload={"reason": stream.close_reason, "errors": [e.reason for e in stream.error_log]},
                    detail=stream.close_reason,
                )
            await ws.close(code=1008, message=stream.close_reason.encode()[:120])
            reader.end = "protocol_errors"
            return


async def _store_dtmf(state: AppState, live: LiveCall) -> None:
    payload = live.dtmf.take()
    if payload is not None:
        await state.service.record(source="media", type="dtmf", call_id=live.call["id"], payload=payload)


async def _close_when_done(live: LiveCall) -> None:
    """The session ended on our side: close the socket (the TwiML's <Hangup/> then ends the call)."""
    await live.session.done.wait()
    if not live.ws.closed:
        reason = live.hangup_reason or live.session.backend.ended or "session ended"
        await live.ws.close(code=1000, message=reason.encode()[:120])


def start_identifier_problem(start: Start, call_id: str | None) -> str | None:
    """Why a `start`'s identifiers are not what Twilio and our TwiML send; None when they are."""
    for name, kind, value in (
        ("start.callSid", "CA", start.call_sid),
        ("start.streamSid", "MZ", start.stream_sid),
        ("start.accountSid", "AC", start.account_sid),
    ):
        if not valid_sid(kind, value):
            return f"invalid {name} {log_safe(value, 40)}: expected {kind} and 32 hex digits"
    if call_id is not None and not valid_call_id(call_id):
        return f"invalid call_id {log_safe(call_id, 40)} in start.customParameters"
    return None


async def _on_start(
    state: AppState, ws: web.WebSocketResponse, link: MediaLink, start: Start, sender: BatchSender
) -> LiveCall | None:
    params = start.custom_parameters
    call_id, token = params.get("call_id"), params.get("token")
    payload = {
        "streamSid": start.stream_sid,
        "callSid": start.call_sid,
        "tracks": list(start.tracks),
        "customParameters": {k: ("(redacted)" if k == "token" else v) for k, v in params.items()},
    }
    bad_ids = start_identifier_problem(start, call_id)
    if bad_ids:  # never stored or logged raw: escaped and shortened
        payload = {k: (log_safe(v, 64) if isinstance(v, str) else v) for k, v in payload.items()}
        payload["customParameters"] = {
            log_safe(k, 32): log_safe(v, 64) for k, v in params.items() if k != "token"
        }
        call_id = None

    call: dict[str, Any] | None = None
    reason: str | None
    if bad_ids:
        reason = bad_ids
    elif not call_id:
        reason = f"unknown call id {log_safe(call_id, 40)} in start.customParameters"
    else:
        call, reason = await state.service.authorize_start(call_id, token, start.call_sid)
    if reason is None and call is not None and call["id"] in state.sessions:
        reason = "a media stream is already open for this call"
    me = state.settings.worker
    if reason is None and call is not None and me and call.get("worker") != me:
        # claimed on another worker (or none) but streaming here: the session it holds is this one's
        log.warning(
            "call %s claimed on %s streams to worker %s: claim moved", call["id"], call.get("worker"), me
        )
        call_id_here = str(call["id"])
        await state.service.run(lambda s: move_claim(s, call_id_here, me))
    backend_session = None
    if reason is None and call is not None:
        try:
            backend_session = await state.backend.open_session(call["id"], state.settings.max_call_seconds)
        except BackendBusy as exc:
            reason = f"model busy: {exc}"
        except Exception as exc:  # BackendError or a bug: whatever it raised, this start is refused cleanly
            reason = f"backend failed to start: {exc.__class__.__name__}: {exc}"[:300]
    if reason is not None or call is None or backend_session is None:
        await state.service.record(
            source="media",
            type="start_rejected",
            call_id=call_id,
            call_sid=None if bad_ids else start.call_sid,
            payload=payload,
            rejected=reason,
        )
        log.warning("media start rejected: %s", log_safe(reason, 200))
        await ws.close(code=1008, message=(reason or "rejected").encode()[:120])
        return None
    try:
        return await _go_live(state, ws, link, start, sender, call, backend_session, payload)
    except _Refused:
        return None
    except BaseException:  # nothing is live yet: give the backend slot back before the error goes on
        await backend_session.close()
        raise


async def _go_live(
    state: AppState,
    ws: web.WebSocketResponse,
    link: MediaLink,
    start: Start,
    sender: BatchSender,
    call: dict[str, Any],
    backend_session: Any,
    payload: dict[str, Any],
) -> LiveCall:
    rec = await state.service.record(
        source="media", type="start", call_id=call["id"], call_sid=start.call_sid, payload=payload
    )
    if rec.call is None or CallState(rec.call["state"]).terminal:
        # the call ended between the check above and now (a terminal callback won the race)
        await state.service.record(
            source="media",
            type="start_rejected",
            call_id=call["id"],
            call_sid=start.call_sid,
            payload=payload,
            rejected=f"call already {rec.call['state'] if rec.call else 'gone'}: "
            "no stream for a call that has ended",
        )
        await backend_session.close()
        await ws.close(code=1008, message=b"call already ended")
        raise _Refused
    recording = None
    if state.settings.recordings_dir is not None:
        recording = Path(state.settings.recordings_dir) / f"{call['id']}.wav"
    await state.service.attach_stream(
        call["id"], stream_sid=start.stream_sid, recording_path=str(recording) if recording else None
    )
    if rec.call:
        state.prom.call_state(call["id"], rec.call["state"])

    jitter_ms = state.settings.jitter_buffer_ms
    if jitter_ms is None:  # a model's output comes in bursts; the echo backend's does not
        jitter_ms = 60.0 if state.backend.name in ("moshi", "moshi-server") else 20.0
    config = SessionConfig(
        max_lead_s=max(state.settings.max_lead_ms, jitter_ms + 80.0) / 1000.0,
        jitter_buffer_s=jitter_ms / 1000.0,
        recording=recording,
        max_media_ahead_s=MAX_GAP_MS / 1000.0,
        aec=state.settings.aec == "on",
        trace=trace_path(recording) if recording is not None and state.settings.media_trace == "on" else None,
    )
    state.spawn(  # what `orchestrator replay` needs to run this call's media again alike; off the start path
        state.service.record(
            source="local",
            type="media_config",
            call_id=call["id"],
            payload=media_config(state.settings, state.backend.name, config),
        ),
        "media-config",
    )
    live_ref: list[LiveCall] = []

    def on_long_gap(ts: int, missing: int) -> None:
        state.spawn(
            state.service.record(
                source="media",
                type="long_gap",
                call_id=call["id"],
                payload={"timestamp_ms": ts, "missing_ms": missing},
            ),
            "gap",
        )

    session = link.open_session(
        call_id=call["id"],
        backend=backend_session,
        send=sender.send,
        config=config,
        on_text=lambda at, s: live_ref[0].transcript.append((at, s)),
        on_long_gap=on_long_gap,
    )
    live = LiveCall(state, ws, call, session, start)
    live_ref.append(live)
    state.sessions[call["id"]] = live
    session.start()
    state.spawn(_close_when_done(live), f"watch-{call['id']}")
    return live


def media_config(settings: Settings, backend: str, config: SessionConfig) -> dict[str, Any]:
    """The settings that shaped a call's media path (informative; no secret, no phone number)."""
    doc: dict[str, Any] = {
        "backend": backend,
        "aec": "on" if config.aec else "off",
        "jitter_buffer_ms": round(config.jitter_buffer_s * 1000.0, 3),
        "max_lead_ms": round(config.max_lead_s * 1000.0, 3),
        "media_trace": config.trace is not None,
    }
    if backend == "echo":
        doc.update(
            echo_mode=settings.echo_mode,
            echo_delay_ms=settings.echo_delay_ms,
            echo_greeting=settings.echo_greeting,
        )
    return doc


async def _end_live_call(
    state: AppState, live: LiveCall, end: str, stream: MediaStream, problem: str | None = None
) -> None:
    """The one end-of-stream path: media stopped and the backend slot released first (nothing below
    can keep them), then the evidence and the events stored, then the analysis spawned."""
    call_id = live.call["id"]
    session = live.session
    backend_reason = session.backend.ended
    try:
        await session.finish(live.hangup_reason or backend_reason or problem or end)
    finally:
        state.sessions.pop(call_id, None)
        if not live.ws.closed:
            await live.ws.close(code=1000, message=(backend_reason or "bye").encode()[:120])
    errors = {
        "protocol_errors": stream.errors,
        "sequence_gaps": stream.sequence_gaps,
        "errors": [f"{e.code} {e.reason}" for e in stream.error_log],
    }
    if problem or session.failure:
        errors["problem"] = problem or session.failure
    await _store_dtmf(state, live)  # digits still waiting for their batch
    kind = "stop" if end == "stop" else "ws_closed"
    await state.service.record(source="media", type=kind, call_id=call_id, payload={"end": end, **errors})
    if end == "internal_error" or session.failure:
        why = problem if end == "internal_error" else session.failure
        await state.service.record(
            source="local", type="media_error", call_id=call_id, payload={"reason": why}, detail=why
        )
    if backend_reason:
        # the backend cannot go on (budget spent, dead worker): we hang up by closing the stream;
        # the TwiML's <Hangup/> then ends the call at the carrier
        await state.service.note_backend_ended(call_id, backend_reason)
    from orchestrator.evaluation import finalize_media

    state.spawn(finalize_media(state, call_id, session, live.transcript), f"finalize-{call_id}")
