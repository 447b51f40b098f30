"""Scenario files: good ones become the emulator's steps and faults one for one, bad ones are refused in
one line that names the file, the line and the field (issue 18)."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from orchestrator.emulator.steps import BargeIn, Dtmf, Hangup, Say, Silence, WaitForReply
from orchestrator.scenario.parse import load_scenario, parse_scenario
from orchestrator.scenario.runner import call_options, scenario_settings
from orchestrator.scenario.schema import CriterionStatus, DtmfReceived, Echo, MetricBound, ScenarioError
from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "scenarios").glob("*.yaml"))

FULL = """\
name: everything
description: every key a scenario can hold
backend:
  name: echo
  echo_mode: delay
  echo_delay_ms: 250
  aec: on
line:
  loss_rate: 0.05
  lost_frames: [3, 4]
  jitter_ms: 12.5
  echo: {delay_ms: 90, loss_db: 18, room: true, rt60_s: 0.4, distance_m: 1.5}
  noise_dbfs: -50
  seed: 42
call:
  greeting: ""
  caller_start_s: 1.5
  max_seconds: 30
  hangup_when_done: false
steps:
  - say: Hello there
  - say: {wav: hello.wav}
  - wait_for_reply
  - wait_for_reply: {timeout_s: 3}
  - silence: 0.5
  - silence: {seconds: 2}
  - barge_in: {after_s: 0.8, text: Stop please, timeout_s: 5}
  - dtmf: "12#"
  - dtmf: {digits: "0A*", gap_s: 0.4}
  - hangup
expect:
  caller_hears_model: pass
  audio_quality_ok: [pass, unknown]
  dtmf_received: "120A*"
  metrics:
    - first_audio_heard_ms < 1500
    - echo_detected == 1
    - response_latency_ms_p50<=800
