"""The `moshi-server` backend: each call is a WebSocket session to a Kyutai Moshi server.

Any server that speaks Kyutai's protocol at `/api/chat` serves (moshi_mlx `local_web` on a Mac, the
PyTorch `moshi.server` on a GPU box, the batched Rust `moshi-server`). The parts:
`moshi_pool.py` picks a server with a free session, `moshi_protocol.py` frames the messages and runs
the Opus codec, `moshi_server_session.py` is one live call (and documents what it measures).

Theory of operation. `open_session` takes a slot from the pool (before any await, so two concurrent
calls can never both take the last one), connects (bounded by `connect_timeout_s`) and waits for the
server's handshake (bounded by `handshake_timeout_s`) before it returns: a call is live only once a
model is ready for it. A server that fails is recorded in the pool (`reachable`, `last_error`) and the
next free one is tried; when every session is taken the answer is `BackendBusy`. `servers()` reports
each server for doctor and /metrics.

This module must never block the event loop, and every wait in it has a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.version import version as websockets_version

from bridge.backends.base import BackendBusy, BackendError, SpeechBackend
from bridge.backends.moshi_pool import ServerPool, ServerSpec, ServerState
from bridge.backends.moshi_protocol import (
    Handshake,
    Kind,
    Message,
    ServerProtocolError,
    bounded_text,
    codec_delay_ms,
)
from bridge.backends.moshi_server_session import MoshiServerConfig, MoshiServerSession, close_reason

__all__ = ["MoshiServerBackend", "MoshiServerConfig", "MoshiServerSession"]

log = logging.getLogger(__name__)

# A model server is reached directly, never through the HTTP(S)_PROXY of the environment (websockets
# 15+ follows it by default; earlier versions have no `proxy` argument and never do).
_NO_PROXY: dict[str, Any] = {"proxy": None} if int(websockets_version.split(".")[0]) >= 15 else {}


class MoshiServerBackend(SpeechBackend):
    """A pool of Moshi-protocol servers; one WebSocket session per call."""

    name = "moshi-server"

    def __init__(self, config: MoshiServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.load_seconds = None  # the model loads on the server, not here
        self.pool = ServerPool(config.servers)
        self._sessions: dict[MoshiServerSession, ServerState] = {}  # live sessions and their slots

    async def load(self) -> None:
        """Nothing to load here (the model lives on the servers); check the Opus codec is installed,
        so a missing one stops the server at start rather than refusing every call."""
        try:
            import sphn  # noqa: F401
        except ImportError as exc:
            raise BackendError(
                f"the moshi-server backend needs sphn for Opus: pip install sphn, or the moshi extra ({exc})"
            ) from exc
        await asyncio.to_thread(codec_delay_ms)  # measured once here, not on a call's event loop

    @property
    def busy(self) -> bool:
        return self.pool.busy

    @property
    def capacity(self) -> int:
        return self.pool.capacity  # the sessions of every server in MOSHI_SERVER_URLS

    def servers(self) -> list[dict[str, object]]:
        """Each server: URL (no credentials), capacity, sessions in use, reachable, last error."""
        return [state.as_dict() for state in self.pool.states]

    async def open_session(self, call_id: str, max_seconds: float) -> MoshiServerSession:
        if max_seconds <= 0:
            raise BackendError(f"call {call_id}: max_seconds must be positive, got {max_seconds}")
        tried: list[ServerState] = []
        failures: list[str] = []
        while (state := self.pool.take(tuple(tried))) is not None:  # claimed before any await
            tried.append(state)
            try:
                ws, handshake, handshake_ms = await self._connect(state.spec)
            except BaseException as err:
                self.pool.release(state)
                if not isinstance(err, BackendError):
                    raise
                self._note_error(state, str(err), reachable=False)
                state.sessions_failed += 1
                failures.append(f"{state.spec.display}: {err}")
                log.warning("call %s: moshi server %s: %s", call_id, state.spec.display, err)
                continue
            state.reachable = True
            state.sessions_opened += 1
            session = MoshiServerSession(
                self.config,
                state.spec,
                call_id,
                max_seconds,
                ws,
                handshake,
                handshake_ms,
                clock=self.clock,
                on_error=functools.partial(self._note_error, state, reachable=None),
                on_closed=self._session_closed,
            )
            self._sessions[session] = state
            return session
        if failures:
            raise BackendError(f"call {call_id}: no moshi server could take the call: " + "; ".join(failures))
        raise BackendBusy(self.pool.describe_busy())

    async def _connect(self, spec: ServerSpec) -> tuple[ClientConnection, Handshake, float]:
        cfg = self.config
        started = self.clock()
        try:
            ws = await websockets.connect(
                spec.url,
                open_timeout=cfg.connect_timeout_s,
                close_timeout=cfg.close_timeout_s,
                max_size=cfg.max_message_bytes,
                max_queue=64,
                compression=None,  # Opus does not compress; deflate would only cost CPU
                **_NO_PROXY,
            )
        except TimeoutError:
            raise BackendError(
                f"did not answer within {cfg.connect_timeout_s:g} s (connect timeout)"
            ) from None
        except InvalidStatus as err:
            raise BackendError(
                f"answered HTTP {err.response.status_code} instead of a WebSocket (is the path /api/chat?)"
            ) from None
        except (OSError, WebSocketException) as err:
            raise BackendError(f"refused the connection ({type(err).__name__}: {err})") from None
        try:
            handshake = await asyncio.wait_for(self._await_handshake(ws), cfg.handshake_timeout_s)
        except BaseException as err:
            # No polite close with a server that failed its handshake (and none that a cancelled
            # open could wait for): drop the TCP connection at once.
            ws.transport.abort()
            if isinstance(err, asyncio.TimeoutError):  # not the builtin TimeoutError before 3.11
                raise BackendError(
                    f"sent no handshake within {cfg.handshake_timeout_s:g} s (serving another "
                    "client? moshi_mlx local_web and moshi.server serve one client at a time)"
                ) from None
            if isinstance(err, ConnectionClosed):
                raise BackendError(close_reason(err, cfg.max_message_bytes, "before the handshake")) from None
            if isinstance(err, ServerProtocolError):
                raise BackendError(str(err)) from None
            raise
        return ws, handshake, (self.clock() - started) * 1000.0

    async def _await_handshake(self, ws: ClientConnection) -> Handshake:
        """The handshake, skipping pings and metadata; anything else first is a protocol error."""
        for _ in range(16):
            msg = Message.parse(await ws.recv())
            if msg.kind == Kind.HANDSHAKE:
                return Handshake.parse(msg.payload)
            if msg.kind == Kind.ERROR:
                raise ServerProtocolError(f"refused the session: {bounded_text(msg.payload, 200)}")
            if msg.kind in (Kind.AUDIO, Kind.TEXT):
                raise ServerProtocolError(f"sent {Kind(msg.kind).name.lower()} before the handshake")
        raise ServerProtocolError("sent 16 messages and no handshake")

    def _note_error(self, state: ServerState, reason: str, *, reachable: bool | None) -> None:
        """Record a server's failure; `reachable` None leaves what the last connection attempt said."""
        state.last_error = reason[:300]
        state.last_error_at = time.time()
        if reachable is not None:
            state.reachable = reachable

    def _session_closed(self, session: MoshiServerSession) -> None:
        state = self._sessions.pop(session, None)
        if state is not None:
            self.pool.release(state)

    async def aclose(self) -> None:
        for session in list(self._sessions):
            await session.close()
