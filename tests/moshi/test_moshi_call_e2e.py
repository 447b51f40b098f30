"""A short phone call through the real bridge and carrier emulator with the real moshi_mlx path
(tiny generated weights): frames out for frames in, transcript and step metrics stored, and the
step budget ending the call gracefully with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings

pytestmark = [
    pytest.mark.moshi,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]


async def test_moshi_call_with_budget_end(tiny_repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bridge.backends.moshi import MoshiBackend, MoshiConfig

    backend = MoshiBackend(MoshiConfig(hf_repo=tiny_repo.repo, quantize=None, cache_dir=tiny_repo.cache_dir))
    budget_s = 4.0
    settings = rig_settings(tmp_path, backend="moshi", greeting="", max_call_seconds=budget_s)
    far = CallOptions(
        ring_s=0.1,
        caller_start_s=0.3,
        turns=(Turn(text="Hello Moshi, can you hear me?", wait_for_answer=False),),
        faults=Faults(hangup_after_stream_s=15.0),
    )  # the budget must end it first
    async with LocalRig(settings, tmp_path / "truth", backend=backend) as rig:
        row = await rig.place(far)
        truth = await rig.emulator.wait_call(row["call_sid"], timeout=40)
        doc = await rig.settled(row["id"])
    assert doc["call"]["state"] == "completed"
    assert truth.stream["ended"]["reason"] != "hangup"  # our side ended it, not the caller
    assert doc["call"]["end_reason"].startswith("budget_exhausted"), doc["call"]["end_reason"]
    assert any(e["type"] == "backend_ended" for e in doc["events"])
    m = doc["metrics"]
    assert m["frames_to_model"] >= 20
    assert truth.stream["frames_sent"] > 0 and m["marks_played"] > 0  # the phone got the model's audio
    for name in ("step_ms_p50", "step_ms_p95", "step_ms_p99", "model_load_s"):
        assert m[name] > 0, name
    assert doc["transcript"], "the model's text pieces are stored per call"
    checks = {c["criterion"]: c["status"] for c in doc["checks"] if c["decided_by"] == "auto"}
    assert checks["model_loads_quickly"] in ("pass", "fail")  # decided from model_load_s, not unknown
