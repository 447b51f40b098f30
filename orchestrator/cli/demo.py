"""`orchestrator demo`: server + carrier emulator + a backend in one process, one or more whole calls,
then the report. No Twilio account, no phone, no network.

The emulator plays Twilio: it takes the REST create-call the real `twilio` client sends, rings,
answers, speaks the greeting (`<Say>` takes time), opens the signed media WebSocket through an
emulated tunnel (the server only trusts its public https URL, exactly as in production), speaks the
caller's turns in real time, models Twilio's playout buffer, and hangs up. Then every criterion is
decided from what was measured, and the emulator's ground truth is printed beside the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
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


def true_latencies(stream: dict[str, Any]) -> list[float]:
    """Per caller utterance: its end -> the next speech the phone heard (ms), from the emulator's log."""
    heard = [h["onset_ms"] for h in stream.get("heard_speech") or []]
    out = []
    for seg in stream.get("caller_speech") or []:
        later = [h for h in heard if h > seg["end_ms"]]
        if later:
            out.append(later[0] - seg["end_ms"])
    return out


def truth_lines(docs: list[dict[str, Any]], truths: list[Any]) -> list[str]:
    lines = ["", "Ground truth (from the emulator) vs measured:"]
    for doc, truth in zip(docs, truths, strict=False):
        m = doc["metrics"]
        stream = (truth.stream or {}) if truth else {}
        first = stream.get("first_heard_speech_onset") or {}
        lost = stream.get("frames_lost")
        lines.append(
            f"  {doc['call']['id']}: state {doc['call']['state']} (carrier: {getattr(truth, 'status', '?')})"
        )
        if first.get("onset_ms") is not None and m.get("first_audio_heard_ms") is not None:
            # the metric counts from our receipt of `start`, the truth from the phone's: put both on the
            # phone's clock with the server's own inbound clock offset (the start's transit)
            transit = -(m.get("inbound_media_offset_ms") or 0.0)
            lines.append(
                f"    first audio heard (from the phone's stream start): truth {first['onset_ms']:.0f} ms, "
                f"measured {m['first_audio_heard_ms'] + transit:.0f} ms "
                f"({m['first_audio_heard_ms']:.0f} ms after the server received start, "
                f"which came {transit:.0f} ms after the phone's)"
            )
        latencies = true_latencies(stream)
        measured = [t[2] for t in (doc.get("analysis") or {}).get("turns", [])]
        if latencies or measured:
            lines.append(
                "    response latency per turn: truth "
                + ", ".join(f"{x:.0f}" for x in latencies)
                + " ms; measured "
                + ", ".join(f"{x:.0f}" for x in measured)
                + " ms"
            )
        if lost is not None:
            lines.append(f"    lost frames: truth {len(lost)}, measured {m.get('lost_frames', 0):.0f}")
        echo = stream.get("echo")  # from the emulator's own signals: first arrival, loss over what was played
        if echo:
            loss = echo.get("loss_db")
            lines.append(
                f"    echo: truth {echo['direct_delay_ms']:.1f} ms / "
                f"{'-' if loss is None else f'{loss:.1f}'} dB, measured "
                f"{'flagged' if m.get('echo_detected') else 'not flagged'} "
                f"{m.get('echo_delay_ms', float('nan')):.0f} ms / {m.get('echo_return_loss_db', float('nan')):.1f} dB"
            )
    return lines


DEMO_EXITS = exits.epilog(
    outcome="the calls ran but a criterion FAILed (unknown ones do not count): the report says which",
    unavailable="a local port could not be opened",
)
NOT_NEGATIVE = click.FloatRange(min=0)


