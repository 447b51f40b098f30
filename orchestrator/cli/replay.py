"""`orchestrator replay`: a recorded call's caller, on its recorded timing, fed again to a backend."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import click

from orchestrator import exits
from orchestrator.cli.common import db_option
from orchestrator.errors import UnknownCall
from orchestrator.settings import Settings

BACKENDS = ("echo", "playback", "moshi", "moshi-server")


@click.command(
    epilog=exits.epilog(outcome="the replay ran and a criterion of the new call failed", unavailable=None)
)
@click.argument("call")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Backend to feed the caller to (default: the original call's, with its settings).",
)
@click.option(
    "--aec",
    type=click.Choice(("off", "on")),
    default=None,
    help="Echo canceller for the replay (default: the original's).",
)
@click.option("--run", "run_label", default=None, help="Run label of the new call (default: replay).")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print both calls' documents as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Log the server and emulator at INFO.")
def replay(
    call: str,
    backend: str | None,
    aec: str | None,
    run_label: str | None,
    db: Path | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Feed a recorded call's caller, frame by frame on its recorded timing, to a backend.

    What would another model, quantization or canceller setting have done with this exact caller? The
    original's media trace (kept with MEDIA_TRACE=on: the emulator rig of demo and scenario turns it on)
    is sent again through the carrier emulator and the real server into the same database; the new call
    is measured and judged like any other, linked to the original (events replay_of / replayed_as), and
    both are printed side by side. The inbound figures match the original's by construction; what the
    backend did, and what the phone heard of it, is new. Exit 1 when a criterion of the replay fails.

    Example: orchestrator replay c_1a2b3c4d5e6f7a8b --backend echo --db /tmp/orchestrator-demo-x/demo.db
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from orchestrator.bootstrap import open_service
    from orchestrator.replay import compare_lines, load_replay, run_replay

    path = db or Settings.from_env().db
    service = open_service(path, create=False)
    try:
        try:
            original = load_replay(service, call)
        except UnknownCall as exc:
            raise exits.UserError(f"{exc} (orchestrator calls --db {path} lists them)") from None
    finally:
        service.store.close()
    doc = asyncio.run(run_replay(path, original, backend=backend, aec=aec, run=run_label or "replay"))
    if as_json:
        click.echo(json.dumps({"original": original.doc, "replay": doc}, indent=2, default=str))
    else:
        click.echo("\n".join(compare_lines(original.doc, doc)))
    if any(c["status"] == "fail" for c in doc["checks"] if c["decided_by"] == "auto"):
        click.get_current_context().exit(exits.OUTCOME)
