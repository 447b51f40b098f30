"""`orchestrator scenario` refuses what would make the run impossible before any call: one line, exit 2
(issue 18). The calls themselves are tested end to end (tests/e2e/test_scenario_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator import exits
from orchestrator.cli import cli

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "scenarios" / "greeting.yaml"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scenario", *args], catch_exceptions=True)


def one_line(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _no_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal must come before the rig starts: starting it fails the test."""
    import orchestrator.scenario.runner as runner

    async def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the rig started")

    monkeypatch.setattr(runner, "run_campaign", refuse)


def test_help_teaches_and_documents_the_exit_codes() -> None:
    out = invoke("--help").stdout
    assert "Example: orchestrator scenario scenarios/greeting.yaml" in out
    assert "Exit codes: 0 done" in out and "1 the calls ran but an expectation was not met" in out
    assert "2 nothing done" in out


def test_every_file_is_checked_before_any_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_calls(monkeypatch)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - silence: forever\n")
    line = one_line(invoke(str(GOOD), str(bad)), exits.USAGE)
    assert line == f"error: {bad} line 3: steps[0].silence must be a number of seconds >= 0, got 'forever'"
    line = one_line(invoke(str(GOOD), str(tmp_path / "missing.yaml")), exits.USAGE)
    assert line.startswith(f"error: cannot read scenario {tmp_path / 'missing.yaml'}: ")


def test_missing_espeak_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_calls(monkeypatch)
    import orchestrator.cli.scenario as command

    monkeypatch.setattr(command.shutil, "which", lambda name: None)
    line = one_line(invoke(str(GOOD)), exits.USAGE)
    assert line.startswith("error: espeak-ng is not installed: the emulated caller speaks with it")


def test_unwritable_outputs_are_refused_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_calls(monkeypatch)
    line = one_line(invoke(str(GOOD), "--junit", str(tmp_path / "no" / "x.xml")), exits.USAGE)
    assert (
        line == f"error: --junit {tmp_path / 'no' / 'x.xml'}: folder {tmp_path / 'no'} does not exist "
        "(create it, or write elsewhere)"
    )
    line = one_line(invoke(str(GOOD), "--json", str(tmp_path)), exits.USAGE)
    assert "is a directory" in line  # click says it
    foreign = tmp_path / "foreign.db"
    foreign.write_text("not sqlite at all, just text " * 100)
    one_line(invoke(str(GOOD), "--db", str(foreign)), exits.USAGE)


@pytest.mark.parametrize(
    ("args", "needle"), [(("--repeat", "0"), "--repeat"), (("--calls", "33"), "--calls")]
)
def test_nonsense_options_are_usage_errors(args: tuple[str, ...], needle: str) -> None:
    assert needle in one_line(invoke(str(GOOD), *args), exits.USAGE)


def test_no_file_is_a_usage_error() -> None:
    assert "FILE..." in one_line(invoke(), exits.USAGE)


def test_a_backend_the_server_would_refuse_is_refused_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_calls(monkeypatch)
    monkeypatch.delenv("MOSHI_SERVER_URLS", raising=False)
    remote = tmp_path / "remote.yaml"
    remote.write_text("name: remote\nbackend: {name: moshi-server}\nsteps: [hangup]\n")
    line = one_line(invoke(str(GOOD), str(remote)), exits.USAGE)
    assert line.startswith(
        f"error: {remote}: backend moshi-server: BACKEND=moshi-server needs MOSHI_SERVER_URLS"
    )
    assert line.endswith("(in a scenario: under backend:, in lower case)")
    remote.write_text(
        "name: remote\nbackend: {name: moshi-server, moshi_server_urls: 'ws://127.0.0.1:9'}\nsteps: [hangup]\n"
    )
    from orchestrator.scenario.parse import load_scenario
    from orchestrator.scenario.runner import check_settings

    check_settings((load_scenario(remote),))  # the scenario's own URL is enough
