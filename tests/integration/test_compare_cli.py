"""`orchestrator report --compare BASELINE_RUN RUN` end to end: on rows written straight into a store
(a latency shift and a pass-rate drop the test chose), and on real calls from the rig whose echo
backend waits two model frames longer before it answers (hangover 400 -> 560 ms: +160 ms of
response latency by the backend's own schedule). Exit codes with and without --fail-on-regression."""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bridge.backends.echo import EchoBackend
from orchestrator import exits
from orchestrator.cli import cli
from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings
from orchestrator.store import Store

LAT = "response_latency_ms_p50"
SPREAD = (0.0, 37.0, 14.0, 51.0, 8.0, 29.0, 44.0, 3.0, 22.0, 58.0)  # a latency spread of ~60 ms


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .env and no settings from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    import os

    for key in list(os.environ):
        if key.startswith(("CHECK_", "ORCHESTRATOR_", "TWILIO_")):
            monkeypatch.delenv(key)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def fill(db: Path) -> None:
    """Runs `base` and `same` alike, `slow` 150 ms slower with 7 of 10 calls failing interactivity."""
    store = Store(db)
    for run, shift in (("base", 0.0), ("slow", 150.0), ("same", 0.0)):
        for i, spread in enumerate(SPREAD):
            call = store.create_call(
                direction="outbound-api", to_number="+15005550010", from_number="+15005550006", run=run
            )
            store.put_metrics(
                call["id"],
                {LAT: 500.0 + spread + shift, "turns": 3.0, "inbound_rms_dbfs": -24.0 - spread / 100},
                {LAT: "ms", "turns": "count", "inbound_rms_dbfs": "dBFS"},
            )
            ok = run != "slow" or i < 3
            store.add_check(call["id"], "conversation_interactive", "pass" if ok else "fail", "turns", "auto")
    store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "calls.db"
    fill(path)
    return path


def test_a_slower_run_is_a_regression_and_fails_only_when_asked(db: Path) -> None:
    shown = invoke("report", "--db", str(db), "--compare", "base", "slow")
    assert shown.exit_code == exits.OK, shown.output
    row = next(line for line in shown.output.splitlines() if line.startswith("response latency p50 (ms)"))
    assert row.split()[-1] == "regression" and "+150 [" in row
    assert "Regressions (2): response latency p50 (ms), Conversation interactive" in shown.output
    failed = invoke("report", "--db", str(db), "--compare", "base", "slow", "--fail-on-regression")
    assert failed.exit_code == exits.OUTCOME
    assert "regression against base: response_latency_ms_p50, conversation_interactive" in failed.output


def test_the_same_configuration_passes_with_fail_on_regression(db: Path) -> None:
    result = invoke("report", "--db", str(db), "--compare", "base", "same", "--fail-on-regression", "--json")
    assert result.exit_code == exits.OK, result.output
    data = json.loads(result.output)
    assert data["regressions"] == []
    verdicts = {m["name"]: m["verdict"] for m in data["metrics"]}
    assert verdicts == {LAT: "no change", "turns": "no change", "inbound_rms_dbfs": "no change"}
    lat = next(m for m in data["metrics"] if m["name"] == LAT)
    assert lat["baseline"]["p50"] == pytest.approx(500 + sorted(SPREAD)[4] / 2 + sorted(SPREAD)[5] / 2)


def test_the_reverse_direction_is_better_not_a_regression(db: Path) -> None:
    result = invoke("report", "--db", str(db), "--compare", "slow", "base", "--fail-on-regression", "--json")
    assert result.exit_code == exits.OK, result.output
    data = json.loads(result.output)
    assert {m["name"]: m["verdict"] for m in data["metrics"]}[LAT] == "better"
    assert {c["criterion"]: c["verdict"] for c in data["criteria"]}["conversation_interactive"] == "better"


def test_a_wide_margin_turns_the_latency_regression_into_worse(db: Path) -> None:
    result = invoke("report", "--db", str(db), "--compare", "base", "slow", "--margin", "ms=200", "--json")
    data = json.loads(result.output)
    assert {m["name"]: m["verdict"] for m in data["metrics"]}[LAT] == "worse"
    assert data["regressions"] == ["conversation_interactive"]


