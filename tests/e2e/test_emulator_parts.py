"""The emulator's pure parts, without sockets: the outbound buffer, onset detection, echo path, frame plan,
routes, caller script; and the CLI's help."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from orchestrator.emulator.audio import FRAME, CallerScript, EchoPath, SpeechDetector, Turn
from orchestrator.emulator.cli import emulator
from orchestrator.emulator.faults import Faults, FramePlan, shuffled
from orchestrator.emulator.playout import PlayoutBuffer
from orchestrator.emulator.webhooks import route


def test_playout_buffer_marks_follow_their_audio() -> None:
    buf = PlayoutBuffer()
    assert buf.push_mark("idle") == ["idle"]  # nothing queued: echoed at once
    buf.push_audio(b"\x00" * 200)
    assert buf.push_mark("a") == []
    buf.push_audio(b"\x10" * 100)
    heard, done = buf.play()
    assert heard == b"\x00" * 160 and done == []
    heard, done = buf.play()  # the rest of "a"'s audio, then audio after it in the same frame
    assert heard == b"\x00" * 40 + b"\x10" * 100 + b"\xff" * 20 and done == []
    assert buf.push_mark("b") == []  # "a" is not echoed yet, so "b" must wait behind it
    heard, done = buf.play()
    assert heard == b"\xff" * 160 and done == ["a", "b"]  # echoed once the frame holding them has played


def test_clear_returns_pending_marks_and_drops_audio() -> None:
    buf = PlayoutBuffer()
    buf.push_audio(b"\x00" * 1600)
    buf.push_mark("x")
    buf.push_audio(b"\x00" * 160)
    buf.push_mark("y")
    buf.play()
    assert buf.clear() == ["x", "y"] and buf.queued_bytes == 0
    assert buf.play() == (b"\xff" * 160, [])


def test_speech_onset_is_located_to_the_window() -> None:
    x = np.zeros(8000, dtype=np.int16)
    x[2440:6000] = 3000  # loud from sample 2440 (inside a 10 ms window starting at 2400)
    vad = SpeechDetector()
    onsets = [vad.feed(x[i : i + FRAME]) for i in range(0, len(x), FRAME)]
    (seg,) = vad.finish()
    assert seg.onset == 2400 and seg.end == 6000 and [o for o in onsets if o is not None] == [2400]
    short = np.zeros(2000, dtype=np.int16)
    short[800:1120] = 3000  # 40 ms: below the 50 ms minimum
    vad = SpeechDetector()
    vad.feed(short)
    assert vad.finish() == []


def test_echo_path_delay_and_loss_are_exact() -> None:
    path = EchoPath(delay_ms=25, loss_db=20)
    impulse = np.zeros(FRAME * 4, dtype=np.int16)
    impulse[10] = 10000
    out = []
    for i in range(0, len(impulse), FRAME):
        path.feed(impulse[i : i + FRAME])
        out.append(path.take(FRAME))
    echo = np.concatenate(out)
    assert int(np.argmax(np.abs(echo))) == 10 + 200 and abs(echo[210] - 1000.0) < 1e-3


def test_frame_plan_is_seeded_and_keeps_named_losses() -> None:
    faults = Faults(lost_frames=(3,), loss_rate=0.1, jitter_ms=20, seed=7)
    plan_a, plan_b = FramePlan(faults), FramePlan(faults)
    a = [plan_a.fate(i) for i in range(1, 200)]
    b = [plan_b.fate(i) for i in range(1, 200)]
    assert a == b and a[2].lost and all(0 <= f.delay_s <= 0.02 for f in a)
    assert 5 <= sum(f.lost for f in a) <= 40
    assert shuffled([1, 2, 3], 0) != [1, 2, 3] and sorted(shuffled([1, 2, 3], 0)) == [1, 2, 3]


def test_routes_map_public_urls_like_a_tunnel() -> None:
    routes = {"https://pub.invalid": "http://127.0.0.1:9000"}
    assert route("wss://pub.invalid/media", routes) == "ws://127.0.0.1:9000/media"
    assert (
        route("https://pub.invalid/twilio/status?call_id=1", routes)
        == "http://127.0.0.1:9000/twilio/status?call_id=1"
    )
    assert route("https://other.invalid/x", routes) == "https://other.invalid/x"


def test_caller_script_times_out_without_an_answer() -> None:
    turn = Turn(text="x", answer_timeout_s=0.2, pause_s=0.1)
    pcm = np.full(800, 1000, dtype=np.int16)  # 100 ms
    script = CallerScript([(turn, pcm), (turn, pcm)], start_after_s=0.04)
    frames = [script.next_frame(heard_speaking=False) for _ in range(45)]
    first, second = script.played
    assert first.start == 320 and first.end == 1120
    assert second.start == 1120 + 1600 + 800  # timeout, then the pause
    assert np.concatenate(frames)[320:1120].min() == 1000 and script.done


def test_cli_help_has_an_example() -> None:
    result = CliRunner().invoke(emulator, ["--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--route" in result.output


def test_feeding_silence_the_quick_way_leaves_the_detector_as_feeding_zeros_does() -> None:
    rng = np.random.default_rng(7)
    quick, slow = SpeechDetector(), SpeechDetector()
    for step in range(300):
        if rng.random() < 0.5:  # speech-like noise of random length (partial windows included)
            x = (rng.standard_normal(int(rng.integers(1, 1200))) * 3000).astype(np.int16)
            assert quick.feed(x) == slow.feed(x)
        else:  # a run of silent frames, sometimes after a partial window (the quick way then falls back)
            for _ in range(int(rng.integers(1, 40))):
                assert quick.feed_quiet(FRAME) == slow.feed(np.zeros(FRAME, np.int16))
        assert quick.current_onset == slow.current_onset, step
        assert vars_of(quick) == vars_of(slow), step
    assert quick.finish() == slow.finish() and len(slow.segments) > 3


def vars_of(d: SpeechDetector) -> tuple[object, ...]:
    return (
        d._pos,
        len(d._pending),
        d._run_start if d._run_len else None,
        d._run_len,
        d._quiet,
        d._last_loud_end,
        d.current_onset,
        list(d.segments),
    )
