"""The outbound pacer on a fake clock: jitter buffer, lead limit, marks, lateness, clear. No event loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pacer import MIN_WAIT_S, Burst, ChunkOut, Pacer, PacingConfig

D = 0.02  # one 160-byte chunk of mu-law at 8 kHz


def chunk(i: int) -> bytes:
    return bytes([i % 256]) * 160


def kinds(burst: Burst) -> str:
    return "".join("c" if isinstance(s, ChunkOut) else "m" for s in burst.sends)


def test_the_first_chunk_waits_the_jitter_buffer_then_what_the_lead_allows_goes_at_once() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.06, mark_every=5), origin=10.0)
    for i in range(8):
        p.queue(chunk(i), ready=10.0, first_of_step=i % 4 == 0)
    held = p.poll(10.0)
    assert held.sends == [] and held.wake_at == pytest.approx(10.06)
    assert p.poll(10.05).sends == []  # still inside the buffer
    burst = p.poll(10.06)
    # 0.1 s of lead is five 20 ms chunks; the mark follows the fifth
    assert kinds(burst) == "cccccm"
    assert [s.payload for s in burst.sends if isinstance(s, ChunkOut)] == [chunk(i) for i in range(5)]
    assert burst.wake_at == pytest.approx(10.08)  # one chunk has played: room for one more
    assert p.queued == 3
    # the playout clock counts from the origin, contiguous from the first send
    starts = [s.playout_start for s in burst.sends if isinstance(s, ChunkOut)]
    assert starts == pytest.approx([0.06 + k * D for k in range(5)])


def test_the_jitter_buffer_holds_only_the_calls_first_chunk() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.06), origin=0.0)
    p.queue(chunk(0), ready=0.0)
    assert p.poll(0.0).sends == []
    assert len(p.poll(0.06).sends) == 1
    p.queue(chunk(1), ready=0.5)  # long after: no new hold
    assert len(p.poll(0.5).sends) == 1


def test_after_a_clear_the_next_audio_is_held_the_jitter_buffer_again() -> None:
    """A barge-in empties Twilio's buffer as at the call's start: without the hold, each 80 ms frame would
    play out just as the next comes, and a frame a little late would be an underrun."""
    p = Pacer(PacingConfig(max_lead_s=0.2, jitter_buffer_s=0.06, mark_every=50), origin=0.0)
    for i in range(4):
        p.queue(chunk(i), ready=0.0)
    assert p.poll(0.0).sends == [] and len(p.poll(0.06).sends) == 4
    p.clear(0.1)
    for i in range(4, 8):  # the backend's next frame, 20 ms after the clear
        p.queue(chunk(i), ready=0.12)
    held = p.poll(0.12)
    assert held.sends == [] and held.wake_at == pytest.approx(0.18)
    assert len(p.poll(0.18).sends) == 4
    for i in range(8, 12):  # the frame after, 5 ms late: inside the headroom the hold made
        p.queue(chunk(i), ready=0.205)
    p.poll(0.205)
    assert p.playout.underruns == 0


def test_nothing_queued_means_no_wake_up() -> None:
    p = Pacer(origin=0.0)
    assert p.poll(3.0) == Burst([], None)


def test_pacing_a_long_response_keeps_the_lead_within_the_limit_and_loses_nothing() -> None:
    cfg = PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=5)
    p = Pacer(cfg, origin=0.0)
    for i in range(100):
        p.queue(chunk(i), ready=0.0)
    now, sent, marks = 0.0, [], []
    while True:
        burst = p.poll(now)
        for s in burst.sends:
            if isinstance(s, ChunkOut):
                sent.append(s.payload)
            else:
                marks.append(s.name)
        assert p.playout.lead(now) <= cfg.max_lead_s + 1e-9
        if burst.wake_at is None:
            break
        assert burst.wake_at > now + MIN_WAIT_S
        now = burst.wake_at  # a punctual sleeper
    assert sent == [chunk(i) for i in range(100)]
    assert marks == [f"m{k}" for k in range(1, 21)] and p.marks_sent == 20
    # 2 s of audio: five chunks at once, then one per 20 ms as one plays out; the last left at
    # 1.9 s, 0.1 s before the end of playout
    assert now == pytest.approx(1.9)
    assert p.playout.underruns == 0
    assert p.send_lateness_s == pytest.approx([0.0] * 100, abs=1e-9)  # a punctual sleeper is never late


def test_lateness_counts_from_when_pacing_allowed_the_chunk_not_from_when_it_was_ready() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=100), origin=0.0)
    for i in range(6):
        p.queue(chunk(i), ready=0.0, first_of_step=i == 5)
    first = p.poll(0.0)
    assert len(first.sends) == 5 and first.wake_at == pytest.approx(0.02)
    late = p.poll(0.05)  # woke 30 ms after the sixth chunk was allowed (ready for 50 ms)
    assert len(late.sends) == 1
    assert p.send_lateness_s[-1] == pytest.approx(0.03)
    # a backend step's first chunk also records its latency and the part pacing did not ask for
    assert p.outbound_latency_s == pytest.approx([0.05]) and p.outbound_added_s == pytest.approx([0.03])


def test_a_chunk_sent_late_after_the_buffer_ran_dry_is_an_underrun() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.0), origin=0.0)
    p.queue(chunk(0), ready=0.0)
    p.poll(0.0)
    p.queue(chunk(1), ready=0.1)  # the first chunk finished playing at 0.02
    p.poll(0.1)
    assert p.playout.underruns == 1


def test_clear_drops_what_is_queued_and_flushes_what_twilio_had() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=2), origin=5.0)
    for i in range(10):
        p.queue(chunk(i), ready=5.0)
    burst = p.poll(5.0)
    assert kinds(burst) == "ccmccmc"
    p.clear(5.03)
    assert p.queued == 0 and p.poll(5.03).sends == []
    played = [c.played_samples for c in p.playout.chunks]
    assert played == [160, 80, 0, 0, 0]  # cut 30 ms in: the second chunk half played, the rest dropped
    assert p.playout.pending_marks == ["m1", "m2"]
    echo = p.on_mark_echo("m2", 5.04)
    assert echo is not None and echo.flushed and echo.echoed_at == pytest.approx(0.04)
    # audio after a clear starts a new run: not an underrun
    p.queue(chunk(10), ready=5.5)
    p.poll(5.5)
    assert p.playout.underruns == 0


def test_mark_echoes_recalibrate_the_playout_clock_on_the_pacers_origin() -> None:
    p = Pacer(PacingConfig(max_lead_s=0.1, jitter_buffer_s=0.0, mark_every=5), origin=100.0)
    for i in range(5):
        p.queue(chunk(i), ready=100.0)
    assert kinds(p.poll(100.0)) == "cccccm"
    echo = p.on_mark_echo("m1", 100.15)  # the audio ended at 0.1 s: 50 ms of path
    assert echo is not None and not echo.flushed and echo.error == pytest.approx(0.05)
    assert p.playout.delay == pytest.approx(0.05)
    assert p.playout.chunks[0].playout_start == pytest.approx(0.05)
    assert p.on_mark_echo("nope", 100.2) is None and p.playout.unknown_echoes == 1


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0.0, 0.2), st.integers(0, 8)), min_size=1, max_size=30),
    oversleep=st.lists(st.floats(0.0, 0.05), min_size=1, max_size=20),
    lead_ms=st.integers(40, 300),
    jitter_ms=st.integers(0, 100),
    mark_every=st.integers(1, 10),
)
def test_any_schedule_keeps_order_the_lead_limit_and_one_mark_per_n_chunks(
    steps: list[tuple[float, int]], oversleep: list[float], lead_ms: int, jitter_ms: int, mark_every: int
) -> None:
    cfg = PacingConfig(max_lead_s=lead_ms / 1000, jitter_buffer_s=jitter_ms / 1000, mark_every=mark_every)
    p = Pacer(cfg, origin=0.0)
    arrivals, t = [], 0.0
    for gap, n in steps:  # backend steps arriving at increasing times with n chunks each
        t += gap
        arrivals.append((t, n))
    total = sum(n for _, n in arrivals)
    now, k, seq, sent, since, wakes = 0.0, 0, 0, 0, 0, 0
    first_allowed = None
    while sent < total:
        while k < len(arrivals) and arrivals[k][0] <= now:
            for _ in range(arrivals[k][1]):
                p.queue(chunk(seq), ready=arrivals[k][0])
                seq += 1
            k += 1
        if p.queued and first_allowed is None:
            first_allowed = now + cfg.jitter_buffer_s
        burst = p.poll(now)
        for s in burst.sends:
            if isinstance(s, ChunkOut):
                # the jitter buffer holds it, but a wait under MIN_WAIT_S is not worth a wake-up: it goes now
                assert s.payload == chunk(sent) and now >= first_allowed - MIN_WAIT_S - 1e-9
                sent += 1
                since += 1
            else:
                assert since == mark_every  # a mark after every n-th chunk, never elsewhere
                since = 0
        assert p.playout.lead(now) <= cfg.max_lead_s + MIN_WAIT_S + 1e-9  # a wait that short sends now
        if sent == total:
            break
        nxt = [arrivals[k][0]] if k < len(arrivals) else []
        if burst.wake_at is not None:
            nxt.append(burst.wake_at + oversleep[wakes % len(oversleep)])
        wakes += 1
        assert nxt, "audio left queued with no wake-up"
        now = max(now, min(nxt))
    assert p.marks_sent == total // mark_every
    assert len(p.send_lateness_s) == total and all(x >= 0 for x in p.send_lateness_s)
