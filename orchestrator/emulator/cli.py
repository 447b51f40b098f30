"""`orchestrator emulator`: run the carrier emulator on its own port until interrupted.

The command only parses options and runs `CarrierEmulator`; it never places calls itself (the product
does, through TWILIO_API_BASE_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

import click

from orchestrator import exits
from orchestrator.emulator import CallbackFaults, CallOptions, CarrierEmulator, EchoSpec, Faults, Turn
from orchestrator.exits import listen_error
from orchestrator.settings import valid_sid


def _account_sid(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not valid_sid("AC", value):
        raise click.BadParameter(
            f"{value!r} is not an Account SID: AC followed by 32 hex digits "
            "(AC00000000000000000000000000000000 will do for the emulator)"
        )
    return value


def _not_negative(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not value >= 0:
        raise click.BadParameter(f"{value}: must be 0 or more")
    return value


def _routes(values: tuple[str, ...]) -> dict[str, str]:
    routes = {}
    for value in values:
        public, sep, local = value.partition("=")
        if (
            not sep
            or not public.startswith(("http://", "https://"))
            or not local.startswith(("http://", "https://"))
        ):
            raise click.BadParameter(
                f"expected PUBLIC=LOCAL with http(s) URLs, got {value!r}", param_hint="--route"
            )
        routes[public.rstrip("/")] = local.rstrip("/")
    return routes


@click.command(
    "emulator", epilog=exits.epilog(unavailable="the port is taken or the host is not this machine's")
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port to listen on (0: a free one, printed at start).",
)
@click.option(
    "--account-sid",
    envvar="TWILIO_ACCOUNT_SID",
    required=True,
    callback=_account_sid,
    help="Account SID the REST API accepts ($TWILIO_ACCOUNT_SID).",
)
@click.option(
    "--auth-token",
    envvar="TWILIO_AUTH_TOKEN",
    required=True,
    help="Auth token for basic auth and webhook signatures ($TWILIO_AUTH_TOKEN).",
)
@click.option(
    "--route",
    "routes",
    multiple=True,
    metavar="PUBLIC=LOCAL",
    help="Reach a public base URL at a local one, as a tunnel would (repeatable).",
)
@click.option(
    "--truth-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each call's ground-truth JSON and heard/sent WAVs here.",
)
@click.option(
    "--answer",
    type=click.Choice(["answer", "busy", "no-answer", "failed"]),
    default="answer",
    show_default=True,
    help="How calls to ordinary numbers end up.",
)
@click.option(
    "--ring-s",
    type=float,
    default=1.0,
    show_default=True,
    callback=_not_negative,
    help="Seconds the phone rings.",
)
@click.option(
    "--say",
    "says",
    multiple=True,
    metavar="TEXT",
    help="A caller turn spoken with espeak-ng (repeatable, in order).",
)
@click.option(
    "--wav",
    "wavs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A caller turn from a 16-bit WAV file (repeatable, after --say turns).",
)
@click.option(
    "--echo-delay-ms",
    type=float,
    default=None,
    callback=_not_negative,
    help="Add an acoustic echo path with this delay.",
)
@click.option(
    "--echo-loss-db", type=float, default=20.0, show_default=True, help="Echo return loss of that path."
)
@click.option("--room", is_flag=True, help="Give the echo path a synthetic room tail.")
@click.option("--noise-dbfs", type=float, default=None, help="Background noise level at the phone.")
@click.option(
    "--loss",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Fraction of inbound frames lost at random (0-1).",
)
@click.option(
    "--jitter-ms",
    type=float,
    default=0.0,
    show_default=True,
    callback=_not_negative,
    help="Random extra send delay per inbound frame.",
)
@click.option(
    "--hangup-after-s",
    type=float,
    default=None,
    callback=_not_negative,
    help="The phone hangs up this long after the stream starts.",
)
@click.option("--shuffle-callbacks", is_flag=True, help="Deliver the early status callbacks out of order.")
@click.option(
    "--duplicate-callbacks",
    is_flag=True,
    help="Deliver every status callback twice (same idempotency token).",
)
@click.option(
    "--bad-signature", is_flag=True, help="Also send one forged 'completed' callback with a bad signature."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random fault.")
@click.option("--json", "as_json", is_flag=True, help="Print the listening address as one JSON document.")
def emulator(
    host: str,
    port: int,
    account_sid: str,
    auth_token: str,
    routes: tuple[str, ...],
    truth_dir: Path | None,
    answer: str,
    ring_s: float,
    says: tuple[str, ...],
    wavs: tuple[str, ...],
    echo_delay_ms: float | None,
    echo_loss_db: float,
    room: bool,
    noise_dbfs: float | None,
    loss: float,
    jitter_ms: float,
    hangup_after_s: float | None,
    shuffle_callbacks: bool,
    duplicate_callbacks: bool,
    bad_signature: bool,
    seed: int,
    as_json: bool,
) -> None:
    """Run a local Twilio stand-in (REST API, status callbacks, Media Streams) until Ctrl-C.

    Point the product at it with TWILIO_API_BASE_URL=http://HOST:PORT. Numbers +15005550002/3/4 are
    busy / no-answer / failed; others are answered. TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are read
    from the environment or a .env file in the current folder.

    Example:

    \b
        orchestrator emulator --port 8081 --account-sid AC00000000000000000000000000000000 \\
            --auth-token secret --route https://demo.tunnel.invalid=http://127.0.0.1:8080 \\
            --say "Hello, can you hear me?" --echo-delay-ms 150 --truth-dir ./truth
    """
    faults = Faults(
        jitter_ms=jitter_ms,
        loss_rate=loss,
        noise_dbfs=noise_dbfs,
        seed=seed,
        hangup_after_stream_s=hangup_after_s,
        echo=EchoSpec(delay_ms=echo_delay_ms, loss_db=echo_loss_db, room=room)
        if echo_delay_ms is not None
        else None,
        callbacks=CallbackFaults(
            shuffle=shuffle_callbacks,
            duplicate=("*",) if duplicate_callbacks else (),
            bad_signature="completed" if bad_signature else None,
        ),
    )
    turns = tuple(Turn(text=t) for t in says) + tuple(Turn(wav=w) for w in wavs)
    options = CallOptions(answer=answer, ring_s=ring_s, turns=turns, faults=faults)
    emu = CarrierEmulator(
        account_sid, auth_token, routes=_routes(routes), truth_dir=truth_dir, defaults=options
    )
    asyncio.run(_serve(emu, host, port, as_json))


async def _serve(emu: CarrierEmulator, host: str, port: int, as_json: bool) -> None:
    try:
        base = await emu.start(host, port)
    except OSError as exc:
        await emu.stop()
        raise listen_error(exc, host, port, "the carrier emulator") from exc
    if as_json:
        click.echo(json.dumps({"base_url": base, "routes": emu.webhooks.routes}))
    else:
        click.echo(f"carrier emulator listening on {base} (set TWILIO_API_BASE_URL={base}); Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emu.stop()
