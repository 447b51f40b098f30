"""CodecStage and retire against a hand-written fake of rustymimi's channels, on clocks the test moves.

The truth is the fake's own record: how many frames it was given, when it answered, how much CPU the
test says the process spent. No Rust and no model here; the real threads are in test_moshi_backend.py.
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np
import pytest

from bridge.backends.mimi_stream import CodecStage, quiet_error_backtraces, retire

FRAME = np.zeros(1920, np.float32)


class FakeClocks:
    """A wall clock and a process-CPU clock that move only when the test says so."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def advance(self, wall_s: float, cpu_s: float) -> None:
        self.wall += wall_s
        self.cpu += cpu_s


class FakeThread:
    """rustymimi's channel pair: frames go in, answers come out when the test releases them."""

    def __init__(self) -> None:
        self.received = 0
        self.ready: deque[np.ndarray] = deque()

    def put(self, item: np.ndarray) -> None:
        self.received += 1

    def get(self) -> np.ndarray | None:
        return self.ready.popleft() if self.ready else None

    def answer(self, n: int = 1) -> None:
        self.ready.extend(FRAME for _ in range(n))


def stage(
    thread: FakeThread, clocks: FakeClocks | None = None, max_pending: int = 6, name: str = "decoder"
) -> CodecStage:
    clocks = clocks or FakeClocks()
    return CodecStage(
        name,
        thread.put,
        thread.get,
        dead_after_s=2.0,
        stalled_after_s=20.0,
        max_pending=max_pending,
        clock=lambda: clocks.wall,
        cpu_clock=lambda: clocks.cpu,
    )


def test_a_live_thread_starved_by_a_busy_machine_is_not_dead() -> None:
    clocks, thread = FakeClocks(), FakeThread()
    s = stage(thread, clocks)
    s.submit(FRAME)
    s.submit(FRAME)
    # 6 s of wall time, but other programs had the cores: this process got 0.9 s of CPU.
    clocks.advance(wall_s=6.0, cpu_s=0.9)
    assert s.stall() is None
    thread.answer()
    assert len(list(s.drain())) == 1 and s.pending == 1
    clocks.advance(wall_s=1.5, cpu_s=1.5)  # the clocks restart at the output
    assert s.stall() is None


def test_no_output_while_the_process_spends_cpu_is_dead_with_the_evidence() -> None:
    clocks, thread = FakeClocks(), FakeThread()
    s = stage(thread, clocks)
    for _ in range(3):
        s.submit(FRAME)
    clocks.advance(wall_s=2.5, cpu_s=1.9)  # not yet: 2 s are needed on both clocks
    assert s.stall() is None
    clocks.advance(wall_s=0.2, cpu_s=0.3)
    stall = s.stall()
    assert stall is not None and stall.dead
    assert stall.reason() == (
        "tokenizer_dead: the Mimi decoder thread returned nothing for 2.7 s while this process used "
        "2.2 s of CPU, with 3 frame(s) pending"
    )


def test_silence_on_the_wall_clock_alone_ends_it_as_stalled_not_dead() -> None:
    clocks, thread = FakeClocks(), FakeThread()
    s = stage(thread, clocks, name="encoder")
    s.submit(FRAME)
    clocks.advance(wall_s=19.0, cpu_s=0.2)
    assert s.stall() is None
    clocks.advance(wall_s=1.5, cpu_s=0.0)
    stall = s.stall()
    assert stall is not None and not stall.dead
    assert stall.reason().startswith("tokenizer_stalled: the Mimi encoder thread returned nothing for 20.5 s")
    assert "0.2 s of CPU" in stall.reason()


def test_an_idle_spell_with_nothing_pending_is_never_counted() -> None:
    clocks, thread = FakeClocks(), FakeThread()
    s = stage(thread, clocks)
    s.submit(FRAME)
    thread.answer()
    list(s.drain())
    clocks.advance(wall_s=60.0, cpu_s=30.0)  # nothing was owed: the model emitted no audio
    assert s.stall() is None
    s.submit(FRAME)
    assert s.stall() is None
    clocks.advance(wall_s=2.1, cpu_s=2.1)
    assert s.stall() is not None


def test_work_queued_is_bounded_and_the_rest_dropped_and_counted() -> None:
    thread = FakeThread()
    s = stage(thread, max_pending=3)
    accepted = [s.submit(FRAME) for _ in range(5)]
    assert accepted == [True, True, True, False, False]
    assert (thread.received, s.pending, s.dropped) == (3, 3, 2)
    thread.answer(2)
    assert len(list(s.drain())) == 2
    assert s.submit(FRAME) and thread.received == 4 and s.pending == 2
    with pytest.raises(ValueError, match="max_pending"):
        stage(thread, max_pending=0)


def test_retire_takes_every_queued_answer_before_letting_go() -> None:
    encoder, decoder = FakeThread(), FakeThread()
    stages = (stage(encoder, name="encoder"), stage(decoder))
    for _ in range(3):
        stages[0].submit(FRAME)
    stages[1].submit(FRAME)
    thread = retire(stages, after=None, wait_s=1.0)
    encoder.answer(3)
    decoder.answer(1)
    thread.join(timeout=10)
    assert not thread.is_alive() and thread.left == {}
    assert [s.pending for s in stages] == [0, 0]
    assert not encoder.ready and not decoder.ready  # every answer was taken while a receiver existed


def test_retire_waits_for_a_live_stage_beside_a_dead_one_and_then_lets_go() -> None:
    clocks, poisoned, live = FakeClocks(), FakeThread(), FakeThread()
    decoder, encoder = stage(poisoned, clocks), stage(live, clocks, name="encoder")
    decoder.submit(FRAME)
    clocks.advance(wall_s=3.0, cpu_s=3.0)  # the call ended because the decoder died
    assert decoder.stall() is not None
    encoder.submit(FRAME)
    encoder.submit(FRAME)
    thread = retire((encoder, decoder), after=None, wait_s=1.0)
    thread.join(timeout=0.3)
    assert thread.is_alive()  # the encoder is alive and owes two frames: its receiver must stay
    live.answer(2)
    thread.join(timeout=10)
    assert not thread.is_alive() and thread.left == {"decoder": 1}
    assert (encoder.pending, decoder.pending) == (0, 1) and not live.ready


def test_rust_error_backtraces_are_turned_off_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUST_LIB_BACKTRACE", raising=False)
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    quiet_error_backtraces()
    assert os.environ["RUST_LIB_BACKTRACE"] == "0"
    assert os.environ["RUST_BACKTRACE"] == "1"  # panics keep their backtraces
    monkeypatch.setenv("RUST_LIB_BACKTRACE", "1")
    quiet_error_backtraces()
    assert os.environ["RUST_LIB_BACKTRACE"] == "1"