def test_html_comparison_is_written(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp.html"
    result = invoke(
        "report", "--db", str(db), "--compare", "base", "slow", "--format", "html", "--out", str(out)
    )
    assert result.exit_code == exits.OK, result.output
    assert f"wrote {out} (10 call(s) against 10)" in result.output
    page = out.read_text()
    assert f'data-metric="{LAT}" data-verdict="regression"' in page and "<script" not in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--compare", "base", "nope"), "error: no run labelled 'nope'; known runs: base, slow, same"),
        (
            ("--compare", "base", "slow", "--margin", "ms=fast"),
            "error: --margin 'ms=fast': 'fast' is not a number",
        ),
        (("--compare", "base", "slow", "--margin", "lag_ms=5"), "error: --margin lag_ms: not a unit"),
        (("--fail-on-regression",), "error: --fail-on-regression, --margin and --alpha go with --compare"),
        (("--compare", "base", "slow", "--run", "base"), "error: --compare takes the two run labels itself"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(db: Path, args: tuple[str, ...], message: str) -> None:
    result = invoke("report", "--db", str(db), *args)
    assert result.exit_code == exits.USAGE
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output


def test_an_empty_store_names_no_runs(tmp_path: Path) -> None:
    Store(tmp_path / "empty.db").close()
    result = invoke("report", "--db", str(tmp_path / "empty.db"), "--compare", "a", "b")
    assert result.exit_code == exits.USAGE
    assert "no run labelled 'a'; known runs: none yet" in result.output


# -- real calls -------------------------------------------------------------------------------------

GREETING = "Hello, I repeat what you say."
LINES = (
    Turn(text="Hello, can you hear me?", answer_timeout_s=4.0, pause_s=0.4),
    Turn(text="Tell me about the weather.", answer_timeout_s=4.0, pause_s=0.4),
)
HANGOVER_MS, SLOWER_HANGOVER_MS = 400.0, 560.0  # whole 80 ms frames: the backend waits exactly 160 ms more


def _truth_p50(stream: dict[str, Any]) -> float | None:
    """The call's median response latency from the emulator's own schedule: each caller utterance's end
    to the onset of the next speech the phone heard (both on the phone's clock)."""
    heard = [h["onset_ms"] for h in stream.get("heard_speech") or []]
    turns = []
    for seg in stream.get("caller_speech") or []:
        later = [h for h in heard if h > seg["end_ms"]]
        if later:
            turns.append(later[0] - seg["end_ms"])
    return statistics.median(turns) if turns else None


async def _record(workdir: Path, db: Path, runs: list[tuple[str, float, int]]) -> dict[str, list[float]]:
    truth: dict[str, list[float]] = {}
    for label, hangover, n in runs:
        settings = rig_settings(workdir / label, backend="echo", echo_mode="turns", greeting="", db=db)
        backend = EchoBackend(mode="turns", greeting=GREETING, hangover_ms=hangover)
        async with LocalRig(settings, workdir / label / "truth", backend=backend) as rig:
            rows = []
            for i in range(n):
                opts = CallOptions(
                    ring_s=0.2,
                    turns=LINES,
                    caller_start_s=2.0 + 0.05 * i,
                    faults=Faults(noise_dbfs=-60.0, hangup_after_stream_s=10.0, seed=i),
                )
                rows.append(await rig.place(opts, to=f"+1500555{6000 + i:04d}", run=label))
            for r in rows:
                seen = await rig.emulator.wait_call(r["call_sid"], timeout=60)
                if (p50 := _truth_p50(seen.stream or {})) is not None:
                    truth.setdefault(label, []).append(p50)
            for r in rows:
                await rig.settled(r["id"], timeout_s=120)
    return truth


@pytest.fixture(scope="module")
def rig_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[float]]]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (the caller speaks with it)")
    workdir = tmp_path_factory.mktemp("compare-rig")
    db = workdir / "calls.db"
    # four calls a side: fully separated samples of four reach p = 2/70 < 0.05 (three cannot: 2/20)
    runs = [("baseline", HANGOVER_MS, 4), ("again", HANGOVER_MS, 4), ("slower", SLOWER_HANGOVER_MS, 4)]
    return db, asyncio.run(_record(workdir, db, runs))


def _compare(db: Path, base: str, run: str) -> tuple[int, dict[str, Any]]:
    result = invoke("report", "--db", str(db), "--compare", base, run, "--fail-on-regression", "--json")
    json_text = result.output[: result.output.rindex("}") + 1]
    return result.exit_code, json.loads(json_text)


@pytest.mark.slow
def test_rig_calls_with_a_slower_endpointing_are_a_regression(
    rig_db: tuple[Path, dict[str, list[float]]],
) -> None:
    db, truth = rig_db
    code, data = _compare(db, "baseline", "slower")
    lat = next(m for m in data["metrics"] if m["name"] == LAT)
    assert (lat["baseline"]["n"], lat["run"]["n"]) == (4, 4)
    # two more 80 ms frames of hangover before each answer: the first answer 160 ms later, the next ones
    # by 160 ms plus where the caller's later start falls on the echo's frame grid; the emulator's own
    # schedule says by how much
    expected = statistics.median(truth["slower"]) - statistics.median(truth["baseline"])
    assert lat["diff"] == pytest.approx(expected, abs=20)
    assert lat["verdict"] == "regression" and code == exits.OUTCOME
    assert LAT in data["regressions"]


@pytest.mark.slow
def test_rig_calls_at_the_same_configuration_are_no_regression(
    rig_db: tuple[Path, dict[str, list[float]]],
) -> None:
    db, truth = rig_db
    code, data = _compare(db, "baseline", "again")
    lat = next(m for m in data["metrics"] if m["name"] == LAT)
    expected = statistics.median(truth["again"]) - statistics.median(truth["baseline"])
    assert lat["diff"] == pytest.approx(expected, abs=20) and lat["verdict"] != "regression"
    assert data["regressions"] == [] and code == exits.OK
    # pass rates as the store holds them, counted here straight from its checks
    store = Store(db, create=False)
    try:
        stored = {
            label: [
                c["status"]
                for r in store.list_calls(run=label)
                for c in store.checks_for(r["id"])
                if c["criterion"] == "conversation_interactive" and c["decided_by"] == "auto"
            ]
            for label in ("baseline", "again")
        }
    finally:
        store.close()
    crit = {c["criterion"]: c for c in data["criteria"]}["conversation_interactive"]
    assert (crit["baseline_pass"], crit["baseline_judged"]) == (stored["baseline"].count("pass"), 4)
    assert (crit["run_pass"], crit["run_judged"]) == (stored["again"].count("pass"), 4)
