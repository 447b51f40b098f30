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
import json
import logging
import os
from pathlib import Path
from typing import Any

import click

from orchestrator import exits
from orchestrator.cli.demo_run import DemoOptions, caller_script, run_demo
from orchestrator.settings import BACKENDS

log = logging.getLogger(__name__)


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
        lines += _model_heard_lines(doc, truth)
    return lines


def _model_heard_lines(doc: dict[str, Any], truth: Any) -> list[str]:
    """With AEC on: the echo the model heard, truth from the emulator's parts of the line."""
    m, files = doc["metrics"], getattr(truth, "files", None) or {}
    recording = doc["call"].get("recording_path")
    if "residual_echo_detected" not in m or not files.get("parts_npz") or not recording:
        return []
    from bridge.recorder import model_input_path
    from orchestrator.emulator.aec_truth import aec_truth_files

    try:
        t = aec_truth_files(
            Path(files["parts_npz"]).parent, truth.call_sid, model_input_path(Path(recording))
        )
    except (OSError, ValueError, KeyError) as exc:
        return [f"    model heard: no truth ({type(exc).__name__}: {exc})"]

    def db(v: Any) -> str:
        return "-" if v is None else f"{v:.1f} dB"

    return [
        f"    model heard: ERLE truth {db(t.get('erle_db'))}, measured {db(m.get('aec_erle_db'))}; residual "
        f"echo {'flagged' if m.get('residual_echo_detected') else 'not flagged'}; caller kept "
        f"{db(t.get('caller_level_change_db'))} level, SDR {db(t.get('caller_sdr_db'))}"
    ]


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
    type=click.Choice(BACKENDS),
    default=None,
    help="Speech backend (default: moshi when its model is cached, else echo).",
)
@click.option(
    "--aec",
    type=click.Choice(["off", "on"]),
    default=None,
    help="Cancel the model's own echo before it hears the caller (default $AEC or off).",
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
    aec: str | None,
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
        from orchestrator.stores import open_store

        open_store(
            db
        ).close()  # another application's file, or a newer schema: refused before anything starts
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
        aec=aec,
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
