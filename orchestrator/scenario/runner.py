"""Playing scenarios on the local rig: each one N times, K calls at a time, each call judged once settled.

One rig (server + carrier emulator + the scenario's backend, `orchestrator.rig.LocalRig`) per
scenario, in the scenario's own settings; all calls go into one database under one run label. Each
call dials a number of its own, whose far end plays the scenario's steps on the scenario's line (the
line's seed advances with the repeat, so repeats of a lossy line lose different frames). The caller's
ground truth is written beside the database. What is printed is the command line's business: this
module reports each settled call to a callback and returns the results.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.emulator import CallOptions, EchoSpec, Faults
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.scenario.expect import judge
from orchestrator.scenario.schema import Scenario, ScenarioError
from orchestrator.scenario.summary import CallResult
from orchestrator.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[CallResult, int, int], None]  # (a settled call, calls done, calls in all)


@dataclass(frozen=True, slots=True)
class Campaign:
    scenarios: tuple[Scenario, ...]
    repeat: int = 1
    calls: int = 1  # at a time
    run: str = "scenario"
    db: Path | None = None
    workdir: Path | None = None


@dataclass(frozen=True, slots=True)
class Played:
    """What a campaign did: where its files are, and per scenario its calls in repeat order."""

    workdir: Path
    db: Path
    scenarios: list[tuple[Scenario, list[CallResult]]]


def call_options(scenario: Scenario, repeat: int) -> CallOptions:
    """The far end of repeat `repeat` (from 1): the scenario's steps on its line."""
    line, echo = scenario.line, scenario.line.echo
    faults = Faults(
        jitter_ms=line.jitter_ms,
        lost_frames=line.lost_frames,
        loss_rate=line.loss_rate,
        echo=EchoSpec(echo.delay_ms, echo.loss_db, echo.room, echo.rt60_s, echo.distance_m) if echo else None,
        noise_dbfs=line.noise_dbfs,
        hangup_after_stream_s=scenario.call.max_seconds,
        seed=line.seed + repeat - 1,
    )
    return CallOptions(
        steps=scenario.steps,
        faults=faults,
        caller_start_s=scenario.call.caller_start_s,
        hangup_after_turns=scenario.call.hangup_when_done,
    )


def scenario_settings(scenario: Scenario, workdir: Path, db: Path, base: Settings) -> Settings:
    """The rig's settings: the scenario's backend and its settings over the environment's model ones."""
    b = scenario.backend
    kw: dict[str, Any] = {
        "db": db,
        "backend": b.name,
        "greeting": scenario.call.greeting,
        "max_call_seconds": scenario.call.max_seconds + 30,
        "moshi_hf_repo": base.moshi_hf_repo,
        "moshi_quantize": base.moshi_quantize,
        "moshi_server_urls": base.moshi_server_urls,
        "aec": base.aec,
        "recordings_dir": workdir / "recordings",
    }
    kw.update(dict(b.settings))
    return rig_settings(workdir, **kw)


def check_settings(scenarios: tuple[Scenario, ...]) -> None:
    """Refuse, before any call, a scenario whose backend settings the server would refuse (a
    moshi-server backend without URLs, say): the error names the scenario's file."""
    from orchestrator.errors import SettingsError

    base = Settings.from_env()
    for s in scenarios:
        try:
            scenario_settings(s, Path(tempfile.gettempdir()), Path(tempfile.gettempdir()) / "unused.db", base)
        except SettingsError as exc:
            raise ScenarioError(
                f"{s.path}: backend {s.backend.name}: {exc} (in a scenario: under backend:, in lower case)"
            ) from None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "scenario"


class Interrupted(Exception):
    """`stop` was set: the calls in flight were hung up and settled, the rest not placed, the rig stopped."""


