"""Scripted caller steps through whole calls on the rig, each against the emulator's own truth.

The rig runs the echo backend in turns mode with a greeting and a yield (ECHO_YIELD_MS): it stops its
own speech when the caller talks over it, and the bridge sends Twilio a `clear`. Two short calls run at
once: one barges in on the greeting; one waits for it, speaks, presses keys, speaks again and hangs up.
The truth is what the emulator's phone did and heard (its step log, its own speech finder on its own
signals); the figures are the product's (VAD, playout clock, stored events).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator import CallOptions, Faults
from orchestrator.emulator.steps import BargeIn, Dtmf, Hangup, Say, Silence, WaitForReply
from orchestrator.rig import LocalRig, rig_settings
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak, pytest.mark.slow]

GREETING = "Hello, you are talking to a parrot that repeats whatever you say to it, word for word."
YIELD_MS = 240.0

CALLS: dict[str, tuple[str, CallOptions]] = {
    "barge-in": (
        "+15005550201",
        CallOptions(
            ring_s=0.3,
            caller_start_s=0.0,
            steps=(
                BargeIn(after_s=0.8, text="Wait, stop, I have a question.", timeout_s=6.0),
                WaitForReply(timeout_s=6.0),
                Hangup(),
            ),
            faults=Faults(hangup_after_stream_s=14.0),
        ),
    ),
    "script": (
        "+15005550202",
        CallOptions(
            ring_s=0.3,
            caller_start_s=0.0,
            steps=(
                WaitForReply(timeout_s=10.0),
                Say(text="Can you hear me?"),
                WaitForReply(timeout_s=5.0),
                Dtmf("1#9", gap_s=0.25),
                Silence(0.4),
                Say(text="Goodbye."),
                Hangup(),
            ),
            faults=Faults(hangup_after_stream_s=20.0),
        ),
    ),
}


async def _run(workdir: Path) -> dict[str, tuple[dict[str, Any], Any]]:
    settings = rig_settings(
        workdir,
        backend="echo",
        echo_mode="turns",
        echo_greeting=GREETING,
        echo_yield_ms=YIELD_MS,
        greeting="Hi.",
    )
    async with LocalRig(settings, workdir / "truth") as rig:
        rows = {name: await rig.place(opts, to=to, run="steps") for name, (to, opts) in CALLS.items()}
        truths = await asyncio.gather(
            *[rig.emulator.wait_call(r["call_sid"], timeout=60) for r in rows.values()]
        )
        docs = [await rig.settled(r["id"], timeout_s=120) for r in rows.values()]
    return {name: (doc, truth) for name, doc, truth in zip(rows, docs, truths, strict=True)}


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Any]]:
    return asyncio.run(_run(tmp_path_factory.mktemp("steps")))


def _steps(truth: Any) -> list[dict[str, Any]]:
    return truth.stream["steps"]


def _to_phone_ms(doc: dict[str, Any], local_s: float) -> float:
    """A time on the server's clock (s since `start` received) on the phone's (ms since stream start)."""
    return local_s * 1000.0 - doc["metrics"]["inbound_media_offset_ms"]


def test_a_hangup_step_ends_the_call_there(calls: dict[str, Any]) -> None:
    for name in CALLS:
        doc, truth = calls[name]
        assert truth.stream["ended"]["reason"] == "caller-done", name
        hangup = _steps(truth)[-1]
        assert hangup["step"] == "hangup"
        # the phone sent `stop` at the hang-up's tick (the frame in capture leaves first); `ended` is stamped
        # later, once the socket has closed, which a loaded server can take a few hundred ms to answer
        assert truth.stream["stop_sent"]["ms"] == pytest.approx(hangup["start_ms"], abs=60)
        assert truth.stream["ended"]["ms"] >= truth.stream["stop_sent"]["ms"]
        assert doc["call"]["state"] == "completed"


def test_barge_in_stop_time_within_20_ms_of_the_truth(calls: dict[str, Any]) -> None:
    doc, truth = calls["barge-in"]
    barge = _steps(truth)[0]
    assert barge["step"] == "barge_in" and not barge["timed_out"]
    # the caller spoke after_s after the phone began hearing the greeting
    assert barge["audio_start_ms"] == pytest.approx(barge["model_onset_ms"] + 800.0, abs=0.2)
    assert barge["over_model"], barge
    assert truth.stream["clears"], "the backend yielded, so the bridge sent a clear"
    # the model stopped after YIELD_MS of talk-over plus the bridge's pipeline, well before its greeting's end
    assert YIELD_MS <= barge["stop_ms"] <= YIELD_MS + 400.0, barge
    m = doc["metrics"]
    assert m["barge_ins"] == 1 and m["barge_in_unstopped"] == 0
    assert m["barge_in_stop_ms"] == pytest.approx(barge["stop_ms"], abs=20.0)
    assert m["interruptions_by_caller"] == truth.stream["overlap"]["interruptions_by_caller"] == 1


def test_overlap_by_side_matches_the_truth(calls: dict[str, Any]) -> None:
    for name in CALLS:
        doc, truth = calls[name]
        true = truth.stream["overlap"]
        m = doc["metrics"]
        assert m["overlap_ms"] == pytest.approx(true["overlap_ms"], abs=30.0), name
        assert m["interruptions_by_model"] == true["interruptions_by_model"], name
        assert m["interruptions_by_caller"] == true["interruptions_by_caller"], name
    assert calls["script"][1].stream["overlap"]["overlap_ms"] == 0.0  # it waited its turns


def test_say_and_wait_steps_against_the_truth(calls: dict[str, Any]) -> None:
    doc, truth = calls["script"]
    wait, say, reply, dtmf, silence, bye, _ = _steps(truth)
    assert dtmf["step"] == "dtmf" and dtmf["end_ms"] == silence["start_ms"]
    assert wait["reply_heard"] and not wait["timed_out"]  # the greeting was heard to its end
    greeting = truth.stream["heard_speech"][0]
    assert say["audio_start_ms"] == wait["end_ms"] > greeting["end_ms"]
    assert reply["reply_heard"] and not reply["timed_out"]  # the parrot's answer
    assert silence["end_ms"] - silence["start_ms"] == pytest.approx(400.0, abs=0.2)
    assert bye["start_ms"] == silence["end_ms"]
    # the product heard each Say where the caller's voice really started and ended
    caller = [(_to_phone_ms(doc, a), _to_phone_ms(doc, b)) for a, b in doc["analysis"]["inbound_segments"]]
    assert len(caller) == 2
    for (onset, end), step in zip(caller, (say, bye), strict=True):
        assert onset == pytest.approx(step["speech_onset_ms"], abs=10.0)
        assert end == pytest.approx(step["speech_end_ms"], abs=15.0)
    assert (
        doc["metrics"]["turns"] == 1
    )  # the parrot repeated "Can you hear me?" (the call ended on "Goodbye.")


def test_dtmf_digits_stored_in_order_at_their_times(calls: dict[str, Any]) -> None:
    doc, truth = calls["script"]
    sent = truth.stream["dtmf_sent"]
    assert [d["digit"] for d in sent] == ["1", "#", "9"]
    dtmf_step = _steps(truth)[3]
    assert [d["at_ms"] for d in dtmf_step["digits"]] == [d["at_ms"] for d in sent]
    # digit i at the first tick at or after i * 250 ms: 0, 260, 500 ms (no drift from rounding to ticks)
    assert [d["at_ms"] - sent[0]["at_ms"] for d in sent] == [0.0, 260.0, 500.0]
    rows = [e for e in doc["events"] if e["source"] == "media" and e["type"] == "dtmf"]
    assert rows and all(e["accepted"] for e in rows)
    assert "".join(e["payload"]["digits"] for e in rows) == "1#9"
    at_ms = [t for e in rows for t in e["payload"]["at_ms"]]
    offset = doc["metrics"]["inbound_media_offset_ms"]
    for got, want in zip(at_ms, sent, strict=True):
        assert got - offset == pytest.approx(want["at_ms"], abs=20.0)
    assert calls["barge-in"][1].stream["dtmf_sent"] == []
