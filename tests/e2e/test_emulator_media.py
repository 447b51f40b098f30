"""The emulator's media stream against the stand-in server: real-time pace, Twilio's outbound buffer (marks
after playout, clear), lost and jittered frames, the echo path, scripted turns, a hang-up fault."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bridge.g711 import ulaw_decode
from bridge.protocol import Mark, Media, Start, Stop
from orchestrator.emulator import CallOptions, EchoSpec, Faults, Turn
from orchestrator.emulator.audio import write_wav
from tests.e2e import test_emulator_calls as base
from tests.e2e.test_emulator_calls import Reply, create, tone, twiml

rig = base.rig  # the same fixture: emulator + stand-in server + twilio client

TO = "+15551234567"


async def play(
    rig: Any, reply: Reply, options: CallOptions | None = None, say: str = "Hi"
) -> tuple[Any, Any, Any]:
    server, emu, client = rig
    server.reply = reply
    if options is not None:
        emu.set_number(TO, options)
    call = await create(client, TO, twiml(say))
    truth = await emu.wait_call(call.sid, timeout=20)
    return server, truth, emu.calls[call.sid]


def inbound_timeline(frames: list[Media]) -> np.ndarray:
    """What the server received, placed by media.timestamp (lost frames stay silent)."""
    end = max(f.timestamp_ms for f in frames) * 8 + 160
    out = np.zeros(end, dtype=np.int16)
    for f in frames:
        out[f.timestamp_ms * 8 : f.timestamp_ms * 8 + 160] = ulaw_decode(f.payload)
    return out


async def test_pace_numbering_and_mark_after_playout(rig: Any) -> None:
    server, truth, call = await play(rig, Reply(audio=tone(0.6), mark="reply-end", close_after_s=1.5))
    frames = server.media_frames()
    assert [f.chunk for f in frames] == list(range(1, len(frames) + 1))
    assert [f.timestamp_ms for f in frames] == [20 * i for i in range(len(frames))]
    seqs = [m.sequence_number for _, m in server.inbound if hasattr(m, "sequence_number")]
    assert seqs == list(range(1, len(seqs) + 1))  # start is 1; media and mark echoes share the count
    # real-time pace: frames cover about the time they took to arrive (generous bounds)
    t_start = next(t for t, m in server.inbound if isinstance(m, Start))
    took = server.inbound[-1][0] - t_start
    assert 0.5 * took <= len(frames) * 0.02 <= 2.0 * took + 0.1
    # the server closed the socket: at most the frame in flight then was written but not read
    assert truth.stream["frames_sent"] - len(frames) in (0, 1) and truth.stream["frames_lost"] == []

    # the mark came back only after its 0.6 s of audio had played
    echoed = server.echoed("reply-end")
    assert echoed is not None and echoed - server.marks_sent["reply-end"] >= 0.5
    (mark,) = truth.stream["marks"]
    assert mark["flushed"] is False and mark["echoed_ms"] - mark["received_ms"] >= 580
    # what the phone heard: the 0.6 s tone, once, near the stream's start, on the phone's clock
    (heard,) = truth.stream["heard_speech"]
    assert heard["onset_ms"] < 200 and abs((heard["end_ms"] - heard["onset_ms"]) - 600) <= 20
    assert (
        truth.stream["first_heard_speech_onset"] == heard
        and truth.stream["first_heard_onset_ms"] == heard["onset_ms"]
    )
    assert abs(heard["onset_mono"] - (truth.stream["start_sent"]["mono"] + heard["onset_ms"] / 1000)) < 1e-6
    assert len(call.heard_pcm) == 160 * truth.stream["frames"]
    assert truth.files["heard_wav"].endswith(".heard.wav") and truth.files["ground_truth"].endswith(".json")


async def test_mark_with_nothing_queued_is_echoed_at_once(rig: Any) -> None:
    server, truth, _ = await play(rig, Reply(audio=None, mark="empty", close_after_s=0.5))
    echoed = server.echoed("empty")
    assert echoed is not None and echoed - server.marks_sent["empty"] < 0.3
    assert truth.stream["heard_speech"] == []


async def test_clear_drops_the_queue_and_echoes_pending_marks(rig: Any) -> None:
    server, truth, _ = await play(
        rig, Reply(audio=tone(3.0), mark="long", clear_after_s=0.4, close_after_s=1.2)
    )
    echoed = server.echoed("long")
    assert echoed is not None and echoed - server.marks_sent["long"] < 1.5  # long before 3 s of audio played
    assert echoed >= server.marks_sent["<clear>"]
    (mark,) = truth.stream["marks"]
    assert mark["flushed"] is True and truth.stream["clears"]
    (heard,) = truth.stream["heard_speech"]
    assert 250 <= heard["end_ms"] - heard["onset_ms"] <= 900  # cut by the clear, not 3000


async def test_lost_and_jittered_frames_and_hangup_fault(rig: Any) -> None:
    faults = Faults(lost_frames=(5, 6, 7), loss_rate=0.05, jitter_ms=15, seed=3, hangup_after_stream_s=1.0)
    server, truth, _ = await play(rig, Reply(close_after_s=None), CallOptions(ring_s=0.1, faults=faults))
    frames = server.media_frames()
    assert [f.chunk for f in frames] == list(range(1, len(frames) + 1))  # chunk never jumps
    stamps = [f.timestamp_ms for f in frames]
    assert stamps == sorted(stamps) and stamps[4] - stamps[3] == 80  # frames 5-7 missing: a 60 ms hole
    expected_all = set(range(0, 20 * truth.stream["frames"], 20))
    missing = sorted(expected_all - set(stamps))
    lost = truth.stream["frames_lost"]
    assert missing == [e["timestamp_ms"] for e in lost] and {5, 6, 7} <= {e["frame"] for e in lost}
    assert len(lost) > 3  # the random 5 % took some too
    # hang-up at 1.0 s of stream: stop sent, call completed
    assert truth.stream["ended"]["reason"] == "hangup" and truth.stream["frames"] == 50
    assert isinstance(server.inbound[-1][1], Stop) and truth.status == "completed"


async def test_echo_path_feeds_what_was_heard_back_into_the_microphone(rig: Any) -> None:
    burst = (np.random.default_rng(1).standard_normal(4000) * 3000).astype(np.int16)  # 0.5 s, -21 dBFS
    faults = Faults(echo=EchoSpec(delay_ms=100, loss_db=6))
    server, truth, call = await play(
        rig, Reply(audio=burst, close_after_s=1.2), CallOptions(ring_s=0.1, faults=faults)
    )
    sent = inbound_timeline(server.media_frames()).astype(np.float64)
    heard = call.heard_pcm.astype(np.float64)
    n = min(len(sent), len(heard))
    xcorr = [float(np.dot(heard[: n - lag], sent[lag:n])) for lag in range(0, 2000)]
    lag = int(np.argmax(xcorr))
    assert abs(lag - 800) <= 2  # 100 ms at 8 kHz, by inbound timestamps
    seg = slice(lag + 400, lag + 3600)
    loss = 20 * np.log10(np.sqrt(np.mean(heard[400:3600] ** 2)) / np.sqrt(np.mean(sent[seg] ** 2)))
    assert abs(loss - 6.0) < 1.5
    assert truth.options["faults"]["echo"] == {
        "delay_ms": 100,
        "loss_db": 6,
        "room": False,
        "rt60_s": 0.25,
        "distance_m": 0.5,
    }


async def test_turns_wait_for_the_answer(rig: Any, tmp_path: Any) -> None:
    wav = tmp_path / "second.wav"
    write_wav(wav, tone(0.4, freq=300))
    turns = (
        Turn(text="hello there", answer_timeout_s=4.0, pause_s=0.2),
        Turn(wav=str(wav), wait_for_answer=False),
    )
    options = CallOptions(ring_s=0.1, turns=turns, caller_start_s=0.1, hangup_after_turns=True)
    started = time.monotonic()
    server, truth, _ = await play(rig, Reply(audio=tone(0.5), delay_s=1.6, close_after_s=None), options)
    assert time.monotonic() - started < 15
    first, second = truth.stream["turns"]
    (answer,) = truth.stream["heard_speech"]
    assert first["end_ms"] <= answer["onset_ms"]  # the model answered after the first turn...
    assert second["start_ms"] >= answer["end_ms"] + 200  # ...and the caller waited for it to finish
    assert len(truth.stream["caller_speech"]) == 2 and truth.stream["ended"]["reason"] == "caller-done"
    # the caller's speech reached the server where the ground truth says it was sent
    sent = inbound_timeline(server.media_frames()).astype(np.float64)
    a = int(truth.stream["caller_speech"][0]["onset_ms"] * 8)
    assert np.sqrt(np.mean(sent[a : a + 800] ** 2)) > 500  # above -36 dBFS where the onset is
    assert not sent[: int(first["start_ms"] * 8)].any()  # digital silence before the caller spoke
    assert any(isinstance(m, Mark) for _, m in server.inbound)