async def run_campaign(
    c: Campaign, progress: Progress | None = None, stop: asyncio.Event | None = None
) -> Played:
    """Every scenario of the campaign in turn. Setting `stop` (Ctrl-C) hangs up the calls in flight, waits
    for them to end and be stored, places no more, and raises Interrupted once the rig has stopped."""
    stop = stop or asyncio.Event()
    workdir = c.workdir or Path(tempfile.mkdtemp(prefix="orchestrator-scenario-"))
    db = c.db or workdir / "scenario.db"
    base = Settings.from_env()
    total = c.repeat * len(c.scenarios)
    done = [0]

    def settled(result: CallResult) -> None:
        done[0] += 1
        if progress is not None:
            progress(result, done[0], total)

    out = []
    for number, scenario in enumerate(c.scenarios):
        truth_dir = workdir / "ground_truth" / f"{number + 1:02d}-{_slug(scenario.name)}"
        truth_dir.mkdir(parents=True, exist_ok=True)
        settings = scenario_settings(scenario, workdir, db, base)
        results = await _run_scenario(scenario, settings, truth_dir, c, settled, stop)
        if stop.is_set():
            raise Interrupted
        out.append((scenario, sorted(results, key=lambda r: r.repeat)))
    return Played(workdir, db, out)


async def _run_scenario(
    scenario: Scenario,
    settings: Settings,
    truth_dir: Path,
    c: Campaign,
    settled: Callable[[CallResult], None],
    stop: asyncio.Event,
) -> list[CallResult]:
    backend = None
    if scenario.backend.playback_wav is not None:
        from bridge.backends.playback import PlaybackBackend

        backend = PlaybackBackend(wav=Path(scenario.backend.playback_wav))
    gate = asyncio.Semaphore(c.calls)
    results: list[CallResult] = []
    live: set[str] = set()  # CallSids in flight
    async with LocalRig(settings, truth_dir, backend=backend) as rig:

        async def one(repeat: int) -> None:
            async with gate:
                if stop.is_set():
                    return
                result = await _one_call(rig, scenario, repeat, c.run, c.calls, live)
            results.append(result)
            settled(result)

        async def hang_up_when_stopped() -> None:
            await stop.wait()
            done: set[str] = set()
            while True:  # also a call whose create was in flight when stop came
                for sid in live - done:  # they end as a caller's hang-up does: stored, analysed, judged
                    await rig.emulator.hang_up(sid)
                    done.add(sid)
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(hang_up_when_stopped())
        try:
            await asyncio.gather(*(one(r) for r in range(1, c.repeat + 1)))
        finally:
            watcher.cancel()
    return results


async def _one_call(
    rig: LocalRig, scenario: Scenario, repeat: int, run: str, at_once: int, live: set[str]
) -> CallResult:
    to = f"+1555{repeat:07d}"  # a number of its own: the far end's options are this call's
    limit_s = scenario.call.max_seconds + 60
    row: dict[str, Any] = {}
    try:
        row = await rig.place(call_options(scenario, repeat), to=to, run=run, say=scenario.call.greeting)
        live.add(row["call_sid"])
        try:
            truth = await rig.emulator.wait_call(row["call_sid"], timeout=limit_s)
        finally:
            live.discard(row["call_sid"])
        # one analysis process takes the calls in turn (a second or two each)
        doc = await rig.settled(row["id"], timeout_s=30.0 + 3.0 * at_once)
    except (TimeoutError, asyncio.TimeoutError):
        return _failed(scenario, repeat, row, f"the call did not end within {limit_s:.0f} s")
    except Exception as exc:  # a refused create, a dead rig: this call has nothing to judge
        from orchestrator.exits import translate

        if translate(exc) is None:
            raise
        return _failed(scenario, repeat, row, str(exc))
    checks = {c["criterion"]: c["status"] for c in doc["checks"] if c["decided_by"] == "auto"}
    return CallResult(
        scenario=scenario.name,
        repeat=repeat,
        call_id=doc["call"]["id"],
        call_sid=doc["call"]["call_sid"],
        state=doc["call"]["state"],
        outcomes=tuple(judge(scenario.expect, doc)),
        metrics={k: float(v) for k, v in doc["metrics"].items() if v is not None},
        checks=checks,
        truth_path=(truth.files or {}).get("ground_truth"),
    )


def _failed(scenario: Scenario, repeat: int, row: dict[str, Any], why: str) -> CallResult:
    return CallResult(
        scenario=scenario.name,
        repeat=repeat,
        call_id=row.get("id"),
        call_sid=row.get("call_sid"),
        state=row.get("state") or "not placed",
        outcomes=(),
        error=why,
    )
