"""`orchestrator serve`: run the aiohttp app on one port until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.bootstrap import RunningServer, probe_health, start_server
from orchestrator.settings import BACKENDS, Settings

log = logging.getLogger(__name__)
__all__ = [
    "RunningServer",
    "probe_health",
    "serve",
    "serve_forever",
    "start_server",
]  # re-exported: benchmarks


async def serve_forever(settings: Settings, tunnel: str | None, backend: Any = None) -> None:
    # handlers first: a signal that arrives while starting must stop us cleanly too, not as a traceback
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        if tunnel:
            from orchestrator.tunnel import start_tunnel

            t = await start_tunnel(tunnel, f"http://127.0.0.1:{settings.port}")
            stack.push_async_callback(t.stop)
            settings = settings.with_overrides(public_url=t.public_url)
            click.echo(f"tunnel: {t.public_url}")
        server = await start_server(settings, backend=backend)
        stack.push_async_callback(server.stop)
        click.echo(f"listening on {server.local_url}  public URL: {settings.public_url or '(not set)'}")
        await stop.wait()
        click.echo("shutting down: closing open calls")


@click.command(
    epilog=exits.epilog(
        unavailable="the port is taken, the host is not this machine's, or the tunnel did not start"
    )
)
@click.option("--host", default=None, help="Interface to bind (default $ORCHESTRATOR_HOST or 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port, 0 for any free one (default $ORCHESTRATOR_PORT or 8080).",
)
@click.option("--public-url", default=None, help="https URL the tunnel exposes (default $PUBLIC_URL).")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite database file, or a postgresql:// URL (default $ORCHESTRATOR_DB).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Speech backend (default $BACKEND or echo).",
)
@click.option(
    "--aec",
    type=click.Choice(["off", "on"]),
    default=None,
    help="Cancel the model's own echo before it hears the caller (default $AEC or off).",
)
@click.option(
    "--tunnel",
    type=click.Choice(["cloudflared", "ngrok"]),
    default=None,
    help="Start this tunnel program and use its https URL as PUBLIC_URL.",
)
@click.option(
    "--moshi-weight",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="moshi backend: LM weights file (instead of the Hugging Face cache).",
)
@click.option(
    "--mimi-weight",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="moshi backend: Mimi codec weights file.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="moshi backend: text tokenizer (sentencepiece .model).",
)
@click.option(
    "--lm-config",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="moshi backend: LM config.json.",
)
@click.option(
    "--worker",
    default=None,
    metavar="NAME",
    help="Run as worker NAME beside others on one database: calls go to whichever has a free session "
    "(default $WORKER_NAME; needs a public URL of its own).",
)
@click.option(
    "--capacity",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Worker: calls it takes at once (default $WORKER_CAPACITY, else the backend's limit: moshi 1, "
    "moshi-server its servers' sessions, echo 4).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def serve(
    host: str | None,
    port: int | None,
    public_url: str | None,
    db: Path | None,
    backend: str | None,
    aec: str | None,
    tunnel: str | None,
    moshi_weight: Path | None,
    mimi_weight: Path | None,
    tokenizer: Path | None,
    lm_config: Path | None,
    worker: str | None,
    capacity: int | None,
    verbose: bool,
) -> None:
    """Run the server: Twilio callbacks, TwiML, the media WebSocket, /healthz and /metrics on one port.

    Example: orchestrator serve --port 8080 --tunnel cloudflared

    Several workers share one database (ORCHESTRATOR_DB=postgresql://...), each with its own port and
    public URL: orchestrator serve --worker a --port 8081 --public-url https://a.example.com
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # the twilio package logs every request and response header at INFO
        logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    settings = Settings.from_env().with_overrides(
        host=host,
        port=port,
        public_url=public_url,
        db=db,
        backend=backend,
        aec=aec,
        worker=worker,
        worker_capacity=capacity,
    )
    settings.require_auth_token()
    if settings.worker and not (settings.public_url or tunnel):
        raise exits.UserError(
            f"worker {settings.worker} needs a public URL of its own: the others send its calls there "
            "(--public-url / PUBLIC_URL, or --tunnel)"
        )
    if settings.public_url:
        settings.require_public_url()  # https, as `orchestrator call` will insist: refuse it now, not then
    paths = {
        "moshi_weight": moshi_weight,
        "mimi_weight": mimi_weight,
        "tokenizer": tokenizer,
        "lm_config": lm_config,
    }
    speech = None
    if any(paths.values()):
        if settings.backend != "moshi":
            raise click.UsageError(
                "--moshi-weight/--mimi-weight/--tokenizer/--lm-config need --backend moshi"
            )
        from bridge.backends.registry import create

        speech = create(settings, moshi_config=_moshi_config(settings, paths))
    asyncio.run(serve_forever(settings, tunnel, speech))


def _moshi_config(settings: Settings, paths: dict[str, Path | None]) -> Any:
    from bridge.backends.moshi import MoshiConfig

    return MoshiConfig.from_settings(settings, **{k: v for k, v in paths.items() if v is not None})
