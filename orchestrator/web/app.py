"""The aiohttp application: one port for callbacks, TwiML, the media WebSocket, health and metrics.

Built by `create_app()` so tests get exactly the app `orchestrator serve` runs. Start/stop pairs live
in `cleanup_ctx`: the store's writer thread, the speech backend, and open media sessions (closed and
recorded as interrupted on shutdown, so nothing is left half-written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from bridge.backends.base import SpeechBackend
from orchestrator.errors import StoreUnreachable
from orchestrator.settings import Settings
from orchestrator.stores import open_store
from orchestrator.web.prom import Prom
from orchestrator.web.state import STATE, AppState
from orchestrator.writer import AsyncService

log = logging.getLogger(__name__)
__all__ = ["STATE", "AppState", "create_app", "make_backend"]


def make_backend(settings: Settings) -> SpeechBackend:
    from bridge.backends import registry

    return registry.create(settings)


def create_app(
    settings: Settings, *, backend: SpeechBackend | None = None, reconcile: bool = True
) -> web.Application:
    from orchestrator.web import hooks, media
    from orchestrator.web.limits import ConnectionGuard, connection_cap, file_limit

    state = AppState(
        settings=settings,
        service=AsyncService(lambda: open_store(settings.db), retry_s=settings.db_retry_s),
        backend=backend or make_backend(settings),
        prom=Prom(),
        facts={"public_url": settings.public_url, "backend": (backend.name if backend else settings.backend)},
    )
    state.guard = ConnectionGuard(
        cap=connection_cap(settings.max_connections, file_limit()[0]),
        header_timeout_s=settings.header_timeout_s,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        streams=lambda: len(state.sessions),
    )
    app = web.Application(client_max_size=256 * 1024, middlewares=[state.guard.middleware, store_unreachable])
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/twilio/status", hooks.status_callback)
    app.router.add_post("/twilio/stream-status", hooks.stream_status_callback)
    app.router.add_post("/twilio/voice", hooks.voice_webhook)
    app.router.add_get("/media", media.media_websocket)

    async def store_ctx(app: web.Application) -> Any:
        await state.service.start()
        yield
        await state.service.close()

    async def backend_ctx(app: web.Application) -> Any:
        await state.backend.load()
        if state.backend.load_seconds is not None:
            state.facts["model_load_s"] = state.backend.load_seconds
        yield
        await state.backend.aclose()

    async def interrupt_sessions(app: web.Application) -> None:
        # on_shutdown runs before aiohttp closes open connections: end open media sessions first
        # (each records that it was interrupted), then the sockets
        for session in list(state.sessions.values()):
            await session.interrupt("interrupted: server shutting down")
        for ws in list(state.websockets):
            await ws.close(code=1001, message=b"server shutting down")

    async def sessions_ctx(app: web.Application) -> Any:
        from orchestrator.evaluation import AnalysisPool

        state.analysis = AnalysisPool()
        state.spawn(_warm_up(state), "warm-up")
        yield
        if state.background:  # follow-up work (analysis, evaluation) finishes before the store closes
            await asyncio.wait(state.background, timeout=10)
        await asyncio.to_thread(state.analysis.shutdown)

    async def reconcile_ctx(app: web.Application) -> Any:
        # unfinished calls asked of the carrier now (in the background: readiness does not wait on
        # the carrier), then every RECONCILE_INTERVAL_S (0: off); stopped first at shutdown
        from orchestrator.reconcile import Reconciler

        task = state.spawn(Reconciler.for_state(state).run(settings.reconcile_interval_s), "reconcile")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def retention_ctx(app: web.Application) -> Any:
        from orchestrator.retention import run_retention

        task = state.spawn(run_retention(state), "recordings-retention")  # at start, then every 10 min
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def worker_ctx(app: web.Application) -> Any:
        # registered once the backend is loaded (its capacity is known), stopped before the store closes
        from orchestrator.web.worker_loop import WorkerLoop
        from orchestrator.workers import worker_capacity

        loop = WorkerLoop(state, worker_capacity(settings, state.backend.capacity))
        state.worker = await loop.start()
        task = state.spawn(loop.run(), "worker-heartbeat")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):  # a database that is away: the others see it go stale
            await loop.stop()

    app.on_shutdown.append(interrupt_sessions)  # type: ignore[arg-type]
    reconciling = reconcile and settings.reconcile_interval_s > 0
    app.cleanup_ctx.extend(
        [
            store_ctx,
            backend_ctx,
            sessions_ctx,  # at shutdown it waits for the background tasks: the heartbeat stops first
            *([worker_ctx] if settings.worker else []),
            retention_ctx,
            *([reconcile_ctx] if reconciling else []),
        ]
    )
    return app


async def _warm_up(state: AppState) -> None:
    """Load what startup leaves out (scipy.signal/stats for the end-of-call analysis, ~0.6 s) once the
    server is up, off the event loop, so neither readiness nor the first call waits for it; start the
    analysis process meanwhile. `state.warmed` is set when both are done (or failed: nothing waits on
    the warm-up for correctness, only for quiet timing)."""
    try:
        await asyncio.sleep(0.5)

        def load() -> None:
            import bridge.analysis  # noqa: F401
            import orchestrator.evaluation  # noqa: F401

        await asyncio.gather(asyncio.to_thread(load), state.analysis.warm())
    finally:
        state.warmed.set()


async def healthz(request: web.Request) -> web.Response:
    """What this server is and holds; 503 while its database does not answer (orchestrator.writer)."""
    state = request.app[STATE]
    db = state.service.health()
    ok = db["state"] == "ok"
    return web.json_response(
        {
            "ok": ok,
            "db": db,
            "backend": state.backend.name,
            "busy": state.backend.busy,
            "active_streams": len(state.sessions),
            "public_url": state.settings.public_url,
            "servers": state.backend.servers(),
            "worker": _worker_health(state),
        },
        status=200 if ok else 503,
    )


@web.middleware
async def store_unreachable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A write the database did not take within DB_RETRY_S (StoreUnreachable from the writer) is
    answered 503, not aiohttp's 500: nothing was stored, and the sender may try again."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except StoreUnreachable as exc:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            raise  # the media stream's handshake is long answered: it ends its own way
        log.warning("answered %s with 503: %s", request.path, exc)
        return web.Response(status=503, text="database unreachable, retry\n")


def _worker_health(state: AppState) -> dict[str, Any] | None:
    """This server as a worker (orchestrator.workers): its name, sessions and streams; None if not one."""
    if state.worker is None:
        return None
    return {
        "name": state.worker["name"],
        "capacity": state.worker["capacity"],
        "public_url": state.worker["public_url"],
        "active_streams": len(state.sessions),
    }


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body, content_type = state.prom.render(
        active_streams=len(state.sessions), guard=state.guard, servers=state.backend.servers()
    )
    return web.Response(body=body, headers={"Content-Type": content_type})
