"""`orchestrator scenario` end to end on the local rig (server + carrier emulator + echo backend): the
calls are recorded under the run label, judged from what the server stored, checked here against the
emulator's own ground truth; exit 0 when every expectation is met and 1 when one is not; JUnit and
JSON as CI reads them; Ctrl-C hangs up cleanly (issue 18). A few seconds of audio per call: the machine is small."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from orchestrator.service import CallService
from orchestrator.store import Store
from tests.e2e.conftest import needs_espeak

ROOT = Path(__file__).resolve().parents[2]

SHORT = """\
name: short
description: The backend says hi; the caller keys 1 2 #, says one line and waits for the answer.
backend:
  name: echo
  echo_mode: turns
  echo_greeting: Hi there
call:
  greeting: ""
  caller_start_s: 0.3
  max_seconds: 20
line:
  jitter_ms: 10
  seed: 5
steps:
  - wait_for_reply: {timeout_s: 4}
  - dtmf: {digits: "12#", gap_s: 0.2}
  - say: Hello there.
  - wait_for_reply: {timeout_s: 4}
  - hangup
expect:
  caller_hears_model: pass
  dtmf_received: "12#"
  metrics:
    - first_audio_heard_ms < 1500
    - turns >= 1
    - echo_detected == 0
"""
IMPOSSIBLE = SHORT.replace("name: short", "name: impossible").replace(
    "first_audio_heard_ms < 1500", "first_audio_heard_ms < 1"
)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "scenario", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _truth(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(result["ground_truth"]).read_text())


@needs_espeak
def test_a_met_scenario_runs_repeated_calls_records_them_and_exits_0(tmp_path: Path) -> None:
    (tmp_path / "short.yaml").write_text(SHORT)
    db = tmp_path / "c.db"
    proc = _run(
        tmp_path, "short.yaml", "--repeat", "2", "--calls", "2", "--run", "e2e", "--db", str(db),
        "--json", "run.json", "--junit", "run.xml",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("expectations 5/5" in line for line in progress), proc.stderr
    assert "run e2e: all expectations met on 2 call(s)" in proc.stdout

    whole = json.loads((tmp_path / "run.json").read_text())
    assert (whole["run"], whole["ok"], whole["repeat"], whole["calls_at_once"]) == ("e2e", True, 2, 2)
    (doc,) = whole["scenarios"]
    assert (doc["scenario"], doc["calls"], doc["calls_ok"]) == ("short", 2, 2)
    assert [e["met"] for e in doc["expectations"]] == [2] * 5
    assert doc["metrics"]["first_audio_heard_ms"]["n"] == 2

    store = Store(db, create=False)
    rows = store.list_calls(run="e2e")
    service = CallService(store)
    assert sorted(r["id"] for r in rows) == sorted(r["call_id"] for r in doc["results"])
    seeds = set()
    for result in doc["results"]:
        stored = service.document(result["call_id"])
        assert stored["call"]["state"] == "completed" and stored["call"]["call_sid"] == result["call_sid"]
        # judged from what the server stored ...
        assert result["metrics"]["first_audio_heard_ms"] == stored["metrics"]["first_audio_heard_ms"]
        by = {e["expectation"]: e for e in result["expectations"]}
        assert by["first_audio_heard_ms < 1500"]["measured"] == stored["metrics"]["first_audio_heard_ms"]
        # ... and what the far end really did, by the emulator's own record
        truth = _truth(result)
        assert truth["call_sid"] == result["call_sid"]
        assert [s["step"] for s in truth["stream"]["steps"]] == [
            "wait_for_reply",
            "dtmf",
            "say",
            "wait_for_reply",
            "hangup",
        ]
        sent = "".join(d["digit"] for d in truth["stream"]["dtmf_sent"])
        assert sent == "12#" and by["dtmf received '12#'"]["measured"] == sent
        assert truth["stream"]["first_heard_onset_ms"] is not None  # the phone did hear the model
        seeds.add(truth["options"]["faults"]["seed"])
    assert seeds == {5, 6}  # each repeat its own seed

    root = ET.parse(tmp_path / "run.xml").getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "short" and suite.get("tests") == "10" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 10 and not suite.findall("testcase/failure")


@needs_espeak
def test_an_unmet_expectation_exits_1_with_the_evidence_in_junit(tmp_path: Path) -> None:
    (tmp_path / "impossible.yaml").write_text(IMPOSSIBLE)
    proc = _run(tmp_path, "impossible.yaml", "--run", "bad", "--junit", "run.xml", "--json", "-")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "expectations 4/5" in proc.stderr and "missed: first_audio_heard_ms < 1" in proc.stderr
    whole = json.loads(proc.stdout)  # --json -: stdout is the document alone, the summary went to stderr
    assert whole["ok"] is False and "expectations NOT met on 1 of 1 call(s)" in proc.stderr
    (result,) = whole["scenarios"][0]["results"]
    heard = result["metrics"]["first_audio_heard_ms"]
    root = ET.parse(tmp_path / "run.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "0")
    (failed,) = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "first_audio_heard_ms < 1" and failed.get("classname") == "impossible.call-1"
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == f"first_audio_heard_ms = {heard:.0f}, misses the bound < 1"


def test_a_bad_file_is_exit_2_before_any_call(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(SHORT.replace("timeout_s: 4}\n  - dtmf", "timeout_s: soon}\n  - dtmf"))
    proc = _run(tmp_path, "bad.yaml", "--db", str(tmp_path / "c.db"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: bad.yaml line 15: steps[0].wait_for_reply.timeout_s must be a number of seconds > 0, got 'soon'"
    )
    assert not (tmp_path / "c.db").exists()


@needs_espeak
def test_ctrl_c_hangs_up_the_call_in_flight_and_exits_130(tmp_path: Path) -> None:
    (tmp_path / "short.yaml").write_text(SHORT)
    db = tmp_path / "c.db"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "scenario", "short.yaml", "--repeat", "3", "--db", str(db)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("[1/3]") or not line:
            break
    assert any(s.startswith("[1/3]") for s in seen), "".join(seen)
    time.sleep(1.5)  # the second call is placed and streaming
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted")
    for noise in ("Traceback", "WARNING", "Task was destroyed", "Unclosed", "[3/3]"):
        assert noise not in err, err
    rows = Store(db, create=False).list_calls()
    assert len(rows) == 2 and all(r["state"] == "completed" for r in rows)  # the third was never placed
