"""The calls `orchestrator demo` places: a local rig (server + carrier emulator + backend), the
emulated caller's script, Ctrl-C that hangs up cleanly, and the settled call documents it returns.
What the command prints of them is `demo.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from orchestrator.settings import Settings

log = logging.getLogger(__name__)
DEMO_TO = "+15005550010"
ECHO_GREETING = "Hello, this is the echo backend. I repeat what you say."
CALLER_START_S = 4.0  # after the backend's greeting
DEMO_LINES = (
    "Hello, can you hear me?",
    "Tell me something about the weather today.",
    "Thank you, that is all for now.",
)


@dataclass
class DemoOptions:
    seconds: float = 20.0
    calls: int = 1
    backend: str | None = None
    aec: str | None = None  # None: $AEC
    echo_delay_ms: float = 400.0
    echo_mode: str = "turns"
    echo_loss_db: float | None = None
    echo_path_ms: float = 120.0
    loss: float = 0.0
    jitter_ms: float = 0.0
    say: str | None = "Connecting you to Moshi."
    run: str = "demo"
    db: Path | None = None
    workdir: Path | None = None
    moshi_paths: dict[str, Path | None] | None = None


def choose_backend(
    requested: str | None, moshi_paths: dict[str, Path | None] | None, settings: Settings
) -> tuple[str, str]:
    """(backend, why). moshi when its model is in the local cache, otherwise echo."""
    if requested:
        return requested, "asked for with --backend"
    if settings.backend == "moshi-server":
        return "moshi-server", "BACKEND=moshi-server in the settings (MOSHI_SERVER_URLS)"
    if moshi_paths and any(moshi_paths.values()):
        return "moshi", "model files given on the command line"
    try:
        from orchestrator.cli.models import model_status

        status = model_status(settings)
    except Exception as exc:
        return "echo", f"moshi backend unavailable ({type(exc).__name__}: {exc})"
    if status.get("ready"):
        return "moshi", f"model {settings.moshi_hf_repo} found in the local cache"
    if "huggingface_hub" in status.get("missing_packages", ()):
        return "echo", f"the moshi extra is not installed; {status['fix']} adds the Moshi backend"
    return (
        "echo",
        f"no Moshi model in the local cache ({settings.moshi_hf_repo}; `orchestrator models pull` fetches it)",
    )


def caller_script(seconds: float) -> tuple[Any, ...]:
    from orchestrator.emulator import Turn

    have_espeak = shutil.which("espeak-ng") is not None
    if not have_espeak:
        raise click.ClickException(
            "espeak-ng is not installed: the emulated caller speaks with it "
            "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
        )
    n = 2 if seconds < 15 else 3
    return tuple(
        Turn(text=line, wait_for_answer=True, answer_timeout_s=6.0, pause_s=0.6) for line in DEMO_LINES[:n]
    )


class Interrupted(Exception):
    """Ctrl-C during the calls: they were hung up and the rig stopped cleanly."""


async def _unless_stopped(stop: asyncio.Event, work: Any) -> Any:
    """Await `work`, or cancel it and raise Interrupted once `stop` is set."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise Interrupted


@contextlib.contextmanager
def _ctrl_c_sets(stop: asyncio.Event) -> Iterator[None]:
    """The first Ctrl-C sets `stop` (calls hang up, server and emulator stop in order); a second one is
    an ordinary KeyboardInterrupt."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    from orchestrator.emulator import CallOptions, EchoSpec, Faults
    from orchestrator.report import build_report
    from orchestrator.rig import LocalRig, rig_settings

    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    base = Settings.from_env()
    backend_name, why = choose_backend(opts.backend, opts.moshi_paths, base)
    settings = rig_settings(
        workdir,
        db=opts.db or workdir / "demo.db",
        backend=backend_name,
        greeting=opts.say or "",
        max_call_seconds=max(opts.seconds + 30, 60),
        echo_delay_ms=opts.echo_delay_ms,
        echo_mode=opts.echo_mode,
        echo_greeting=ECHO_GREETING if opts.echo_mode == "turns" else None,
        moshi_hf_repo=base.moshi_hf_repo,
        moshi_quantize=base.moshi_quantize,
        moshi_server_urls=base.moshi_server_urls,
        aec=opts.aec or base.aec,
    )
    click.echo(f"backend: {backend_name} ({why})", err=True)
    backend = None
    if backend_name == "moshi" and opts.moshi_paths:
        from bridge.backends.moshi import MoshiBackend, MoshiConfig

        backend = MoshiBackend(MoshiConfig.from_settings(settings, **opts.moshi_paths))
    faults = Faults(
        jitter_ms=opts.jitter_ms,
        loss_rate=opts.loss,
        echo=EchoSpec(delay_ms=opts.echo_path_ms, loss_db=opts.echo_loss_db)
        if opts.echo_loss_db is not None
        else None,
        hangup_after_stream_s=opts.seconds,
    )
    far_end = CallOptions(turns=caller_script(opts.seconds), faults=faults, caller_start_s=CALLER_START_S)
    stop = asyncio.Event()
    with _ctrl_c_sets(stop):
        async with LocalRig(settings, workdir / "ground_truth", backend=backend) as rig:
            rig.emulator.set_defaults(far_end)
            click.echo(
                f"server {rig.server.local_url} (public {settings.public_url} via the emulated tunnel), "
                f"emulator {rig.settings.twilio_api_base_url}, work dir {workdir}",
                err=True,
            )
            try:
                if stop.is_set():
                    raise Interrupted
                rows = await _unless_stopped(
                    stop,
                    asyncio.gather(
                        *[rig.place(to=DEMO_TO, run=opts.run, say=opts.say) for _ in range(opts.calls)]
                    ),
                )
                click.echo(
                    f"placed {len(rows)} call(s): " + ", ".join(f"{r['id']} ({r['call_sid']})" for r in rows),
                    err=True,
                )
                truths = await _unless_stopped(
                    stop,
                    asyncio.gather(
                        *[rig.emulator.wait_call(r["call_sid"], timeout=opts.seconds + 60) for r in rows]
                    ),
                )
                # one analysis process takes the calls in turn (a second or two each): the first call
                # waited for may be the last analysed
                settle_s = 30.0 + 3.0 * len(rows)
                docs = [await _unless_stopped(stop, rig.settled(r["id"], timeout_s=settle_s)) for r in rows]
            except Interrupted:
                click.echo("interrupted: hanging up and stopping the server and emulator", err=True)
                interrupted = True
            else:
                interrupted = False
    if interrupted:
        raise KeyboardInterrupt
    return {
        "report": build_report(docs, opts.run),
        "docs": docs,
        "truths": truths,
        "workdir": str(workdir),
        "backend": backend_name,
        "why": why,
    }
