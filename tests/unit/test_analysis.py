"""Per-call analysis on synthetic calls whose every timing is known (tests/speech.py: synth_call)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.analysis import MediaEvidence, analyse, find_turns
from bridge.meters.echo import EchoEstimate
from bridge.meters.vad import Segment
from bridge.played import played_track
from orchestrator.emulator.audio import find_speech
from tests.speech import CALLER_LINES as C
from tests.speech import MODEL_LINES as M
from tests.speech import synth_call

REQUIRED = {
    "first_audio_ms",
    "first_audio_heard_ms",
    "response_latency_ms_p50",
    "response_latency_ms_max",
    "turns",
    "echo_detected",
    "late_frames",
    "inbound_gap_ms_total",
    "inbound_jitter_ms",
    "outbound_underruns",
    "inbound_rms_dbfs",
    "outbound_rms_dbfs",
    "inbound_clip_ratio",
    "outbound_clip_ratio",
    "inbound_silence_ratio",
    "outbound_silence_ratio",
}
# A conversation: model greets, caller asks, model answers, caller again, model answers.
MODEL = [(M[0], 0.2), (M[1], 7.0), (M[2], 12.5)]
CALLER = [(C[0], 4.0), (C[1], 9.8)]


@pytest.mark.parametrize(
    "channel",
    [
        {},
        {"noise_dbfs": -55.0, "jitter_ms": 30.0, "lost": [5, 6, 7, 400, 777]},
        {"echo": (120.0, 12.0), "noise_dbfs": -60.0},
    ],
    ids=["clean", "noise-jitter-loss", "echo"],
)
def test_first_audio_and_response_latency_within_20ms(channel: dict) -> None:
    ev, truth = synth_call(duration_s=18.0, model=MODEL, caller=CALLER, **channel)
    a = analyse(ev)
    m = a.metrics
    assert REQUIRED <= m.keys()
    assert m["first_audio_ms"] == pytest.approx(truth.first_audio_ms, abs=20)
    assert m["first_audio_heard_ms"] == pytest.approx(truth.first_audio_heard_ms, abs=20)
    assert m["turns"] == len(truth.latencies_ms) == 2
    for turn, lat in zip(a.turns, truth.latencies_ms, strict=True):
        assert turn.latency_ms == pytest.approx(lat, abs=20)
    assert m["response_latency_ms_max"] == pytest.approx(max(truth.latencies_ms), abs=20)
    assert len(a.inbound_segments) == 2  # the caller's two lines, echo or not
    # the model's speech, segmented by the emulator's own reading of the convention (a line with a
    # pause of 300 ms or more is two segments), located within a sample of each onset and end
    expected = [(seg.onset / 8000, seg.end / 8000) for seg in find_speech(truth.played)]
    assert len(expected) >= 3
    measured = [t for s in a.outbound_segments for t in (s.start_s, s.end_s)]
    assert measured == pytest.approx([t for seg in expected for t in seg], abs=0.001)


def test_first_audio_heard_needs_a_mark_echo() -> None:
    ev, truth = synth_call(duration_s=6.0, model=[(M[0], 0.5)])
    # Marks never echoed (call dropped), or flushed by a `clear`: playout not confirmed.
    for marks in (
        [],
        [(n, s, float("nan"), False) for n, s, _, _ in ev.marks],
        [(n, s, e, True) for n, s, e, _ in ev.marks],
    ):
        ev2 = MediaEvidence(**{**ev.__dict__, "marks": marks})
        m = analyse(ev2).metrics
        assert "first_audio_heard_ms" not in m
        assert m["first_audio_ms"] == pytest.approx(truth.first_audio_ms)


def test_lost_frames_and_gap_counted_exactly_and_jitter_reported() -> None:
    lost = [0, 1, 2, 100, 101, 250, 251, 252, 253, 600]
    ev, truth = synth_call(
        duration_s=15.0, model=[(M[0], 0.5)], caller=[(C[0], 5.0)], lost=lost, jitter_ms=24.0
    )
    m = analyse(ev).metrics
    assert m["lost_frames"] == truth.lost_frames == len(lost)
    assert m["inbound_gap_ms_total"] == 20.0 * len(lost)
    assert m["inbound_gap_count"] == 4
    assert m["inbound_jitter_ms"] == pytest.approx(24.0 / 3, rel=0.25)
    assert m["inbound_media_offset_ms"] == pytest.approx(truth.media_offset_s * 1000)


@pytest.mark.parametrize(("delay_ms", "loss_db"), [(40.0, 6.0), (250.0, 20.0), (400.0, 35.0)])
def test_echo_through_the_whole_pipeline(delay_ms: float, loss_db: float) -> None:
    ev, _ = synth_call(
        duration_s=20.0,
        model=[(M[0], 0.2), (M[2], 6.0), (M[3], 12.0)],
        caller=[(C[0], 4.5)],
        echo=(delay_ms, loss_db),
        noise_dbfs=-60.0,
        jitter_ms=20.0,
        lost=[300, 301],
    )
    a = analyse(ev)
    assert a.metrics["echo_detected"] == 1.0
    assert a.metrics["echo_delay_ms"] == pytest.approx(delay_ms, abs=5)
    assert a.metrics["echo_return_loss_db"] == pytest.approx(loss_db, abs=2)
    # The echo is subtracted before the inbound VAD: only the caller's line is caller speech.
    assert len(a.inbound_segments) == 1


def test_clean_call_with_double_talk_has_no_echo_flag() -> None:
    ev, _ = synth_call(duration_s=14.0, model=[(M[0], 0.2), (M[2], 5.5)], caller=[(C[1], 1.0), (C[2], 7.0)])
    m = analyse(ev).metrics
    assert m["echo_detected"] == 0.0
    assert "echo_delay_ms" not in m and "echo_return_loss_db" not in m


def test_model_talking_over_the_caller_is_overlap_not_a_turn() -> None:
    caller = [Segment(1.0, 3.0), Segment(6.0, 8.0)]
    # 2.5: starts while the caller talks (overlap); 3.4: answers segment 1; 5.9: before segment 2 ends.
    turns = find_turns(caller, [2.5, 3.4, 5.9])
    assert [(t.caller_end_s, round(t.latency_ms, 6)) for t in turns] == [(3.0, 400.0)]
    # A caller who speaks again before the model answers: only the last segment gets the answer.
    turns = find_turns([Segment(1.0, 2.0), Segment(2.5, 3.0)], [3.7])
    assert [(t.caller_end_s, round(t.latency_ms, 6)) for t in turns] == [(3.0, 700.0)]


def test_played_track_places_chunks_at_playout_and_skips_flushed_ones() -> None:
    sent = np.arange(1, 4 * 160 + 1, dtype=np.int16)
    sends = np.array([[0.0, 0.1, 0], [0.0, 0.12, 0], [0.0, 0.14, 1], [0.3, 0.3, 0]])
    out = played_track(sent, sends)
    assert len(out) == int(0.3 * 8000) + 160
    assert np.array_equal(out[800:1120], sent[:320])
    assert not out[1120:2400].any()  # the flushed chunk never played
    assert np.array_equal(out[2400:2560], sent[480:640])


def test_step_times_and_counters_pass_through() -> None:
    ev, _ = synth_call(duration_s=4.0, model=[(M[3], 0.2)])
    steps = list(np.linspace(40.0, 139.0, 100))
    ev2 = MediaEvidence(**{**ev.__dict__, "step_ms": steps, "late_frames": 7, "underruns": 3})
    m = analyse(ev2).metrics
    assert m["step_ms_p50"] == pytest.approx(89.5)
    assert m["step_ms_p99"] == pytest.approx(np.percentile(steps, 99))
    assert m["steps_over_budget"] == 59
    assert (m["late_frames"], m["outbound_underruns"]) == (7, 3)
    assert m["turns"] == 0 and "response_latency_ms_p50" not in m


def _runs_call(
    late_ms: list[float],
    *,
    echo: bool = True,
    caller_at: float | None = None,
    seed: int = 3,
    marked: bool = False,
    slip: tuple[int, int, float] | None = None,
) -> tuple[MediaEvidence, dict[str, float]]:
    """Model replies in separate runs, each placed by the marks `late_ms[r]` after it really played.

    The inbound audio is the true played track through a room (the emulator's own response, after a
    60 ms bulk delay, 15 dB), so truth (first arrival, loss over the whole response) comes from the
    signals themselves, as the emulator computes it. `marked`: a mark after every fifth chunk, echoed
    0.3-2.3 ms after its audio truly played out (one echo per run 60 ms late, as a loaded far end does);
    otherwise one mark sent after everything played, which says nothing of any run. `slip`: (run, chunk,
    ms): from that chunk of that run on, the phone played `ms` later than the placement says (it ran
    dry and fell behind), while the placement runs on back to back.
    """
    from scipy.signal import oaconvolve

    from bridge.g711 import ulaw_decode, ulaw_encode
    from orchestrator.emulator.audio import room_impulse_response
    from tests.speech import speak

    rate, n = 8000, 16 * 8000
    rng = np.random.default_rng(seed)
    rir, direct = room_impulse_response(0.4, 1.0, seed=seed)
    bulk = round(0.060 * rate)
    path = np.zeros(bulk + len(rir))
    path[bulk:] = rir * 10 ** (-15 / 20)
    sent_parts, rows, true_track = [], [], np.zeros(n)
    marks: list[tuple[str, float, float, bool]] = []
    mark_chunks: list[int] = []
    t = 0.3
    for r, late in enumerate(late_ms):
        clip = speak(M[r % len(M)])
        chunks = -(-len(clip) // 160)
        pcm = np.zeros(chunks * 160, dtype=np.int16)
        pcm[: len(clip)] = clip
        start = round(t * rate) + 37 * r  # each run has its own packet phase
        late_one = int(rng.integers(0, chunks // 5))  # the mark of this run echoed late
        for k in range(chunks):
            behind = round(slip[2] * rate / 1000) if slip and slip[0] == r and k >= slip[1] else 0
            at = start + 160 * k + behind  # where the phone really played chunk k
            true_track[at : at + 160] = pcm[160 * k : 160 * (k + 1)]
            play = (start + 160 * k) / rate
            rows.append([play - 0.1, play + late / 1000.0, 0.0])
            if marked and (k % 5 == 4 or k == chunks - 1):
                ret = float(rng.uniform(0.3, 2.3)) + (60.0 if k // 5 == late_one else 0.0)
                sent = rows[-1][0] + 0.001
                marks.append((f"m{len(rows)}", sent, (at + 160) / rate + ret / 1000.0, False))
                mark_chunks.append(len(rows))
        sent_parts.append(pcm)
        t += len(pcm) / rate + 0.8
    inbound = oaconvolve(true_track, path)[:n] if echo else np.zeros(n)
    if caller_at is not None:
        voice = speak(C[0])
        k = round(caller_at * rate)
        inbound[k : k + len(voice)] += voice[: n - k]
    inbound += rng.normal(0.0, 32768 * 10 ** (-60 / 20), n)
    pcm_in = ulaw_decode(ulaw_encode(np.clip(np.rint(inbound), -32768, 32767).astype(np.int16)))
    frames = n // 160
    arrivals = np.column_stack([0.02 + 0.02 * np.arange(frames), 20.0 * np.arange(frames)])
    sends = np.asarray(rows)
    last = float(sends[-1, 0])
    if not marked:
        marks, mark_chunks = [("end", last + 0.01, last + 0.5, False)], [len(rows)]
    ev = MediaEvidence(
        rate=rate,
        inbound_pcm=pcm_in[: frames * 160],
        inbound_arrivals=arrivals,
        sent_pcm=np.concatenate(sent_parts),
        sends=sends,
        marks=marks,
        mark_chunks=mark_chunks,
    )
    whole = oaconvolve(true_track, path)
    truth = {
        "delay_ms": (bulk + direct) * 1000.0 / rate,
        "loss_db": 10 * np.log10(np.dot(true_track, true_track) / np.dot(whole, whole)),
    }
    return ev, truth


def _as_marked(ev: MediaEvidence) -> EchoEstimate:
    """The whole call's echo with every chunk where the marks' placement puts it."""
    from bridge.analysis import _confirmed_sends
    from bridge.meters.echo import estimate_echo

    n = len(ev.inbound_pcm)
    reference = np.zeros(n, dtype=np.int16)
    track = played_track(ev.sent_pcm, _confirmed_sends(ev))
    reference[: min(n, len(track))] = track[:n]
    return estimate_echo(reference, ev.inbound_pcm, 8000)


def test_runs_placed_late_by_different_amounts_are_aligned_by_their_own_echo() -> None:
    from bridge.analysis import _confirmed_sends
    from bridge.played import align_runs, playout_runs

    late = [0.875, 0.125, 2.5]  # ms: what a loaded far end's late mark echoes did on one run of the rig
    ev, truth = _runs_call(late)
    sends = _confirmed_sends(ev)
    assert len(playout_runs(sends)) == 3
    # As the marks placed them, one path over all three runs is smeared: the loss reads well off.
    as_marked = _as_marked(ev)
    assert abs(as_marked.erl_db - truth["loss_db"]) > 1.0
    # Each run's own echo puts it back: the least-late run (0.125 ms) anchors the others.
    n = len(ev.inbound_pcm)
    starts = align_runs(ev.sent_pcm, sends, ev.inbound_pcm, np.ones(n, bool), as_marked)
    assert starts is not None
    for run, ms in zip(playout_runs(sends), late, strict=True):
        assert (sends[run, 1] - starts[run]) * 1000.0 == pytest.approx(ms - min(late), abs=0.2)
    m = analyse(ev).metrics
    assert m["echo_detected"] == 1.0
    # the anchor run itself was placed 0.125 ms late: its echo reads that much early
    assert m["echo_delay_ms"] == pytest.approx(truth["delay_ms"] - min(late), abs=0.2)
    assert m["echo_return_loss_db"] == pytest.approx(truth["loss_db"], abs=0.5)


def test_a_run_placed_early_is_put_back_by_its_own_mark_echoes() -> None:
    # The playout clock placed the middle run 18 ms before it played (its offset capped by the others').
    # That run, as the anchor of the others, read the room's delay 18 ms high; its own echoes, which can
    # only come after its audio played, place it no earlier than it played.
    ev, truth = _runs_call([0.5, -18.0, 1.0], marked=True, seed=5)
    as_marked = _as_marked(ev)
    assert abs(as_marked.erl_db - truth["loss_db"]) > 1.0 or abs(as_marked.delay_ms - truth["delay_ms"]) > 5
    m = analyse(ev).metrics
    assert m["echo_detected"] == 1.0
    # echoes come back 0.3 ms or more after the audio played: the delay reads early by at most that much
    assert truth["delay_ms"] - 2.5 <= m["echo_delay_ms"] <= truth["delay_ms"] + 0.2
    assert m["echo_return_loss_db"] == pytest.approx(truth["loss_db"], abs=0.5)


def test_a_run_where_the_phone_fell_behind_is_split_at_the_slip() -> None:
    from bridge.played import latest_starts, playout_runs

    # From its 30th chunk on, the second run played 20 ms later than its back-to-back placement says.
    ev, truth = _runs_call([0.5, 0.5, 0.5], marked=True, seed=7, slip=(1, 30, 20.0))
    runs = playout_runs(ev.sends)
    placed = latest_starts(ev.sends, ev.marks, ev.mark_chunks)
    behind = (placed - ev.sends[:, 1])[runs[1]] * 1000.0
    assert behind[:30] == pytest.approx(np.zeros(30), abs=2.5)  # bounded by the echoes' 0.3-2.3 ms
    assert behind[30:] == pytest.approx(np.full(len(behind) - 30, 20.0), abs=2.5)
    m = analyse(ev).metrics
    assert m["echo_detected"] == 1.0
    assert truth["delay_ms"] - 2.5 <= m["echo_delay_ms"] <= truth["delay_ms"] + 0.2
    assert m["echo_return_loss_db"] == pytest.approx(truth["loss_db"], abs=0.5)


def test_runs_without_echo_are_left_where_the_marks_put_them() -> None:
    ev, _ = _runs_call([0.875, 0.125, 2.5], echo=False, caller_at=2.0)
    a = analyse(ev)
    assert a.metrics["echo_detected"] == 0.0
    assert a.echo.path_z < 6.0
