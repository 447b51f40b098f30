"""The composition root: how the real pieces are put together, for the server, the rig, the demo and
the CLI commands alike.

`open_service` is the one way to get a `CallService` over a database; `start_server` builds the app
(`orchestrator.web.app.create_app`), binds it and records what the server listens on; `place` is the
whole outbound-call use case (call row, TwiML, REST create, outcome recorded) that `orchestrator call`,
the rig and the benchmarks share. Nothing here parses a command line or prints: the CLI is above this.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import CarrierError, OrchestratorError, SettingsError, Unavailable
from orchestrator.exits import listen_error
from orchestrator.service import CallService
from orchestrator.settings import Settings, check_e164
from orchestrator.store import utcnow
from orchestrator.stores import open_store
from orchestrator.twilio_rest import make_client, place_call
from orchestrator.twiml import stream_twiml

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)


def open_service(db: str | Path, *, create: bool = True) -> CallService:
    """The service over the database at `db` (migrated; with `create=False`, only one that exists)."""
    return CallService(open_store(db, create=create))


def existing_service(db: str | Path) -> CallService | None:
    """The service over `db` when it already holds our tables; None when the file or tables are not
    there yet (nothing is made)."""
    from orchestrator.errors import StoreUnreachable

    try:
        return open_service(db, create=False)
    except StoreUnreachable:
        raise
    except OrchestratorError:
        return None


class RunningServer:
    """A started server: its bound address, public URL and the runner to stop it."""

    def __init__(self, runner: web.AppRunner, app: web.Application, host: str, port: int) -> None:
        self.runner, self.app, self.host, self.port = runner, app, host, port

    @property
    def local_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_server(
    settings: Settings, *, backend: Any = None, tunnel_health: bool | None = None
) -> RunningServer:
    """Start the app on settings.host:settings.port (0 = any free port) and record `server_listening`."""
    # the server's modules load here, not on import: `orchestrator call` and `hangup` never need them
    from aiohttp import web

    from orchestrator.web.app import STATE, create_app
    from orchestrator.web.limits import GuardedSite

    started = time.monotonic()
    app = create_app(settings, backend=backend)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=settings.keepalive_timeout_s
    )
    await runner.setup()
    state = app[STATE]
    site = GuardedSite(runner, settings.host, settings.port, state.guard)  # connection slots and timeouts
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise listen_error(
            exc, settings.host, settings.port, "the server", "--port / ORCHESTRATOR_PORT"
        ) from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    address = f"{settings.host}:{port}"
    if settings.public_url and tunnel_health is None:
        tunnel_health = await probe_health(settings.public_url)
    state.facts.update(
        {
            "server_listening": address,
            "public_url": settings.public_url,
            "tunnel_health": tunnel_health,
            "offline": bool(settings.twilio_api_base_url),
            "backend": state.backend.name,
            "ready_s": round(time.monotonic() - started, 3),
        }
    )
    await state.service.record(source="server", type="listening", payload=dict(state.facts))
    log.info(
        "listening on http://%s (public URL %s, backend %s)",
        address,
        settings.public_url or "not set",
        state.backend.name,
    )
    return RunningServer(runner, app, settings.host, port)


async def probe_health(public_url: str, timeout_s: float = 3.0) -> bool | None:
    """Does the public URL reach us? None when it cannot be resolved or connected at all."""
    from aiohttp import ClientSession, ClientTimeout

    try:
        async with ClientSession(timeout=ClientTimeout(total=timeout_s)) as http:
            async with http.get(public_url.rstrip("/") + "/healthz") as resp:
                return resp.status == 200
    except Exception as exc:
        log.info("public URL %s did not answer /healthz: %s", public_url, exc)
        return None


def server_health(settings: Settings) -> dict[str, Any] | None:
    """The local server's /healthz document (also when it answers 503: its database is away), or None
    when nothing answers there."""
    url = f"http://{settings.host}:{settings.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # a server that answers, but not ok
        try:
            return dict(json.loads(exc.read()))
        except (OSError, ValueError, TypeError):
            return None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def require_server(settings: Settings) -> dict[str, Any]:
    """The running server's /healthz answer; SettingsError (one line, what to do) when none answers,
    Unavailable when it answers that its database does not."""
    health = server_health(settings)
    if health is None:
        raise SettingsError(
            f"no server answers at http://{settings.host}:{settings.port}/healthz: start `orchestrator serve` "
            "first (ORCHESTRATOR_HOST/ORCHESTRATOR_PORT must point at it)"
        )
    db = health.get("db") or {}
    if health.get("ok") is False and db.get("state") == "unreachable":
        raise Unavailable(
            f"the server at {settings.host}:{settings.port} cannot reach its database since "
            f"{db.get('since') or '?'} ({db.get('last_error') or 'no answer'}); try again when it is back"
        )
    return health


def place(
    settings: Settings,
    service: CallService,
    *,
    to: str,
    from_: str | None,
    run: str | None,
    say: str | None,
    timeout_s: int,
    record: bool,
    check_server: bool = True,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the call row, dial, record the outcome. Returns the call row. Raises on refusal.

    The running server is asked first: it must be up, not busy, and it knows the public URL it serves
    (with `serve --tunnel`, a fresh one each start), which wins over PUBLIC_URL in the settings so the
    TwiML always points at the tunnel that is really there. `health` is that answer when the caller
    already asked (before opening the database, so that no server means no file made).

    Over a database where workers are registered (`serve --worker`), no local server is asked: a
    session is claimed on one of them instead (`_place_on_worker`).
    """
    to = check_e164(to, "TO")  # the argument first: it is what the user just typed
    settings.require_twilio()
    from_ = check_e164(from_ or settings.twilio_from_number or "", "TWILIO_FROM_NUMBER (or --from)")
    backend = settings.backend
    store = service.store
    if check_server and health is None and store.list_workers():
        return _place_on_worker(
            settings, service, to=to, from_=from_, run=run, say=say, timeout_s=timeout_s, record=record
        )
    if check_server:
        if health is None:
            health = require_server(settings)
        if health.get("busy"):
            raise OrchestratorError("the model is busy with another call; try again when it ends")
        backend = health.get("backend", backend)
        if health.get("public_url"):
            settings = settings.with_overrides(public_url=health["public_url"])
    public_url = settings.require_public_url()
    say_text = settings.greeting if say is None else say
    call = store.create_call(
        direction="outbound-api",
        to_number=to,
        from_number=from_,
        run=run,
        backend=backend,
        say_text=say_text or None,
    )
    return _dial(settings, service, call, public_url, to=to, from_=from_, timeout_s=timeout_s, record=record)


