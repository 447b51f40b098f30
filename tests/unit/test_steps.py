"""The scripted caller's step player, fed frame by frame with a made-up heard-speech schedule (no event loop).

Truth here is the schedule the test itself builds: where it put the model's speech and what audio each
step carries (a tone of known length), against where the player put the caller's samples and keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from orchestrator.emulator.audio import FRAME, RATE
from orchestrator.emulator.calls import CallOptions, _options_json
from orchestrator.emulator.step_player import StepPlayer
from orchestrator.emulator.steps import BargeIn, Dtmf, Hangup, Say, Silence, Step, WaitForReply, check_step


def tone(n: int, amp: float = 8000.0) -> np.ndarray:
    pcm = (amp * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.int16)
    pcm[pcm == 0] = 1  # never a zero sample: the test finds the tone by nonzero samples
    return pcm


def run(
    steps: list[tuple[Step, Any]],
    frames: int,
    heard: tuple[int, int] | None = None,
    start_after_s: float = 0.0,
) -> tuple[np.ndarray, StepPlayer, list[tuple[str, int, int]]]:
    """Play `frames` frames; the phone 'hears' speech with onset heard[0] (known 50 ms later, as the
    detector knows it) until heard[1] + 300 ms (the detector's closing hangover). Returns the mic
    signal, the player, and each digit with (frame index, position)."""
    player = StepPlayer(steps, start_after_s)
    mic, keys = [], []
    for k in range(frames):
        end = (k + 1) * FRAME
        onset = None
        if heard is not None and heard[0] + 400 <= end and end < heard[1] + 2400:
            onset = heard[0]
        mic.append(player.next_frame(onset))
        keys += [(d, k, pos) for d, pos in player.take_dtmf()]
    return np.concatenate(mic), player, keys


def test_say_then_silence_then_say_lands_to_the_sample() -> None:
    a, b = tone(1000), tone(333)
    mic, player, _ = run(
        [(Say(text="a"), a), (Silence(0.1), None), (Say(text="b"), b)], 20, start_after_s=0.05
    )
    loud = np.flatnonzero(mic)
    assert loud[0] == 400 and loud[-1] == 400 + 1000 + 800 + 333 - 1
    assert np.array_equal(mic[400:1400], a) and np.array_equal(mic[2200:2533], b)
    assert [(e["step"], e["start_ms"], e["end_ms"]) for e in player.log] == [
        ("say", 50.0, 175.0),
        ("silence", 175.0, 275.0),
        ("say", 275.0, 275.0 + 333 / 8),
    ]
    assert player.done and not player.hung_up


def test_wait_for_reply_waits_for_the_heard_speech_to_end() -> None:
    after = tone(160)
    # model speech heard over [0.2 s, 1.0 s): the detector closes it 300 ms after its end
    mic, player, _ = run(
        [(WaitForReply(timeout_s=5.0), None), (Say(text="x"), after)], 100, heard=(1600, 8000)
    )
    closed_frame = -(-(8000 + 2400) // FRAME) - 1  # the first frame that ends at or past the close
    assert np.flatnonzero(mic)[0] == closed_frame * FRAME
    wait = player.log[0]
    assert wait["reply_heard"] and not wait["timed_out"] and wait["end_ms"] == closed_frame * 20.0


def test_wait_for_reply_times_out_when_nothing_is_heard() -> None:
    mic, player, _ = run([(WaitForReply(timeout_s=0.3), None), (Say(text="x"), tone(160))], 40)
    assert np.flatnonzero(mic)[0] == 2400
    assert player.log[0]["timed_out"] and not player.log[0]["reply_heard"]


@pytest.mark.parametrize("after_s", [0.3, 0.0])
def test_barge_in_speaks_after_the_heard_onset(after_s: float) -> None:
    speech = tone(800)
    mic, player, _ = run([(BargeIn(after_s=after_s, text="x"), speech)], 80, heard=(1234, 20000))
    start = np.flatnonzero(mic)[0]
    # the onset is known once 50 ms of it are heard: at the end of the frame holding onset + 400
    known = (-(-(1234 + 400) // FRAME) - 1) * FRAME
    assert start == max(1234 + round(after_s * RATE), known)
    assert np.array_equal(mic[start : start + 800], speech)
    e = player.log[0]
    assert e["model_onset_ms"] == 1234 / 8 and e["audio_start_ms"] == start / 8 and not e["timed_out"]


def test_barge_in_speaks_anyway_after_its_timeout() -> None:
    mic, player, _ = run([(BargeIn(after_s=0.2, text="x", timeout_s=0.5), tone(160))], 40)
    assert np.flatnonzero(mic)[0] == 4000
    assert player.log[0]["timed_out"] and player.log[0]["model_onset_ms"] is None


def test_dtmf_digits_go_in_order_on_ticks_gap_apart() -> None:
    # the Say ends mid-frame: the keys start with the next tick
    _, player, keys = run(
        [(Say(text="x"), tone(250)), (Dtmf("1#9", gap_s=0.1), None), (Say(text="y"), tone(10))], 40
    )
    assert [(d, pos) for d, _, pos in keys] == [("1", 320), ("#", 1120), ("9", 1920)]
    assert all(pos == k * FRAME for _, k, pos in keys)  # sent at the tick of its frame
    dtmf = player.log[1]
    assert [d["digit"] for d in dtmf["digits"]] == ["1", "#", "9"]
    assert dtmf["start_ms"] == 40.0 and dtmf["end_ms"] == 40.0 + 300.0
    assert player.log[2]["audio_start_ms"] == 340.0


def test_dtmf_gap_rounds_up_to_whole_frames() -> None:
    _, _, keys = run([(Dtmf("12", gap_s=0.03), None)], 10)
    assert [pos for _, _, pos in keys] == [0, 320]


def test_hangup_ends_the_script_and_silences_the_rest() -> None:
    mic, player, _ = run([(Say(text="x"), tone(500)), (Hangup(), None), (Say(text="never"), tone(500))], 20)
    assert player.hung_up and player.done
    assert np.count_nonzero(mic) == 500
    assert [e["step"] for e in player.log] == ["say", "hangup"]
    assert player.log[1]["start_ms"] == 500 / 8


def test_not_done_before_the_last_step() -> None:
    player = StepPlayer([(Silence(0.1), None)], 0.0)
    player.next_frame(None)
    assert not player.done
    for _ in range(5):
        player.next_frame(None)
    assert player.done


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (Say(), "exactly one of text or wav"),
        (Say(text="a", wav="b.wav"), "exactly one"),
        (BargeIn(after_s=-1.0, text="a"), "after_s"),
        (Silence(-0.5), "seconds"),
        (Silence(float("nan")), "seconds"),
        (WaitForReply(timeout_s=0), "timeout_s"),
        (Dtmf("12x"), "digits"),
        (Dtmf(""), "digits"),
        (Dtmf("1", gap_s=-1), "gap_s"),
    ],
)
def test_a_step_that_cannot_be_played_is_refused_with_its_field(step: Step, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        check_step(step)
    with pytest.raises(ValueError, match=field):
        CallOptions(steps=(step,))


def test_the_ground_truth_options_name_each_step() -> None:
    opts = CallOptions(steps=(Say(text="hi"), BargeIn(after_s=0.5, wav="x.wav"), Dtmf("12"), Hangup()))
    steps = _options_json(opts)["steps"]
    assert [s["step"] for s in steps] == ["say", "barge_in", "dtmf", "hangup"]
    assert steps[1]["after_s"] == 0.5 and steps[2]["digits"] == "12"