@click.command(epilog=DEMO_EXITS)
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="How long the caller stays on the line (at least 1).",
)
@click.option(
    "--calls",
    "n_calls",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Concurrent calls to place (1-32).",
)
@click.option(
    "--backend",
    type=click.Choice(["echo", "playback", "moshi"]),
    default=None,
    help="Speech backend (default: moshi when its model is cached, else echo).",
)
@click.option(
    "--echo-mode",
    type=click.Choice(["turns", "delay"]),
    default="turns",
    show_default=True,
    help="echo backend: 'turns' greets, then repeats each line when the caller pauses; "
    "'delay' returns everything --echo-delay-ms later.",
)
@click.option(
    "--echo-delay-ms",
    type=NOT_NEGATIVE,
    default=400.0,
    show_default=True,
    help="echo backend, delay mode: the delay.",
)
@click.option(
    "--echo-loss-db",
    type=NOT_NEGATIVE,
    default=None,
    help="Inject an acoustic echo at the phone with this loss (dB); off by default.",
)
@click.option(
    "--echo-path-ms",
    type=NOT_NEGATIVE,
    default=120.0,
    show_default=True,
    help="Delay of the injected acoustic echo.",
)
@click.option(
    "--loss",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Fraction of caller frames lost (0 to just under 1).",
)
@click.option(
    "--jitter-ms",
    type=NOT_NEGATIVE,
    default=0.0,
    show_default=True,
    help="Random network jitter on caller frames.",
)
@click.option(
    "--say", default="Connecting you to Moshi.", show_default=True, help="Greeting before the stream."
)
@click.option("--run", "run_label", default="demo", show_default=True, help="Run label of the calls.")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the calls in this database (default: a temp dir).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "md", "json", "html"]),
    default="table",
    show_default=True,
    help="Report format.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report here (its folder must exist).",
)
@click.option(
    "--moshi-weight", type=click.Path(exists=True, path_type=Path), default=None, help="Moshi LM weights."
)
@click.option(
    "--mimi-weight", type=click.Path(exists=True, path_type=Path), default=None, help="Mimi codec weights."
)
@click.option(
    "--tokenizer", type=click.Path(exists=True, path_type=Path), default=None, help="Text tokenizer."
)
@click.option(
    "--lm-config", type=click.Path(exists=True, path_type=Path), default=None, help="LM config.json."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the report in machine form).")
@click.option("-v", "--verbose", is_flag=True, help="Show the server's and emulator's logs.")
def demo(
    seconds: float,
    n_calls: int,
    backend: str | None,
    echo_mode: str,
    echo_delay_ms: float,
    echo_loss_db: float | None,
    echo_path_ms: float,
    loss: float,
    jitter_ms: float,
    say: str,
    run_label: str,
    db: Path | None,
    fmt: str,
    out: Path | None,
    moshi_weight: Path | None,
    mimi_weight: Path | None,
    tokenizer: Path | None,
    lm_config: Path | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Run whole calls against the built-in carrier emulator and print the report.

    Everything runs locally: the server, a Twilio stand-in that rings, answers, speaks and listens,
    and a speech backend. Each criterion of the checklist is decided from measurements.

    Example: orchestrator demo --seconds 20 --echo-loss-db 15 --loss 0.02
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from orchestrator.cli.common import check_out, write_out

    if out is not None:
        check_out(out)  # now, not after the calls
    if db is not None:
        from orchestrator.store import Store

        Store(db).close()  # another application's file, or a newer schema: refused before anything starts
    caller_script(seconds)  # espeak-ng missing: said before anything starts
    paths = {
        "moshi_weight": moshi_weight,
        "mimi_weight": mimi_weight,
        "tokenizer": tokenizer,
        "lm_config": lm_config,
    }
    opts = DemoOptions(
        seconds=seconds,
        calls=n_calls,
        backend=backend,
        echo_delay_ms=echo_delay_ms,
        echo_mode=echo_mode,
        echo_loss_db=echo_loss_db,
        echo_path_ms=echo_path_ms,
        loss=loss,
        jitter_ms=jitter_ms,
        say=say,
        run=run_label,
        db=db,
        moshi_paths=paths if any(paths.values()) else None,
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = asyncio.run(run_demo(opts))
    from orchestrator.report import render

    fmt = "json" if as_json else fmt
    text = render(result["report"], fmt)
    if fmt == "json":
        doc = json.loads(text)
        doc["demo"] = {"backend": result["backend"], "why": result["why"], "workdir": result["workdir"]}
        text = json.dumps(doc, indent=2)
    elif fmt == "table":
        text += "\n".join(truth_lines(result["docs"], result["truths"]))
        text += f"\n\nFiles (database, recordings, ground truth): {result['workdir']}"
    if out:
        write_out(out, text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text)
    if failed_criteria(result["report"]):
        click.get_current_context().exit(exits.OUTCOME)


def failed_criteria(report: Any) -> list[tuple[str, str]]:
    """(call id, criterion) of every FAIL cell in the report: the demo then exits 1. Unknown is not a
    failure (the echo backend has no model to load)."""
    return [
        (c.id, cell.criterion)
        for run in report.runs
        for c in run.calls
        for cell in c.cells
        if cell.status == "fail"
    ]
