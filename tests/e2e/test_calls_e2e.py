"""Whole calls: the real server, the real `twilio` client and the carrier emulator playing Twilio.

One batch of calls with different far ends runs concurrently (real time is the cost of an e2e test),
then each test checks one scenario's final state, transitions and events against the emulator's
ground truth: what it fired, what it broke on purpose, what the phone really heard.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.emulator import CallbackFaults, CallOptions, EchoSpec, Faults, Turn
from orchestrator.rig import LocalRig, rig_settings
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak, pytest.mark.slow]

LINES = (
    Turn(text="Hello, can you hear me?", answer_timeout_s=5.0, pause_s=0.5),
    Turn(text="Tell me about the weather.", answer_timeout_s=5.0, pause_s=0.5),
)
GREETING = "Hi, I repeat what you say."
# Each line starts before the model has finished repeating the previous one: partial double-talk.
# (Under double-talk all the time the meter has too few single-talk segments to flag; see the note.)
OVERLAPPING = tuple(
    Turn(text=t, wait_for_answer=False, pause_s=1.2)
    for t in ("One, two, three, four, five.", "Six, seven, eight, nine, ten.", "Eleven, twelve, thirteen.")
)
SCENARIOS: dict[str, tuple[str, CallOptions]] = {
    "normal": (
        "+15005550101",
        CallOptions(ring_s=0.3, turns=LINES, caller_start_s=2.2, faults=Faults(hangup_after_stream_s=9.0)),
    ),
    "busy": ("+15005550002", CallOptions(answer="busy", ring_s=0.3)),
    "no-answer": ("+15005550003", CallOptions(answer="no-answer", ring_s=0.5)),
    "hangup-mid-stream": (
        "+15005550102",
        CallOptions(
            ring_s=0.3,
            turns=(
                Turn(text="I am going to hang up in the middle of this sentence now.", wait_for_answer=False),
            ),
            caller_start_s=0.2,
            faults=Faults(hangup_after_stream_s=1.5),
        ),
    ),
    "shuffled-duplicated": (
        "+15005550103",
        CallOptions(
            ring_s=0.3,
            faults=Faults(
                hangup_after_stream_s=2.0,
                callbacks=CallbackFaults(shuffle=True, duplicate=("*",), retry=("completed",)),
            ),
        ),
    ),
    "bad-signature": (
        "+15005550104",
        CallOptions(
            ring_s=0.3,
            faults=Faults(
                hangup_after_stream_s=2.5,
                callbacks=CallbackFaults(bad_signature="completed", bad_signature_after_s=0.5),
            ),
        ),
    ),
    "lost-frames": (
        "+15005550105",
        CallOptions(
            ring_s=0.3,
            turns=(Turn(text="Counting one two three four.", wait_for_answer=False),),
            faults=Faults(lost_frames=(20, 21, 22, 60, 100), hangup_after_stream_s=3.0),
        ),
    ),
    "echo-path": (
        "+15005550106",
        CallOptions(
            ring_s=0.3,
            turns=LINES,
            caller_start_s=2.2,
            faults=Faults(echo=EchoSpec(delay_ms=150, loss_db=12), hangup_after_stream_s=9.0),
        ),
    ),
    # the caller talks over the model's replies (no waiting): double-talk, with and without an echo path
    "echo-doubletalk-noise": (
        "+15005550107",
        CallOptions(
            ring_s=0.3,
            turns=OVERLAPPING,
            caller_start_s=1.0,
            faults=Faults(
                echo=EchoSpec(delay_ms=300, loss_db=20), noise_dbfs=-55.0, hangup_after_stream_s=12.0
            ),
        ),
    ),
    # measurement fidelity (issue 12): a room, a far quiet echo, a loud noise floor; truth from the emulator
    "echo-room": (
        "+15005550109",
        CallOptions(
            ring_s=0.3,
            turns=LINES,
            caller_start_s=2.2,
            faults=Faults(
                echo=EchoSpec(delay_ms=60, loss_db=15, room=True, rt60_s=0.4, distance_m=1.0),
                noise_dbfs=-60.0,
                hangup_after_stream_s=9.0,
            ),
        ),
    ),
    "echo-far-quiet": (
        "+15005550110",
        CallOptions(
            ring_s=0.3,
            turns=LINES,
            caller_start_s=2.2,
            faults=Faults(
                echo=EchoSpec(delay_ms=300, loss_db=25), noise_dbfs=-60.0, hangup_after_stream_s=9.0
            ),
        ),
    ),
    "noise-40": (
        "+15005550111",
        CallOptions(
            ring_s=0.3,
            turns=LINES,
            caller_start_s=2.2,
            faults=Faults(noise_dbfs=-40.0, hangup_after_stream_s=9.0),
        ),
    ),
    "doubletalk-clean": (
        "+15005550108",
        CallOptions(
            ring_s=0.3,
            turns=OVERLAPPING,
            caller_start_s=1.0,
            faults=Faults(noise_dbfs=-55.0, hangup_after_stream_s=12.0),
        ),
    ),
}


async def _run_batch(workdir: Path) -> dict[str, tuple[dict[str, Any], Any]]:
    settings = rig_settings(
        workdir, backend="echo", echo_mode="turns", echo_greeting=GREETING, greeting="Hello there."
    )
    async with LocalRig(settings, workdir / "truth") as rig:
        rows = {name: await rig.place(opts, to=to, run="e2e") for name, (to, opts) in SCENARIOS.items()}
        truths = await asyncio.gather(
            *[rig.emulator.wait_call(r["call_sid"], timeout=60) for r in rows.values()]
        )
        # one analysis process takes the calls in turn: on a loaded box the first waited for can be
        # the last analysed, a minute later
        docs = [await rig.settled(r["id"], timeout_s=120) for r in rows.values()]
    return {name: (doc, truth) for name, doc, truth in zip(rows, docs, truths, strict=True)}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Any]]:
    return asyncio.run(_run_batch(tmp_path_factory.mktemp("e2e")))


def transitions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["from"], t["to"]) for t in doc["transitions"]]


def events(doc: dict[str, Any], source: str) -> list[dict[str, Any]]:
    return [e for e in doc["events"] if e["source"] == source]


def delivered(truth: Any, kind: str = "status") -> list[dict[str, Any]]:
    return [c for c in truth.callbacks if c["kind"] == kind and c.get("http_status") is not None]


# forward only: the stream's stop is in the event log, and the last move says the call streamed
ANSWERED = [
    ("queued", "ringing"),
    ("ringing", "in-progress"),
    ("in-progress", "streaming"),
    ("streaming", "completed"),
]


def test_normal_call_to_completion(batch: dict[str, Any]) -> None:
    doc, truth = batch["normal"]
    assert truth.status == "completed" and doc["call"]["state"] == "completed"
    assert transitions(doc) == ANSWERED
    # every status callback the emulator delivered is stored, in order, each accepted once
    stored = events(doc, "status_callback")
    assert [e["payload"]["SequenceNumber"] for e in stored] == [str(c["seq"]) for c in delivered(truth)]
    assert all(e["accepted"] for e in stored)
    checks = {c["criterion"]: c["status"] for c in doc["checks"] if c["decided_by"] == "auto"}
    for criterion in (
        "call_initiated",
        "answered_ivr_heard",
        "websocket_connected",
        "caller_hears_model",
        "model_hears_caller",
        "conversation_interactive",
        "audio_quality_ok",
        "no_latency_echo_issues",
    ):
        assert checks[criterion] == "pass", (criterion, doc["checks"])
    assert checks["tunnel_exposed"] == "unknown"  # offline: no tunnel exists to judge


def test_first_audio_and_response_latency_match_ground_truth(batch: dict[str, Any]) -> None:
    doc, truth = batch["normal"]
    stream = truth.stream
    truth_first = stream["first_heard_speech_onset"]["onset_ms"]
    # The metric counts from the server's receipt of `start` (DESIGN), the truth from the phone's stream
    # start: on a loaded box the start's transit alone is tens of ms. The server's own media clock offset
    # (phone clock -> server clock, from the least-delayed inbound frame) puts both on the phone's clock.
    to_phone_clock = -doc["metrics"]["inbound_media_offset_ms"]
    assert doc["metrics"]["first_audio_heard_ms"] + to_phone_clock == pytest.approx(truth_first, abs=5)
    heard = [h["onset_ms"] for h in stream["heard_speech"]]
    true_latency = []
    for seg in stream["caller_speech"]:
        after = [h for h in heard if h > seg["end_ms"]]
        true_latency.append(after[0] - seg["end_ms"])
    measured = [t[2] for t in doc["analysis"]["turns"]]
    assert len(measured) == len(true_latency) == 2
    assert measured == pytest.approx(true_latency, abs=10)


def test_busy(batch: dict[str, Any]) -> None:
    doc, truth = batch["busy"]
    assert truth.status == "busy" and doc["call"]["state"] == "busy"
    assert transitions(doc) == [("queued", "ringing"), ("ringing", "busy")]
    assert not events(doc, "media")
    checks = {c["criterion"]: c["status"] for c in doc["checks"]}
    assert checks["call_initiated"] == "pass" and checks["answered_ivr_heard"] == "fail"
    assert checks["caller_hears_model"] == "unknown"


def test_no_answer(batch: dict[str, Any]) -> None:
    doc, truth = batch["no-answer"]
    assert truth.status == "no-answer" and doc["call"]["state"] == "no-answer"
    assert transitions(doc) == [("queued", "ringing"), ("ringing", "no-answer")]
    completed = [e for e in events(doc, "status_callback") if e["type"] == "no-answer"]
    assert completed and completed[0]["payload"]["SipResponseCode"] == "487"


def test_hangup_mid_stream(batch: dict[str, Any]) -> None:
    doc, truth = batch["hangup-mid-stream"]
    assert truth.stream["ended"]["reason"] == "hangup"
    assert doc["call"]["state"] == "completed" and transitions(doc) == ANSWERED
    stop = [e for e in events(doc, "media") if e["type"] in ("stop", "ws_closed")]
    assert len(stop) == 1
    # the caller was cut off mid-sentence: the call lasted about as long as the fault said
    assert doc["metrics"]["call_duration_s"] == pytest.approx(1.5 + 1.2, abs=1.5)


def test_shuffled_and_duplicated_callbacks(batch: dict[str, Any]) -> None:
    doc, truth = batch["shuffled-duplicated"]
    assert doc["call"]["state"] == "completed"
    # out of order, a late `ringing` changes nothing: the call only ever moves forward
    rank = {"queued": 0, "ringing": 1, "in-progress": 2, "streaming": 3, "completed": 4}
    moves = transitions(doc)
    assert moves[-2:] == ANSWERED[-2:]  # answered (whichever callback came first), streamed, completed
    assert all(rank[b] > rank[a] for a, b in moves)
    sent = delivered(truth)
    stored = events(doc, "status_callback")
    assert len(stored) == len(sent)  # nothing lost, nothing invented
    extra = sum(1 for c in sent if c["delivery"] in ("duplicate", "retry"))
    assert extra >= 4
    assert sum(1 for e in stored if e["reason"] == "duplicate") == extra
    fired_order = sorted(sent, key=lambda c: c["seq"])
    assert [c["seq"] for c in sent] != [c["seq"] for c in fired_order]  # they really were shuffled


def test_bad_signature_callback_is_rejected_stored_and_harmless(batch: dict[str, Any]) -> None:
    doc, truth = batch["bad-signature"]
    forged = [c for c in truth.callbacks if c["delivery"] == "forged"]
    assert len(forged) == 1 and forged[0]["http_status"] == 403
    rejected = [e for e in events(doc, "status_callback") if e["reason"] == "bad signature"]
    assert len(rejected) == 1 and rejected[0]["accepted"] is False
    assert doc["call"]["state"] == "completed" and transitions(doc) == ANSWERED
    # the forged "completed" did not end the call: the real one did, after the stream
    ended = next(t for t in doc["transitions"] if t["to"] == "completed")
    assert ended["trigger"] == "status_callback:completed" and ended["at"] > rejected[0]["at"]


def test_lost_frames_counted_exactly(batch: dict[str, Any]) -> None:
    doc, truth = batch["lost-frames"]
    lost = truth.stream["frames_lost"]
    assert len(lost) == 5
    assert doc["metrics"]["lost_frames"] == 5
    assert doc["metrics"]["inbound_gap_ms_total"] == 5 * 20


def echo_evidence(doc: dict[str, Any], truth: Any) -> dict[str, Any]:
    m = doc["metrics"]
    return {
        "truth": truth.stream.get("echo"),
        **{
            k: m.get(k)
            for k in (
                "echo_detected",
                "echo_delay_ms",
                "echo_return_loss_db",
                "echo_path_z",
                "echo_confidence",
            )
        },
    }


def assert_echo_measured(
    doc: dict[str, Any], truth: Any, *, delay_ms: float = 1.0, loss_db: float = 1.0
) -> None:
    """The echo is flagged with its first arrival and its loss as the phone's own signals say they were
    (the emulator computes both from what it played and mixed, never with our meters)."""
    m, true = doc["metrics"], truth.stream["echo"]
    evidence = echo_evidence(doc, truth)
    assert m["echo_detected"] == 1, evidence
    assert m["echo_delay_ms"] == pytest.approx(true["direct_delay_ms"], abs=delay_ms), evidence
    assert m["echo_return_loss_db"] == pytest.approx(true["loss_db"], abs=loss_db), evidence


def test_echo_path_is_flagged_with_delay_and_loss(batch: dict[str, Any]) -> None:
    doc, truth = batch["echo-path"]
    injected = truth.options["faults"]["echo"]
    assert (injected["delay_ms"], injected["loss_db"]) == (150, 12)
    assert_echo_measured(doc, truth)
    checks = {c["criterion"]: c for c in doc["checks"] if c["decided_by"] == "auto"}
    assert checks["no_latency_echo_issues"]["status"] == "fail"
    assert "echo" in checks["no_latency_echo_issues"]["evidence"]


def test_echo_found_under_double_talk_and_noise(batch: dict[str, Any]) -> None:
    doc, truth = batch["echo-doubletalk-noise"]
    # the caller talks over most of it: single-talk seconds are few, the loss is read from them, to the
    # ~3 dB the echo meter states for double talk (rig runs under load: 0.6-2.6 dB high)
    assert_echo_measured(doc, truth, delay_ms=1.0, loss_db=3.0)


def test_echo_of_a_room_is_found_at_its_first_arrival(batch: dict[str, Any]) -> None:
    doc, truth = batch["echo-room"]
    assert truth.stream["echo"]["direct_delay_ms"] > truth.stream["echo"]["bulk_delay_ms"]  # sound travels
    assert_echo_measured(doc, truth)


def test_far_quiet_echo_is_found(batch: dict[str, Any]) -> None:
    doc, truth = batch["echo-far-quiet"]
    assert_echo_measured(doc, truth)


def test_first_audio_on_a_noisy_line_is_the_speech_not_the_noise(batch: dict[str, Any]) -> None:
    doc, truth = batch["noise-40"]
    m = doc["metrics"]
    truth_first = truth.stream["first_heard_speech_onset"]["onset_ms"]
    assert m["first_audio_heard_ms"] - m["inbound_media_offset_ms"] == pytest.approx(truth_first, abs=10)
    assert m["echo_detected"] == 0, echo_evidence(doc, truth)


def test_clean_calls_have_no_echo_flag(batch: dict[str, Any]) -> None:
    for name in ("normal", "lost-frames", "doubletalk-clean", "noise-40"):
        doc, truth = batch[name]
        assert doc["metrics"]["echo_detected"] == 0, (name, echo_evidence(doc, truth))


def test_recording_holds_both_channels(batch: dict[str, Any]) -> None:
    import wave

    doc, _ = batch["normal"]
    path = Path(doc["call"]["recording_path"])
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2, axis=0))
    assert rms[0] > 100 and rms[1] > 100  # the caller spoke (left) and the model spoke (right)
