"""What scripted calls measure, each part against a schedule the test builds itself: the emulator's step
truth (from signals), the product's double-talk meter (from segments), the echo backend's yield, and
DTMF batches keeping every digit's order and time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.backends.base import FRAME_SAMPLES
from bridge.backends.echo import EchoBackend, TurnEchoSession
from bridge.meters.overlap import double_talk
from bridge.meters.vad import Segment
from bridge.playout import PlayoutClock
from orchestrator.emulator.audio import RATE, SpeechSegment
from orchestrator.emulator.step_truth import overlap_truth, steps_truth
from orchestrator.web.dtmf import DtmfBatch


def _tone(n: int, amp: float = 6000.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * 300 * np.arange(n) / RATE)).astype(np.float32)


# -- the emulator's truth --------------------------------------------------------------------------------


def test_barge_in_truth_reads_the_caller_onset_and_the_heard_stop() -> None:
    voice = np.zeros(3 * RATE, np.float32)
    voice[8800:12000] = _tone(3200)  # the BargeIn's audio starts at 8000 with 800 samples of silence
    heard = [SpeechSegment(4000, 10000)]  # the model was heard until 10000
    log = [{"step": "barge_in", "index": 0, "start_ms": 0.0, "audio_start_ms": 1000.0, "end_ms": 1500.0}]
    (e,) = steps_truth(log, voice, heard)
    assert e["speech_onset_ms"] == pytest.approx(1100.0, abs=0.5)
    assert e["speech_end_ms"] == pytest.approx(1500.0, abs=0.5)
    assert e["over_model"] and e["model_speech_onset_ms"] == 500.0 and e["model_stop_ms"] == 1250.0
    assert e["stop_ms"] == pytest.approx(150.0, abs=0.5)


def test_barge_in_over_silence_has_no_stop() -> None:
    voice = np.zeros(RATE, np.float32)
    voice[1000:3000] = _tone(2000)
    log = [{"step": "barge_in", "index": 0, "start_ms": 0.0, "audio_start_ms": 125.0, "end_ms": 375.0}]
    (e,) = steps_truth(log, voice, [SpeechSegment(5000, 6000)])
    assert not e["over_model"] and e["stop_ms"] is None and e["model_stop_ms"] is None


def test_overlap_truth_counts_by_side() -> None:
    caller = [SpeechSegment(1000, 3000), SpeechSegment(9000, 10000)]
    heard = [SpeechSegment(2000, 5000), SpeechSegment(9500, 12000), SpeechSegment(20000, 21000)]
    got = overlap_truth(caller, heard)
    assert got == {
        "overlap_ms": (1000 + 500) / 8,
        "interruptions_by_caller": 0.0,
        "interruptions_by_model": 2.0,
    }
    got = overlap_truth([SpeechSegment(2500, 2600)], heard)
    assert got["interruptions_by_caller"] == 1.0 and got["overlap_ms"] == 100 / 8


# -- the product's meter ---------------------------------------------------------------------------------


def test_double_talk_meter() -> None:
    caller = [Segment(1.0, 2.0), Segment(3.2, 4.0), Segment(7.0, 8.0), Segment(10.5, 11.0)]
    model = [Segment(0.5, 1.25), Segment(3.0, 6.5), Segment(7.5, 9.0), Segment(10.0, 15.0)]
    dt = double_talk(caller, model)
    assert dt.interruptions_by_caller == 3  # at 1.0, 3.2 and 10.5
    assert dt.interruptions_by_model == 1  # at 7.5
    assert dt.overlap_ms == pytest.approx((0.25 + 0.8 + 0.5 + 0.5) * 1000)
    assert [round(b.stop_ms) for b in dt.barge_ins] == [250, 3300, 4500]
    m = dt.metrics()
    assert m["barge_ins"] == 3 and m["barge_in_unstopped"] == 2  # 3.3 s and 4.5 s are past 3 s
    assert m["barge_in_stop_ms"] == pytest.approx(250.0)


def test_double_talk_without_any() -> None:
    m = double_talk([Segment(0.0, 1.0)], [Segment(1.5, 2.0)]).metrics()
    assert m == {
        "overlap_ms": 0.0,
        "interruptions_by_caller": 0.0,
        "interruptions_by_model": 0.0,
        "barge_ins": 0.0,
        "barge_in_unstopped": 0.0,
    }


# -- the echo backend yields ----------------------------------------------------------------------------


def _frames(session: TurnEchoSession, frames: list[np.ndarray]) -> list[tuple[bool, bool]]:
    """(speech out, clear) per step."""

    async def go() -> list[tuple[bool, bool]]:
        out = []
        for f in frames:
            step = await session.process(f)
            out.append((bool(np.any(step.frames[0])), step.clear))
        return out

    return asyncio.run(go())


@pytest.mark.parametrize(("yield_ms", "frames_to_yield"), [(160.0, 2), (200.0, 3), (0.0, None)])
def test_turns_echo_yields_after_its_talk_over(yield_ms: float, frames_to_yield: int | None) -> None:
    greeting = np.full(FRAME_SAMPLES * 20, 0.1, np.float32)  # 1.6 s of its own speech
    session = TurnEchoSession(greeting, yield_ms=yield_ms)
    quiet, loud = np.zeros(FRAME_SAMPLES, np.float32), np.full(FRAME_SAMPLES, 0.05, np.float32)
    got = _frames(session, [quiet] * 3 + [loud] * 6 + [quiet] * 3)
    assert all(speech for speech, _ in got[:3])
    if frames_to_yield is None:
        assert not any(clear for _, clear in got) and all(s for s, _ in got)
        return
    at = 3 + frames_to_yield - 1  # the step whose caller frame completed the talk-over
    assert [c for _, c in got] == [i == at for i in range(len(got))]
    assert all(s for s, _ in got[:at]) and not any(s for s, _ in got[at:])
    assert session.yields == 1


def test_echo_backend_refuses_a_negative_yield() -> None:
    with pytest.raises(ValueError, match="yield"):
        EchoBackend(mode="turns", yield_ms=-1)


# -- DTMF batches --------------------------------------------------------------------------------------


def test_dtmf_batch_keeps_order_and_times_since_the_origin() -> None:
    batch = DtmfBatch(origin=100.0)
    for i, d in enumerate("1#9*0"):
        batch.add(d, "inbound_track", 100.5 + 0.25 * i)
    assert not batch.due(101.4) and batch.due(101.5)
    payload = batch.take()
    assert payload == {
        "digits": "1#9*0",
        "count": 5,
        "track": "inbound_track",
        "at_ms": [500.0, 750.0, 1000.0, 1250.0, 1500.0],
    }
    assert batch.take() is None


def test_dtmf_flood_keeps_the_first_digits_their_times_and_the_count() -> None:
    batch = DtmfBatch(max_digits=3, origin=0.0)
    for i in range(10):
        batch.add(str(i), "inbound_track", i * 0.001)
    payload = batch.take()
    assert payload is not None
    assert payload["digits"] == "012" and payload["at_ms"] == [0.0, 1.0, 2.0] and payload["dropped"] == 7


# -- the playout clock after a clear ------------------------------------------------------------------


def test_an_echo_the_clear_may_have_sent_back_does_not_pull_a_measured_run_early() -> None:
    clock = PlayoutClock()
    for k in range(10):  # 200 ms of audio sent at once, a mark after every chunk
        clock.on_send(0.0, 160)
        clock.mark_sent(f"m{k}", 0.0)
    # the phone plays 12 ms later than "next door": the first echoes say so
    for k in range(3):
        clock.on_mark_echo(f"m{k}", 0.02 * (k + 1) + 0.012)
    assert clock.delay == pytest.approx(0.012)
    clock.on_clear(0.081)  # m3 (audio to 0.08 raw, 0.092 at the phone) is still pending
    echo = clock.on_mark_echo("m3", 0.083)  # sent back by the clear, before its audio finished playing
    assert echo is not None and echo.cleared and not echo.flushed
    assert clock.delay == pytest.approx(0.012)  # not pulled to 3 ms
    assert clock.chunks[0].playout_start == pytest.approx(0.012)


def test_an_echo_after_a_clear_still_places_a_run_nothing_else_measured() -> None:
    clock = PlayoutClock()
    clock.on_send(0.0, 160)
    clock.mark_sent("a", 0.0)
    clock.on_clear(0.03)
    echo = clock.on_mark_echo("a", 0.035)
    assert echo is not None and echo.cleared and clock.delay == pytest.approx(0.015)
