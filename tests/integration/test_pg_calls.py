"""A whole call on PostgreSQL: ORCHESTRATOR_DB / --db as a postgresql:// URL selects the PostgreSQL store
for the server, the rig and the commands that read calls (issue 20, part 1 wired in)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings
from tests.integration.pg_server import PgCluster

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_a_call_is_stored_judged_and_reported_on_postgresql(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database("calls")

    async def go() -> dict[str, object]:
        settings = rig_settings(tmp_path, db=url, backend="echo", echo_mode="turns", echo_greeting="Hi.")
        async with LocalRig(settings, tmp_path / "truth") as rig:
            row = await rig.place(
                CallOptions(
                    ring_s=0.2,
                    turns=(Turn(text="Hello, can you hear me?", answer_timeout_s=4.0),),
                    caller_start_s=1.0,
                    faults=Faults(hangup_after_stream_s=6.0),
                ),
                run="pg",
            )
            await rig.emulator.wait_call(row["call_sid"], timeout=30)
            return await rig.settled(row["id"], timeout_s=60)

    doc = asyncio.run(go())
    call = doc["call"]
    assert isinstance(call, dict) and call["state"] == "completed" and call["run"] == "pg"
    assert doc["metrics"]["frames_to_model"] > 0 and doc["analysis"]  # type: ignore[index]
    checks = {c["criterion"]: c["status"] for c in doc["checks"] if c["decided_by"] == "auto"}  # type: ignore[union-attr]
    assert checks["caller_hears_model"] == "pass" and checks["model_hears_caller"] == "pass"

    runner = CliRunner()
    listed = runner.invoke(cli, ["calls", "--db", url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [c["id"] for c in json.loads(listed.output)["calls"]] == [call["id"]]
    shown = runner.invoke(cli, ["show", call["id"], "--db", url])
    assert shown.exit_code == 0 and "streaming => completed" in shown.output
    report = runner.invoke(cli, ["report", "--run", "pg", "--format", "json", "--db", url])
    assert report.exit_code == 0 and json.loads(report.output)["n_calls"] == 1
    migrations = runner.invoke(cli, ["migrate", "--list", "--db", url])
    assert migrations.exit_code == 0 and "pending" not in migrations.output
    password = url.split("//", 1)[1].split("@", 1)[0].partition(":")[2]
    if password:
        assert password not in migrations.output