def _place_on_worker(
    settings: Settings,
    service: CallService,
    *,
    to: str,
    from_: str,
    run: str | None,
    say: str | None,
    timeout_s: int,
    record: bool,
) -> dict[str, Any]:
    """`place` over a database with workers (orchestrator.workers): the call row and a session on the
    up worker with the most free ones are one transaction (none free: Unavailable, and no row is left);
    that worker's public URL goes in the TwiML and the status callback. No local server is asked."""
    from orchestrator.workers import busy_reason, claim

    store = service.store
    say_text = settings.greeting if say is None else say
    with store.transaction():
        call = store.create_call(
            direction="outbound-api",
            to_number=to,
            from_number=from_,
            run=run,
            backend=settings.backend,
            say_text=say_text or None,
        )
        worker = claim(service, call, stale_s=settings.worker_stale_s)
        if worker is None:
            why = busy_reason(store.list_workers(), now=utcnow(), stale_s=settings.worker_stale_s)
            raise _NoWorker(why)
        store.update_call(call["id"], backend=worker["backend"])
    public_url = settings.with_overrides(public_url=worker["public_url"]).require_public_url()
    return _dial(
        settings,
        service,
        store.get_call(call["id"]),
        public_url,
        to=to,
        from_=from_,
        timeout_s=timeout_s,
        record=record,
    )


class _NoWorker(Unavailable):
    """Every worker is full, or none is up: try again when a call ends (exit 3)."""


def _dial(
    settings: Settings,
    service: CallService,
    call: dict[str, Any],
    public_url: str,
    *,
    to: str,
    from_: str,
    timeout_s: int,
    record: bool,
) -> dict[str, Any]:
    """Dial the call row through the carrier's REST API; its outcome recorded. Returns the call row."""
    store = service.store
    say_text = call["say_text"]
    twiml = stream_twiml(public_url, call_id=call["id"], token=call["token"], say=say_text or None)
    client = make_client(settings)
    try:
        placed = place_call(
            client,
            to=to,
            from_=from_,
            twiml=twiml,
            status_callback=f"{public_url}/twilio/status?call_id={call['id']}",
            timeout_s=timeout_s,
            record=record,
        )
    except CarrierError as exc:
        # kept as a failed call with the reason, not deleted: a run's report must show the attempt
        # (call_initiated: fail, and why); no row is made for mistakes caught before dialing
        service.record(
            source="rest",
            type="create_failed",
            call_id=call["id"],
            payload={
                "code": exc.code,
                "status": exc.status,
                "message": str(exc),
                "unreachable": exc.unreachable,
            },
            detail=str(exc),
        )
        raise
    service.record(
        source="rest",
        type="queued",
        call_id=call["id"],
        call_sid=placed.sid,
        payload={"sid": placed.sid, "status": placed.status},
    )
    return store.get_call(call["id"])
