"""What one peer can hold on the server: connection slots, and time to send a request (nginx's rules).

aiohttp bounds neither the time a client takes to send its request headers nor the number of open
connections, and keeps an idle keep-alive connection for an hour. 20 slowloris connections were held
for 60 s; ~1,020 idle ones under a 1,024 open-file limit made every new connection fail (`/healthz`
too) and asyncio wrote 127,601 "Too many open files" tracebacks in under a minute. Here:

- every connection is in one phase: READING (a request's headers, from the accept or the first byte
  after an idle spell), BUSY (a handler runs: a webhook, a media WebSocket), or IDLE (keep-alive,
  between requests). READING longer than the header timeout, or IDLE longer than the keep-alive
  timeout, is closed. A request body must arrive within the body timeout (408 otherwise);
- at most `cap` connections, a cap below the open-file limit so that the database, recordings, the
  backends and new callers always find descriptors, and for an accept burst (asyncio accepts up to
  the listen backlog at once before the guard sees one); when full, the longest IDLE connection is shed
  first, then the longest READING one, and only if every connection is BUSY is the new one refused
  (503). BUSY connections (live calls, requests being answered) are never shed;
- errors accepting connections (out of descriptors) are logged at most once per interval, with a count.

`ConnectionGuard.protocol_factory` wraps aiohttp's per-connection protocol; `GuardedSite` listens with
it; the guard's middleware tells it when a request starts and ends. Nothing here reads a request.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

FD_RESERVE_MIN = 64
FDS_PER_STREAM = 2  # beside its connection, a live call may hold a recording file and a backend socket
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def file_limit() -> tuple[int, int]:
    """The process's open-file limit (soft, hard); a very large or unlimited soft limit reads as is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def listen_backlog(soft_limit: int) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go before any of
    them reaches the guard: an eighth of the limit, 16 to 128 (aiohttp's default). Smaller, a burst of
    new connections overflows the kernel's queue and waits a SYN retransmission (1 s) to get in."""
    return max(16, min(128, soft_limit // 8))


def connection_cap(configured: int | None, soft_limit: int) -> int:
    """The most connections to hold: MAX_CONNECTIONS when set, never above the file limit less a reserve
    for everything else the server opens (an eighth of the limit, at least 64) and for an accept burst
    (twice the backlog: accepted but not yet admitted, and shed but not yet closed)."""
    reserve = max(FD_RESERVE_MIN, soft_limit // 8) + 2 * listen_backlog(soft_limit)
    auto = max(8, soft_limit - reserve)
    return min(configured, auto) if configured else auto


class Phase(enum.Enum):
    READING = "reading"
    BUSY = "busy"
    IDLE = "idle"


class _Conn:
    __slots__ = ("phase", "since", "transport")

    def __init__(self, transport: asyncio.BaseTransport, now: float) -> None:
        self.transport, self.phase, self.since = transport, Phase.READING, now


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's RequestHandler behind a doorman: admitted or refused, phase kept current."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard, self.inner = guard, inner
        self.conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn = self.guard.admit(self.inner, transport)
        if self.conn is None:
            transport.write(_REFUSED)  # type: ignore[attr-defined]
            transport.close()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        if conn.phase is Phase.IDLE:  # the next request's first bytes: its headers are now on the clock
            conn.phase, conn.since = Phase.READING, time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.conn is not None else None  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.guard.forget(self.inner)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.inner.resume_writing()


class ConnectionGuard:
    """The server's connection slots and phase timeouts (see the module docstring)."""

    def __init__(
        self,
        *,
        cap: int,
        header_timeout_s: float,
        keepalive_timeout_s: float,
        body_timeout_s: float,
        streams: Callable[[], int] = lambda: 0,
        sweep_s: float = 0.5,
    ) -> None:
        self.cap, self.header_timeout_s, self.keepalive_timeout_s = cap, header_timeout_s, keepalive_timeout_s
        self.body_timeout_s, self.streams, self.sweep_s = body_timeout_s, streams, sweep_s
        self.conns: dict[Any, _Conn] = {}  # aiohttp's RequestHandler -> its slot
        self.counts = {
            "shed_idle": 0,
            "shed_reading": 0,
            "refused": 0,
            "header_timeouts": 0,
            "idle_timeouts": 0,
            "body_timeouts": 0,
        }
        self._sweeper: asyncio.Task[None] | None = None
        self._accept_log: AcceptErrorLog | None = None

    # -- slots ------------------------------------------------------------------------------------

    def protocol_factory(self, inner_factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, inner_factory())

    @property
    def limit(self) -> int:
        """Connections admitted now: the cap less the descriptors live calls hold besides theirs."""
        return max(1, self.cap - FDS_PER_STREAM * self.streams())

    def admit(self, handler: Any, transport: asyncio.BaseTransport) -> _Conn | None:
        while len(self.conns) >= self.limit:
            if not self._shed():
                self.counts["refused"] += 1
                return None
        conn = self.conns[handler] = _Conn(transport, time.monotonic())
        return conn

    def _shed(self) -> bool:
        for phase, counter in ((Phase.IDLE, "shed_idle"), (Phase.READING, "shed_reading")):
            oldest = min(
                ((h, c) for h, c in self.conns.items() if c.phase is phase),
                key=lambda hc: hc[1].since,
                default=None,
            )
            if oldest is not None:
                self.counts[counter] += 1
                self._close(*oldest)
                return True
        return False

    def _close(self, handler: Any, conn: _Conn) -> None:
        self.conns.pop(handler, None)
        conn.transport.abort()  # type: ignore[attr-defined]  # its descriptor is what we need back

    def forget(self, handler: Any) -> None:
        self.conns.pop(handler, None)

    def phases(self) -> dict[str, int]:
        out = {p.value: 0 for p in Phase}
        for conn in self.conns.values():
            out[conn.phase.value] += 1
        return out

    # -- timeouts ---------------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Close connections past their phase's deadline."""
        now = time.monotonic() if now is None else now
        for handler, conn in list(self.conns.items()):
            if conn.phase is Phase.READING and now - conn.since > self.header_timeout_s:
                self.counts["header_timeouts"] += 1
                self._close(handler, conn)
            elif conn.phase is Phase.IDLE and now - conn.since > self.keepalive_timeout_s:
                self.counts["idle_timeouts"] += 1
                self._close(handler, conn)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        conn = self.conns.get(request.protocol)
        if conn is not None:
            conn.phase = Phase.BUSY
        try:
            if request.body_exists and request.headers.get("Upgrade", "").lower() != "websocket":
                try:
                    await asyncio.wait_for(request.read(), self.body_timeout_s)  # post() reads it from here
                except asyncio.TimeoutError:
                    self.counts["body_timeouts"] += 1
                    return web.Response(
                        status=408, text="request body too slow\n", headers={"Connection": "close"}
                    )
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            if conn is not None and request.protocol in self.conns:
                conn.phase, conn.since = Phase.IDLE, time.monotonic()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._accept_log = AcceptErrorLog(loop.get_exception_handler())
        loop.set_exception_handler(self._accept_log)
        self._sweeper = loop.create_task(self._sweep_forever(), name="connection-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._accept_log is not None:
            asyncio.get_running_loop().set_exception_handler(self._accept_log.previous)
            self._accept_log = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            self.sweep()


class AcceptErrorLog:
    """An event-loop exception handler: accept errors (out of descriptors, buffers or memory) are logged
    at most once per `interval_s`, with how many were held back; everything else goes on as before."""

    def __init__(self, previous: Any, interval_s: float = 10.0) -> None:
        self.previous, self.interval_s = previous, interval_s
        self.held_back = 0
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        accept = isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS
        if not accept and "accept" not in str(context.get("message", "")):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval_s:
            self.held_back += 1
            return
        more = (
            f" ({self.held_back} more in the last {now - self._last:.0f} s)"
            if self._last and self.held_back
            else ""
        )
        log.error(
            "cannot accept connections: %s%s; is the open-file limit (ulimit -n) too low for "
            "MAX_CONNECTIONS?",
            exc or context.get("message"),
            more,
        )
        self._last, self.held_back = now, 0


class GuardedSite(web.BaseSite):
    """A TCP listener whose every connection goes through the guard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        backlog: int | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog or listen_backlog(file_limit()[0]))
        self._host, self._port, self.guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        await self.guard.start()
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )

    async def stop(self) -> None:
        await self.guard.stop()
        await super().stop()
