"""Per-frame trace and replay (issue 19): a call's media stream kept frame by frame, and the same caller
fed again, on its recorded timing, to a backend, as a new call linked to the original.

Truth: the trace against what the emulator's phone sent (its own record: every frame's samples and
which frames it lost), never the product's reading of it; the replays against the original call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bridge.g711 import ulaw_encode
from bridge.trace import read_trace, trace_path
from orchestrator.bootstrap import open_service
from orchestrator.cli import cli
from orchestrator.emulator import CallOptions, Faults, Turn
from orchestrator.replay import load_replay, run_replay
from orchestrator.rig import LocalRig, rig_settings
from tests.e2e.conftest import needs_espeak

pytestmark = [needs_espeak, pytest.mark.slow]

TURNS = (
    Turn(text="Hello, can you hear me?", answer_timeout_s=5.0, pause_s=0.4),
    Turn(text="Tell me about the weather.", answer_timeout_s=5.0, pause_s=0.4),
)
FAULTS = Faults(loss_rate=0.03, jitter_ms=10.0, seed=4, hangup_after_stream_s=9.0)
# what the caller did, the same on any replay: content on the media clock
INBOUND = ("inbound_speech_s", "inbound_rms_dbfs", "inbound_gap_ms_total", "inbound_gap_count", "lost_frames")


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("replay")
    db = work / "calls.db"

    async def go() -> dict[str, Any]:
        settings = rig_settings(
            work / "original", db=db, backend="echo", echo_mode="turns", echo_greeting="Hi, I repeat you."
        )
        async with LocalRig(settings, work / "original" / "truth") as rig:
            row = await rig.place(CallOptions(ring_s=0.2, turns=TURNS, caller_start_s=1.5, faults=FAULTS))
            truth = await rig.emulator.wait_call(row["call_sid"], timeout=40)
            original = await rig.settled(row["id"], timeout_s=60)
            sent = rig.emulator.calls[row["call_sid"]].sent_pcm
        replays = {}
        for name, backend in (("echo", None), ("echo-again", None), ("delay", "echo")):
            service = open_service(db, create=False)
            try:
                source = load_replay(service, original["call"]["id"])
            finally:
                service.store.close()
            if name == "delay":  # another backend setting: the echo backend in delay mode
                source = type(source)(source.doc, source.trace, {**source.config, "echo_mode": "delay"})
            replays[name] = await run_replay(
                db, source, backend=backend, run=f"replay-{name}", workdir=work / name
            )
        return {"original": original, "truth": truth, "sent": sent, "replays": replays, "db": db}

    return asyncio.run(go())


def test_the_trace_holds_every_frame_the_phone_sent_and_none_it_lost(calls: dict[str, Any]) -> None:
    original, truth, sent = calls["original"], calls["truth"], calls["sent"]
    trace = read_trace(trace_path(Path(original["call"]["recording_path"])))
    lost = {f["timestamp_ms"] for f in truth.stream["frames_lost"]}
    assert lost, "the seeded 3 % loss lost frames on this call"
    frames = list(trace.frames())
    got = {ts: payload for _, ts, payload in frames}
    assert not lost & set(got)  # a lost frame never arrived
    frames_pcm = np.asarray(sent).reshape(-1, 160)  # the phone's whole line, frame by frame
    phone = {k * 20: bytes(ulaw_encode(pcm)) for k, pcm in enumerate(frames_pcm) if k * 20 not in lost}
    common = sorted(set(phone) & set(got))
    assert len(common) >= len(phone) - 2  # all but the frame in flight at the hang-up
    assert all(got[ts] == phone[ts] for ts in common)
    arrivals = [at for at, _, _ in frames]
    assert arrivals == sorted(arrivals) and trace.sends.shape[0] > 0 and trace.mark_names
    assert trace.ended_s >= arrivals[-1]


def test_a_replay_through_the_same_backend_hears_the_same_caller(calls: dict[str, Any]) -> None:
    original, replay = calls["original"], calls["replays"]["echo"]
    a, b = original["metrics"], replay["metrics"]
    for key in INBOUND:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # the line's timing is replayed too: the same delays over the least-delayed frame, give or take the
    # event loop's scheduling here on both runs
    assert abs(b["inbound_jitter_ms"] - a["inbound_jitter_ms"]) <= 3.0
    # the backend's answers, heard at the phone: within the fidelity tolerances of a re-run
    assert b["turns"] == a["turns"] >= 1
    assert abs(b["response_latency_ms_p50"] - a["response_latency_ms_p50"]) <= 40.0
    assert abs(b["first_audio_heard_ms"] - a["first_audio_heard_ms"]) <= 40.0
    assert replay["call"]["run"] == "replay-echo" and replay["call"]["backend"] == "echo"


def test_the_replays_are_linked_both_ways(calls: dict[str, Any]) -> None:
    service = open_service(calls["db"], create=False)
    try:
        original = service.document(calls["original"]["call"]["id"])
        linked = {
            e["payload"]["call_id"]
            for e in original["events"]
            if e["type"] == "replayed_as" and e["accepted"]
        }
        for replay in calls["replays"].values():
            doc = service.document(replay["call"]["id"])
            back = [e["payload"] for e in doc["events"] if e["type"] == "replay_of" and e["accepted"]]
            assert [e for e in doc["events"] if e["type"] == "media_config" and e["accepted"]]
            assert back and back[0]["call_id"] == original["call"]["id"]
            assert replay["call"]["id"] in linked
    finally:
        service.store.close()


def test_the_echo_backend_twice_sends_the_same_audio(calls: dict[str, Any]) -> None:
    one, two = (
        read_trace(trace_path(Path(calls["replays"][n]["call"]["recording_path"])))
        for n in ("echo", "echo-again")
    )
    n = min(one.sent_codes.size, two.sent_codes.size) - 2 * 1920  # the end may cut a frame apart
    assert n > 8000 * 3
    assert np.array_equal(one.sent_codes[:n], two.sent_codes[:n])


def test_another_setting_is_a_new_answer_to_the_same_caller(calls: dict[str, Any]) -> None:
    original, delay = calls["original"], calls["replays"]["delay"]
    for key in INBOUND:
        assert delay["metrics"][key] == pytest.approx(original["metrics"][key], abs=1e-6), key
    events = [e for e in delay["events"] if e["type"] == "media_config"]
    assert events and events[0]["payload"]["echo_mode"] == "delay"
    assert delay["metrics"].get("turns", 0) != original["metrics"]["turns"] or delay["metrics"][
        "outbound_speech_s"
    ] != pytest.approx(original["metrics"]["outbound_speech_s"], abs=0.2)


def test_replay_says_in_one_line_why_it_cannot(calls: dict[str, Any], tmp_path: Path) -> None:
    db = str(calls["db"])
    result = CliRunner().invoke(cli, ["replay", "c_ffffffffffffffff", "--db", db])
    assert (
        result.exit_code == 2
        and result.output.count("\n") == 1
        and "orchestrator calls --db" in result.output
    )
    # a call whose trace is gone
    path = trace_path(Path(calls["replays"]["delay"]["call"]["recording_path"]))
    path.unlink()
    result = CliRunner().invoke(cli, ["replay", calls["replays"]["delay"]["call"]["id"], "--db", db])
    assert result.exit_code == 2 and "MEDIA_TRACE=on" in result.output and result.output.count("\n") == 1
