"""The playout-clock model, against a simulated Twilio whose true playout we know."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.playout import ChunkRecord, PlayoutClock

CHUNK = 160  # 20 ms at 8 kHz
D = 0.02


def test_constant_rate_sending_plays_contiguously_with_constant_lead() -> None:
    clock = PlayoutClock()
    ends = []
    for _ in range(5):  # prime 100 ms of lead, then one chunk per 20 ms
        ends.append(clock.on_send(1.0, CHUNK))
    for k in range(5, 100):
        now = 1.0 + (k - 4) * D
        ends.append(clock.on_send(now, CHUNK))
        assert clock.lead(now) == pytest.approx(0.1)
    for k, (start, end) in enumerate(ends):
        assert start == pytest.approx(1.0 + k * D) and end == pytest.approx(start + D)
        if k:
            assert start == ends[k - 1][1]  # exactly contiguous
    assert clock.underruns == 0 and clock.samples_sent == 100 * CHUNK


def test_burst_sending_queues_and_lead_grows_then_drains() -> None:
    clock = PlayoutClock()
    leads = []
    for k in range(50):
        start, _ = clock.on_send(0.0, CHUNK)
        assert start == pytest.approx(k * D)
        leads.append(clock.lead(0.0))
    assert leads == pytest.approx([(k + 1) * D for k in range(50)])
    assert clock.lead(0.4) == pytest.approx(0.6)
    assert clock.lead(1.0) == pytest.approx(0.0, abs=1e-12) and clock.lead(5.0) == 0.0
    assert clock.underruns == 0


def test_late_sending_counts_underruns_but_not_first_chunk_idle_or_clear() -> None:
    clock = PlayoutClock()
    clock.on_send(10.0, CHUNK)  # first chunk: nothing was flowing
    clock.on_send(10.02, CHUNK)  # just in time
    start, _ = clock.on_send(10.07, CHUNK)  # 30 ms after the previous one ended
    assert start == 10.07
    assert clock.underruns == 1 and clock.underrun_seconds == pytest.approx(0.03)
    clock.on_send(10.2, CHUNK)
    assert clock.underruns == 2 and clock.underrun_seconds == pytest.approx(0.03 + 0.11)
    clock.on_idle()  # end of a response: the silence that follows is not an underrun
    clock.on_send(12.0, CHUNK)
    clock.on_clear(12.005)
    clock.on_send(13.0, CHUNK)
    assert clock.underruns == 2


def burst_with_mark(clock: PlayoutClock) -> None:
    """10 chunks at t=0 (200 ms queued), mark "m" after the 5th: its audio ends at 0.1 s."""
    for _ in range(5):
        clock.on_send(0.0, CHUNK)
    clock.mark_sent("m", 0.0)
    for _ in range(5):
        clock.on_send(0.0, CHUNK)


def test_late_mark_echo_shifts_the_whole_run_by_the_lateness() -> None:
    clock = PlayoutClock()
    burst_with_mark(clock)
    before = [c.playout_start for c in clock.chunks]
    echo = clock.on_mark_echo("m", 0.13)  # 30 ms later than estimated
    assert echo is not None and (echo.name, echo.sent_at, echo.echoed_at, echo.flushed) == (
        "m",
        0.0,
        0.13,
        False,
    )
    assert echo.expected_at == pytest.approx(0.1) and echo.error == pytest.approx(0.03)
    assert clock.echoes == [echo]
    after = [c.playout_start for c in clock.chunks]
    # contiguous audio that ended 30 ms later also started 30 ms later: the whole run moves
    assert after == pytest.approx([b + 0.03 for b in before])
    assert clock.playout_time_of_sample(5 * CHUNK) == pytest.approx(0.13)
    assert clock.playout_time_of_sample(5 * CHUNK + 80) == pytest.approx(0.14)
    # 100 ms still queued after the mark, but a chunk sent now lands 30 ms later: 70 ms ahead of it
    assert clock.lead(0.13) == pytest.approx(0.07)
    assert clock.delay == pytest.approx(0.03)
    start, _ = clock.on_send(1.0, CHUNK)  # long after the queue drained: the learned delay stays
    assert start == pytest.approx(1.03)


def test_the_run_offset_is_the_minimum_lateness_so_noise_does_not_move_it() -> None:
    clock = PlayoutClock()
    for _ in range(20):
        clock.on_send(0.0, CHUNK)
        clock.mark_sent(f"m{len(clock.chunks)}", 0.0)
    # true offset 25 ms; echoes come 0-19 ms later still (return path, Twilio's 20 ms packet clock)
    noise = [0.013, 0.0, 0.019, 0.007, 0.011, 0.002]
    for k, extra in enumerate(noise, start=1):
        clock.on_mark_echo(f"m{k}", k * D + 0.025 + extra)
        assert clock.delay == pytest.approx(0.025 + min(noise[:k]))
    starts = [c.playout_start for c in clock.chunks]
    assert starts == pytest.approx([0.025 + k * D for k in range(20)])  # a clean shift, history included


def test_on_time_echo_changes_nothing_and_early_echo_pulls_estimates_in() -> None:
    clock = PlayoutClock()
    burst_with_mark(clock)
    before = [c.playout_start for c in clock.chunks]
    clock.on_mark_echo("m", 0.1)
    assert [c.playout_start for c in clock.chunks] == pytest.approx(before)
    assert clock.delay == pytest.approx(0.0)
    clock = PlayoutClock()
    burst_with_mark(clock)
    clock.on_mark_echo("m", 0.09)
    assert clock.delay == 0.0  # clamped: playout cannot precede sending; an earlier echo is clock noise
    assert clock.chunks[5].playout_start == pytest.approx(0.1)
    clock = PlayoutClock()
    burst_with_mark(clock)
    clock.mark_sent("n", 0.0)  # after all 10 chunks: expected at 0.2
    clock.on_mark_echo("m", 0.13)
    clock.on_mark_echo("n", 0.21)  # 10 ms late where the first said 30: the run moves in
    assert clock.delay == pytest.approx(0.01)
    assert clock.chunks[0].playout_start == pytest.approx(0.01)


def test_estimates_match_a_simulated_twilio_after_the_first_echo() -> None:
    """Twilio with a 40 ms forward and 25 ms return path; the model learns the 65 ms round trip."""
    fwd, ret, max_lead = 0.04, 0.025, 0.1
    clock = PlayoutClock()
    true_end = 0.0
    truth: list[float] = []  # true playout start, Twilio's clock == ours
    echoes: list[tuple[float, str]] = []  # (arrival here, name)
    now, k = 0.0, 0
    while k < 200:
        for at, name in [e for e in echoes if e[0] <= now]:
            clock.on_mark_echo(name, at)
            echoes.remove((at, name))
        while clock.lead(now) < max_lead and k < 200:
            clock.on_send(now, CHUNK)
            true_start = max(now + fwd, true_end)
            true_end = true_start + D
            truth.append(true_start)
            k += 1
            if k % 25 == 0:
                clock.mark_sent(f"m{k}", now)
                echoes.append((true_end + ret, f"m{k}"))
        now += 0.005  # the session's pacing tick
    assert clock.delay == pytest.approx(fwd + ret)
    assert len(clock.echoes) >= 6 and all(e.error == pytest.approx(0) for e in clock.echoes[1:])
    starts = [c.playout_start for c in clock.chunks]
    assert starts[25:] == pytest.approx([t + ret for t in truth[25:]], abs=1e-9)  # as observed here
    assert clock.underruns == 0


def test_clear_flushes_queued_audio_and_flags_pending_marks() -> None:
    clock = PlayoutClock()
    for k in range(10):
        clock.on_send(0.0, CHUNK)
        if k == 1:
            clock.mark_sent("played", 0.0)  # its audio ends at 0.04, before the clear lands
    clock.mark_sent("queued", 0.0)  # expected at 0.2
    clock.on_clear(0.05)
    chunks = clock.chunks
    assert [c.played_samples for c in chunks] == [160, 160, 80] + [0] * 7
    assert [c.flushed for c in chunks] == [False, False] + [True] * 8
    assert chunks[2].playout_end == pytest.approx(0.05)
    assert clock.playout_time_of_sample(2 * CHUNK + 79) == pytest.approx(0.04 + 79 / 8000)
    assert clock.playout_time_of_sample(2 * CHUNK + 80) is None
    assert clock.playout_time_of_sample(9 * CHUNK) is None
    assert clock.lead(0.05) == 0.0
    played = clock.on_mark_echo("played", 0.05)  # in flight when we sent the clear: 10 ms late
    assert played is not None and not played.flushed and clock.delay == pytest.approx(0.01)
    queued = clock.on_mark_echo("queued", 0.051)
    assert queued is not None and queued.flushed and clock.delay == pytest.approx(0.01)  # no recalibration
    assert clock.pending_marks == [] and clock.lost_marks == 0
    start, _ = clock.on_send(0.06, CHUNK)
    assert start == pytest.approx(0.07) and clock.underruns == 0
    assert clock.samples_sent == 11 * CHUNK


def test_echo_of_a_played_mark_after_a_clear_updates_the_delay_only() -> None:
    clock = PlayoutClock()
    clock.on_send(0.0, CHUNK)
    clock.mark_sent("a", 0.0)  # expected 0.02
    clock.on_send(0.0, CHUNK)
    clock.on_clear(0.03)
    clock.on_send(0.03, CHUNK)
    echo = clock.on_mark_echo("a", 0.035)  # 15 ms late
    assert echo is not None and not echo.flushed and echo.error == pytest.approx(0.015)
    assert clock.delay == pytest.approx(0.015)
    assert clock.chunks[2].playout_start == pytest.approx(0.045)  # re-chained with the new delay
    assert clock.chunks[1].played_samples == 80  # what the clear cut stays cut


def test_unknown_echoes_and_lost_marks_are_counted() -> None:
    clock = PlayoutClock()
    clock.on_send(0.0, CHUNK)
    clock.mark_sent("x", 0.0)
    clock.mark_sent("y", 0.0)
    assert clock.on_mark_echo("nope", 0.1) is None and clock.unknown_echoes == 1
    echo = clock.on_mark_echo("y", 0.1)
    assert echo is not None and echo.name == "y"
    assert clock.lost_marks == 1 and clock.pending_marks == []
    assert clock.on_mark_echo("x", 0.2) is None and clock.unknown_echoes == 2


def test_chunk_records_and_sample_lookup() -> None:
    clock = PlayoutClock()
    clock.on_send(0.0, 80)
    clock.on_send(0.0, 0)  # an empty chunk takes no time and no sample index
    clock.on_send(0.5, 480, rate=24000)
    assert clock.chunks == [
        ChunkRecord(0.0, 0.0, 80, 8000, 80),
        ChunkRecord(0.0, 0.01, 0, 8000, 0),
        ChunkRecord(0.5, 0.5, 480, 24000, 480),
    ]
    assert clock.playout_time_of_sample(79) == pytest.approx(79 / 8000)
    assert clock.playout_time_of_sample(80) == 0.5
    assert clock.playout_time_of_sample(80 + 240) == pytest.approx(0.51)
    for bad in (-1, 80 + 480):
        with pytest.raises(IndexError):
            clock.playout_time_of_sample(bad)
    with pytest.raises(ValueError):
        clock.on_send(1.0, 160, rate=0)


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(1, 800)), min_size=1, max_size=60))
def test_playout_never_overlaps_and_each_gap_is_one_underrun(sends: list[tuple[float, int]]) -> None:
    clock = PlayoutClock()
    now, gaps = 0.0, 0
    for step, n in sends:
        now += step
        clock.on_send(now, n)
    chunks = clock.chunks
    for prev, cur in itertools.pairwise(chunks):
        assert cur.playout_start >= cur.send_time
        assert cur.playout_start >= prev.playout_end - 1e-12  # never two chunks at once
        gaps += cur.playout_start > prev.playout_end + 1e-9
    assert clock.underruns == gaps


def test_a_short_run_whose_only_echo_came_late_is_held_within_a_packet_of_the_path() -> None:
    # true path offset 10 ms for every run (Twilio's packet phase may add up to 20 ms to a run)
    clock = PlayoutClock()
    for _ in range(3):  # run 0: 60 ms of audio, then the sender stalls (an underrun)
        clock.on_send(0.0, CHUNK)
    clock.mark_sent("a", 0.0)
    clock.on_mark_echo("a", 0.06 + 0.010 + 0.080)  # its one echo came 80 ms late (a loaded box)
    assert clock.chunks[0].playout_start == pytest.approx(0.09)  # alone, the run believes it
    for k in range(20):  # run 1, after the underrun: contiguous audio, echoes on time
        clock.on_send(0.2 + k * D, CHUNK)
        if k % 5 == 4:
            clock.mark_sent(f"b{k}", 0.2 + k * D)
            clock.on_mark_echo(f"b{k}", 0.2 + (k + 1) * D + 0.010)
    assert clock.underruns == 1
    starts = [c.playout_start for c in clock.chunks]
    assert starts[0] == pytest.approx(0.030)  # capped: the path's 10 ms plus at most one packet
    assert starts[3] == pytest.approx(0.2 + 0.010)  # run 1 is its own measurement
    assert clock.playout_time_of_sample(0) == pytest.approx(0.030)
    # with one run only there is nothing to cap against: the estimate is the run's own
    alone = PlayoutClock()
    alone.on_send(0.0, CHUNK)
    alone.mark_sent("x", 0.0)
    alone.on_mark_echo("x", 0.1)
    assert alone.chunks[0].playout_start == pytest.approx(0.08)
