"""Echo cancellation in whole calls (issue 17): the model hears the caller, not its own voice.

The echo backend in turns mode repeats each utterance; with a 120 ms / 10 dB echo path on the line and
AEC=on, what the model heard (the recording's `.model-in.wav`) is judged against the emulator's own
parts of the line (`orchestrator.emulator.aec_truth`: the echo, the clean caller), never against the
canceller's own estimates; a clean call is checked not to be harmed: first audio and response latency
as in the fidelity tests, and the caller's level and waveform kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.recorder import model_input_path
from orchestrator.emulator import CallOptions, EchoSpec, Faults, Turn
from orchestrator.emulator.aec_truth import aec_truth_files
from orchestrator.rig import LocalRig, rig_settings
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak, pytest.mark.slow]

LINES = (
    Turn(text="Hello, can you hear me?", answer_timeout_s=5.0, pause_s=0.5),
    Turn(text="Tell me about the weather today.", answer_timeout_s=5.0, pause_s=0.5),
    Turn(text="Thank you, that is all.", answer_timeout_s=5.0, pause_s=0.5),
)
SCENARIOS = {
    "echo": ("+15005550121", Faults(echo=EchoSpec(delay_ms=120, loss_db=10), hangup_after_stream_s=14.0)),
    "clean": ("+15005550122", Faults(noise_dbfs=-55.0, hangup_after_stream_s=14.0)),
}


async def _run(workdir: Path) -> dict[str, tuple[dict[str, Any], Any, dict[str, Any]]]:
    settings = rig_settings(
        workdir, backend="echo", echo_mode="turns", echo_greeting="Hi, I repeat what you say.", aec="on"
    )
    out = {}
    async with LocalRig(settings, workdir / "truth") as rig:
        rows = {
            name: await rig.place(CallOptions(ring_s=0.3, turns=LINES, caller_start_s=2.2, faults=f), to=to)
            for name, (to, f) in SCENARIOS.items()
        }
        truths = await asyncio.gather(
            *[rig.emulator.wait_call(r["call_sid"], timeout=60) for r in rows.values()]
        )
        for (name, row), truth in zip(rows.items(), truths, strict=True):
            doc = await rig.settled(row["id"], timeout_s=120)
            heard = model_input_path(Path(doc["call"]["recording_path"]))
            aec = aec_truth_files(workdir / "truth", row["call_sid"], heard)  # from 2 s on: converged
            whole = aec_truth_files(workdir / "truth", row["call_sid"], heard, after_s=0.0)
            out[name] = (doc, truth, {**aec, "erle_whole_call_db": whole["erle_db"]})
    return out


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Any, dict[str, Any]]]:
    return asyncio.run(_run(tmp_path_factory.mktemp("aec")))


def test_the_model_does_not_hear_itself(calls: dict[str, Any]) -> None:
    doc, _, aec = calls["echo"]
    m = doc["metrics"]
    assert m["echo_detected"] == 1  # the line's echo is measured as before: what the phone sent back
    assert m["residual_echo_detected"] == 0, (m.get("residual_echo_return_loss_db"), aec)
    assert aec["erle_windows"] >= 4, aec
    assert aec["erle_db"] >= ERLE_MIN_DB, aec
    # the product's own reading (median over the whole call's single-talk windows, from the line and the
    # model's input alone) agrees with the truth's over the same span
    assert m["aec_erle_db"] == pytest.approx(aec["erle_whole_call_db"], abs=4.0), (m["aec_erle_db"], aec)


def test_the_caller_is_kept(calls: dict[str, Any]) -> None:
    for name in ("echo", "clean"):
        _, _, aec = calls[name]
        assert aec["caller_talk_s"] >= 1.0, (name, aec)
        assert abs(aec["caller_level_change_db"]) <= 1.0, (name, aec)
        assert aec["caller_sdr_db"] >= 20.0, (name, aec)


def test_a_clean_call_is_not_harmed(calls: dict[str, Any]) -> None:
    doc, truth, aec = calls["clean"]
    m = doc["metrics"]
    assert m["echo_detected"] == 0 and m["residual_echo_detected"] == 0
    stream = truth.stream
    to_phone_clock = -m["inbound_media_offset_ms"]
    assert m["first_audio_heard_ms"] + to_phone_clock == pytest.approx(
        stream["first_heard_speech_onset"]["onset_ms"], abs=10
    )
    heard = [h["onset_ms"] for h in stream["heard_speech"]]
    true_latency = [
        next(h for h in heard if h > seg["end_ms"]) - seg["end_ms"]
        for seg in stream["caller_speech"]
        if any(h > seg["end_ms"] for h in heard)
    ]
    measured = [t[2] for t in doc["analysis"]["turns"]]
    assert len(measured) == len(true_latency) >= 2
    assert measured == pytest.approx(true_latency, abs=20)
    assert aec["caller_sdr_db"] >= 30.0, aec  # μ-law alone allows ~37 dB


ERLE_MIN_DB = 25.0  # issue 17's figure; the rig measured 34.4 dB (4 runs alike, 2026-12-03)
