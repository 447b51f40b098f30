"""`orchestrator scenario FILE...`: test campaigns, scripted callers run N times on the local rig, with
statistics, an exit code for CI, JUnit XML and JSON.

Every file is read and checked before any call is placed (a bad file is one line naming its line and
field, exit 2); so are espeak-ng, the database and the output paths. Each settled call prints one
progress line on stderr; the summary goes to stdout (or stderr when `--json -` takes stdout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from orchestrator import exits

SCENARIO_EXITS = exits.epilog(
    outcome="the calls ran but an expectation was not met (the summary and the progress lines say which)",
    unavailable="a local port could not be opened",
)


def _check_out(option: str, out: Path | None) -> None:
    """Refuse an output file that cannot be written, before any call is placed."""
    if out is None or str(out) == "-":
        return
    if out.is_dir():
        raise exits.UserError(f"{option} {out} is a folder: give a file name in it")
    if not out.parent.is_dir():
        raise exits.UserError(
            f"{option} {out}: folder {out.parent} does not exist (create it, or write elsewhere)"
        )
    if not os.access(out.parent, os.W_OK):
        raise exits.UserError(f"{option} {out}: folder {out.parent} is not writable")


def _write(option: str, out: Path, text: str) -> None:
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise exits.UserError(f"{option} {out}: cannot write it ({exc.strerror or exc})") from exc


@click.command(epilog=SCENARIO_EXITS)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILE...")
@click.option(
    "--repeat",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Run each scenario this many times (the statistics need several: 6 or more for a 95 % median CI).",
)
@click.option(
    "--calls",
    "at_once",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Calls in flight at a time (1-32); more calls share this machine's CPU and change its timings.",
)
@click.option("--run", "run_label", default=None, help="Run label of the calls (default: scenario-UTCTIME).")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the calls in this database (default: a temp dir, printed at the end).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the whole run (every call, every expectation, the summaries) as JSON to this file; - is stdout.",
)
@click.option(
    "--junit",
    "junit_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write JUnit XML for CI here: a testsuite per scenario, a testcase per call and expectation.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the server's and emulator's logs.")
def scenario(
    files: tuple[Path, ...],
    repeat: int,
    at_once: int,
    run_label: str | None,
    db: Path | None,
    json_out: Path | None,
    junit_out: Path | None,
    verbose: bool,
) -> None:
    """Run scripted caller scenarios against the carrier emulator and judge every call.

    Each FILE is a scenario (YAML): the caller's steps (say, silence, wait_for_reply, barge_in, dtmf,
    hangup), the line (loss, jitter, echo, noise), the backend and its settings, and what to expect:
    criterion statuses (caller_hears_model: pass) and metric bounds (first_audio_heard_ms < 1500).
    Each scenario runs --repeat times, --calls at a time, every call recorded under the run label;
    then the summary: the pass rate of each expectation and criterion, p50/p95 of each metric and an
    exact confidence interval for its median. The scenarios/ folder holds examples.

    Example: orchestrator scenario scenarios/greeting.yaml scenarios/faulty_line.yaml --repeat 6 --junit out.xml
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from orchestrator.scenario.parse import load_scenario
    from orchestrator.scenario.runner import check_settings

    scenarios = tuple(load_scenario(f) for f in files)  # every file checked before any call
    check_settings(scenarios)
    if shutil.which("espeak-ng") is None and any(
        s.speaks_text or s.backend.setting("echo_greeting") for s in scenarios
    ):
        raise exits.UserError(
            "espeak-ng is not installed: the emulated caller speaks with it "
            "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng), or give WAVs"
        )
    _check_out("--json", json_out)
    _check_out("--junit", junit_out)
    if db is not None:
        from orchestrator.stores import open_store

        open_store(
            db
        ).close()  # another application's file, or a newer schema: refused before anything starts
    label = run_label or "scenario-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from orchestrator.scenario.junit import junit_xml
    from orchestrator.scenario.runner import Campaign, Interrupted
    from orchestrator.scenario.summary import summarise
    from orchestrator.scenario.text import campaign_text, progress_line

    campaign = Campaign(scenarios, repeat=repeat, calls=at_once, run=label, db=db)
    click.echo(f"run {label}: {len(scenarios)} scenario(s) x {repeat}, {at_once} at a time", err=True)
    try:
        played = asyncio.run(_campaign(campaign, progress_line))
    except Interrupted:
        raise KeyboardInterrupt from None  # `interrupted`, exit 130 (orchestrator.cli.commands)
    docs = [summarise(s, results) for s, results in played.scenarios]
    db_shown = str(played.db)
    ok = all(d["calls"] == d["calls_ok"] for d in docs)
    whole = {
        "run": label,
        "db": db_shown,
        "workdir": str(played.workdir),  # recordings and the emulator's ground truth
        "repeat": repeat,
        "calls_at_once": at_once,
        "ok": ok,
        "scenarios": docs,
    }
    text = campaign_text(docs, label, db_shown)
    if json_out is not None and str(json_out) == "-":
        click.echo(text, err=True)
        click.echo(json.dumps(whole, indent=2, default=str))
    else:
        click.echo(text)
        if json_out is not None:
            _write("--json", json_out, json.dumps(whole, indent=2, default=str))
    if junit_out is not None:
        _write("--junit", junit_out, junit_xml(label, [(s.name, results) for s, results in played.scenarios]))
    if not ok:
        click.get_current_context().exit(exits.OUTCOME)


async def _campaign(campaign: Any, progress_line: Any) -> Any:
    """The campaign with its progress lines; the first Ctrl-C hangs up the calls in flight and stops
    cleanly (then Interrupted), a second one is an ordinary KeyboardInterrupt."""
    from orchestrator.cli.demo_run import _ctrl_c_sets
    from orchestrator.scenario.runner import run_campaign

    stop = asyncio.Event()
    with _ctrl_c_sets(stop):
        return await run_campaign(
            campaign, lambda r, done, total: click.echo(progress_line(r, done, total), err=True), stop
        )