"""


def _wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return path


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_key_maps_one_for_one(tmp_path: Path) -> None:
    wav = _wav(tmp_path / "hello.wav")
    s = load_scenario(_write(tmp_path, FULL))
    assert s.name == "everything" and s.description == "every key a scenario can hold"
    assert s.steps == (
        Say(text="Hello there"),
        Say(wav=str(wav)),  # relative to the scenario's folder
        WaitForReply(),
        WaitForReply(timeout_s=3.0),
        Silence(0.5),
        Silence(2.0),
        BargeIn(after_s=0.8, text="Stop please", timeout_s=5.0),
        Dtmf("12#"),
        Dtmf("0A*", gap_s=0.4),
        Hangup(),
    )
    assert s.line.loss_rate == 0.05 and s.line.lost_frames == (3, 4) and s.line.jitter_ms == 12.5
    assert s.line.echo == Echo(delay_ms=90, loss_db=18, room=True, rt60_s=0.4, distance_m=1.5)
    assert s.backend.name == "echo" and dict(s.backend.settings) == {
        "echo_mode": "delay",
        "echo_delay_ms": 250.0,
        "aec": "on",  # YAML 1.1 reads `on` as true: the setting's own word comes back
    }
    assert (s.call.greeting, s.call.caller_start_s, s.call.max_seconds) == ("", 1.5, 30.0)
    assert s.expect == (
        CriterionStatus("caller_hears_model", ("pass",), 32),
        CriterionStatus("audio_quality_ok", ("pass", "unknown"), 33),
        DtmfReceived("120A*", 34),
        MetricBound("first_audio_heard_ms", "<", 1500.0, "first_audio_heard_ms < 1500", 36),
        MetricBound("echo_detected", "==", 1.0, "echo_detected == 1", 37),
        MetricBound("response_latency_ms_p50", "<=", 800.0, "response_latency_ms_p50<=800", 38),
    )


def test_the_line_becomes_the_emulators_faults_and_the_backend_its_settings(tmp_path: Path) -> None:
    _wav(tmp_path / "hello.wav")
    s = load_scenario(_write(tmp_path, FULL))
    first, third = call_options(s, 1), call_options(s, 3)
    f = first.faults
    assert (f.loss_rate, f.lost_frames, f.jitter_ms, f.noise_dbfs) == (0.05, (3, 4), 12.5, -50.0)
    assert (f.echo.delay_ms, f.echo.loss_db, f.echo.room, f.echo.rt60_s, f.echo.distance_m) == (
        90.0,
        18.0,
        True,
        0.4,
        1.5,
    )
    assert f.hangup_after_stream_s == 30.0 and first.caller_start_s == 1.5 and not first.hangup_after_turns
    assert first.steps == s.steps
    assert (f.seed, third.faults.seed) == (42, 44)  # repeats lose different frames
    settings = scenario_settings(s, tmp_path, tmp_path / "c.db", Settings())
    assert (settings.backend, settings.echo_mode, settings.echo_delay_ms, settings.aec) == (
        "echo",
        "delay",
        250.0,
        "on",
    )
    assert settings.greeting == "" and settings.db == tmp_path / "c.db"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    s = load_scenario(path)
    assert s.steps and s.expect and s.description
    call_options(s, 1)  # and the emulator accepts its steps (CallOptions checks each)


def test_the_examples_cover_what_the_issue_asks() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"greeting", "faulty_line", "barge_in", "dtmf", "echo_multi_turn", "demo"} <= names
    kinds = {type(step) for p in EXAMPLES for step in load_scenario(p).steps}
    assert {Say, WaitForReply, Silence, BargeIn, Dtmf, Hangup} <= kinds


def test_the_demo_scenario_is_the_demos_own_script() -> None:
    """scenarios/demo.yaml plays what `orchestrator demo` plays (its lines, pauses, start and length)."""
    from orchestrator.cli.demo_run import (
        CALLER_START_S,
        DEMO_LINES,
        ECHO_GREETING,
        DemoOptions,
        caller_script,
    )

    s = load_scenario(ROOT / "scenarios" / "demo.yaml")
    turns = caller_script(DemoOptions().seconds)
    expected: list[object] = []
    for t in turns:
        expected += [Say(text=t.text), WaitForReply(timeout_s=t.answer_timeout_s), Silence(t.pause_s)]
    assert list(s.steps) == expected and [t.text for t in turns] == list(DEMO_LINES)
    assert s.call.caller_start_s == CALLER_START_S and s.call.max_seconds == DemoOptions().seconds
    assert s.call.greeting == DemoOptions().say and s.backend.setting("echo_greeting") == ECHO_GREETING
    assert not s.call.hangup_when_done


BAD = [
    (
        "name: x\nsteps:\n  - say: hi\n  - barge_in: {after_s: soon, text: hey}\n",
        "x.yaml line 4: steps[1].barge_in.after_s must be a number of seconds >= 0, got 'soon'",
    ),
    (
        "name: x\nsteps:\n  - say: hi\n  - silence: -1\n",
        "x.yaml line 4: steps[1].silence must be a number of seconds >= 0, got -1",
    ),
    (
        "name: x\nsteps:\n  - sya: hi\n",
        "x.yaml line 3: steps[0]: no step 'sya' (did you mean say?)",
    ),
    (
        "name: x\nsteps:\n  - dtmf: 0123\n",
        "x.yaml line 3: steps[0].dtmf must be a quoted string of keys 0-9 * # A-D (YAML reads 0123 as a "
        "number), got 83",
    ),
    (
        "name: x\nsteps:\n  - dtmf: '12x'\n",
        "x.yaml line 3: steps[0].dtmf must be keys 0-9 * # A-D, got '12x'",
    ),
    (
        "name: x\nsteps:\n  - say: {text: hi, wav: a.wav}\n",
        "x.yaml line 3: steps[0].say needs exactly one of text (spoken by espeak-ng) or wav (a file)",
    ),
    (
        "name: x\nsteps:\n  - say: {wav: missing.wav}\n",
        "x.yaml line 3: steps[0].say.wav: no file",
    ),
    (
        "name: x\nsteps:\n  - barge_in: {text: hi}\n",
        "x.yaml line 3: steps[0].barge_in.after_s is missing (seconds after the model starts speaking)",
    ),
    (
        "name: x\nsteps:\n  - hangup: now\n",
        "x.yaml line 3: steps[0].hangup takes nothing (write `- hangup`)",
    ),
    (
        "name: x\nsteps: []\n",
        "x.yaml line 2: steps must be a list of caller steps",
    ),
    (
        "steps:\n  - hangup\n",
        "x.yaml line 1: name is missing (a scenario needs at least name and steps)",
    ),
    (
        "name: x\nstesp:\n  - hangup\n",
        "x.yaml line 2: stesp is not a known key (did you mean steps?)",
    ),
    (
        "name: x\nname: y\nsteps: [hangup]\n",
        "x.yaml line 2: name is given twice",
    ),
    (
        "name: x\nsteps: [hangup]\nline:\n  loss_rate: 1.5\n",
        "x.yaml line 4: line.loss_rate must be a fraction from 0 to under 1, got 1.5",
    ),
    (
        "name: x\nsteps: [hangup]\nline:\n  echo: {delay_ms: 100, los_db: 10}\n",
        "x.yaml line 4: line.echo.los_db is not a known key (did you mean loss_db?)",
    ),
    (
        "name: x\nsteps: [hangup]\nline:\n  lost_frames: [1, 0]\n",
        "x.yaml line 4: line.lost_frames[1] must be a frame number >= 1, got 0",
    ),
    (
        "name: x\nsteps: [hangup]\nbackend: {name: moshy}\n",
        "x.yaml line 3: backend.name must be one of echo, playback, moshi, moshi-server, got 'moshy'",
    ),
    (
        "name: x\nsteps: [hangup]\nbackend: {name: echo, echo_mode: loud}\n",
        "x.yaml line 3: backend.echo_mode must be turns or delay, got 'loud'",
    ),
    (
        "name: x\nsteps: [hangup]\nexpect:\n  metrics:\n    - first_audio_heard < 1500\n",
        "x.yaml line 5: expect.metrics[0]: no metric 'first_audio_heard' is recorded (did you mean "
        "first_audio_heard_ms",
    ),
    (
        "name: x\nsteps: [hangup]\nexpect:\n  metrics:\n    - first_audio_heard_ms about 1500\n",
        "x.yaml line 5: expect.metrics[0] must read `METRIC OP NUMBER` with OP one of <= >= == != < >",
    ),
    (
        "name: x\nsteps: [hangup]\nexpect:\n  metrics:\n    - turns > two\n",
        "x.yaml line 5: expect.metrics[0]: the bound must be a number, got 'two'",
    ),
    (
        "name: x\nsteps: [hangup]\nexpect:\n  caller_hears_model: yes\n",
        "x.yaml line 4: expect.caller_hears_model must be pass, fail or unknown (or a list of them), got True",
    ),
    (
        "name: x\nsteps: [hangup]\nexpect:\n  caller_hears_modle: pass\n",
        "x.yaml line 4: expect.caller_hears_modle is not a known key (did you mean caller_hears_model",
    ),
    (
        "name: x\nsteps:\n  - say: [unclosed\n",
        "x.yaml line 4: not valid YAML:",
    ),
    (
        "name: &a x\nsteps: [hangup]\ndescription: *a\n",
        "x.yaml line 3: anchors and aliases (*name) are not supported",
    ),
    (
        "name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
        "x.yaml line 2: nested deeper than 20 levels",
    ),
    (
        "name: !!python/name:os.system x\nsteps: [hangup]\n",
        "x.yaml line 1: cannot read this value: could not determine a constructor for the tag",
    ),
    (
        "- just\n- a list\n",
        "x.yaml line 1:  must be a mapping",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[1].split(": ", 1)[1][:40] for m in BAD])
def test_bad_files_are_refused_naming_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(_write(tmp_path, text))
    shown = str(err.value)
    assert shown.startswith(str(tmp_path / "x.yaml") + " line"), shown
    assert message in shown, shown
    assert "\n" not in shown


def test_a_file_that_is_not_a_scenario_is_one_line(tmp_path: Path) -> None:
    for raw, message in (
        (b"", "the file is empty"),
        (b"\xff\xfe\x00garbage", "not a text file"),
        (b"x" * 1_000_001, "too large for a scenario"),
    ):
        path = tmp_path / "y.yaml"
        path.write_bytes(raw)
        with pytest.raises(ScenarioError, match=message):
            load_scenario(path)
    with pytest.raises(ScenarioError, match=r"cannot read scenario .*nothing\.yaml"):
        load_scenario(tmp_path / "nothing.yaml")


def test_parse_scenario_names_the_file_as_shown() -> None:
    with pytest.raises(ScenarioError, match=r"^scenarios/x\.yaml line 1: name must be a non-empty string"):
        parse_scenario("name: ''\nsteps: [hangup]\n", ROOT / "scenarios" / "x.yaml", "scenarios/x.yaml")
