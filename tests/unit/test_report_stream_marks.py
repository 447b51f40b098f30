"""Where the call page's stream events come from (orchestrator.media_timeline), against evidence built
here with known losses, transit, marks and send times."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from orchestrator.media_timeline import stream_marks

TRANSIT_S = 0.030


def _arrivals(n: int, lost: set[int], extra_delay: dict[int, float] | None = None) -> np.ndarray:
    """Frame k (from 0) carries media [20k, 20k+20) ms and, causally, arrives once its last sample exists."""
    rows = [
        ((k + 1) * 0.020 + TRANSIT_S + (extra_delay or {}).get(k, 0.0), k * 20.0)
        for k in range(n)
        if k not in lost
    ]
    return np.array(rows)


def _evidence(arrivals: np.ndarray, sends: list[tuple[float, float, int]], marks: list) -> SimpleNamespace:
    return SimpleNamespace(
        inbound_arrivals=arrivals, sends=np.array(sends, dtype=float).reshape(-1, 3), marks=marks
    )


def test_gaps_are_the_frames_that_never_came_placed_on_our_clock() -> None:
    lost = {5, 6, 40}
    out = stream_marks(_evidence(_arrivals(100, lost), [], []))
    assert out["media_offset_s"] == TRANSIT_S and out["inbound_frames"] == 97
    assert out["gaps"] == [[round(0.1 + TRANSIT_S, 3), 100.0, 40.0], [round(0.8 + TRANSIT_S, 3), 800.0, 20.0]]
    assert stream_marks(_evidence(_arrivals(10, {0}), [], []))["gaps"] == [[TRANSIT_S, 0.0, 20.0]]


def test_jitter_is_zero_on_a_steady_line_and_rises_where_a_frame_was_late() -> None:
    steady = stream_marks(_evidence(_arrivals(100, set()), [], []))["jitter"]
    # 100 frames arrive from 0.05 to 2.03 s: five half-second windows
    assert [t for t, _ in steady] == [0.0, 0.5, 1.0, 1.5, 2.0] and all(j == 0.0 for _, j in steady)
    late = stream_marks(_evidence(_arrivals(100, set(), {60: 0.016}), [], []))["jitter"]
    # frame 60 (arriving at 1.25 s) is 16 ms late: |D| = 16 then 16 ms, J = 16/16 = 1 ms, then 1 + 15/16
    assert dict(late)[1.0] == round(1 + (16 - 1) / 16, 2) and dict(late)[0.5] == 0.0


def test_marks_clears_and_underruns_come_from_the_send_record() -> None:
    sends = [(0.02 * k, 0.1 + 0.02 * k, 0) for k in range(10)]  # 10 chunks back to back
    sends += [(0.35, 0.35, 0)]  # sent 150 ms after the run's audio ended at 0.20: an underrun
    sends += [(3.0, 3.0, 0)]  # 2.63 s later: the sender was idle, not an underrun
    marks = [("a", 0.1, 0.3, False), ("b", 0.2, 1.5, True), ("c", 0.25, 1.52, True), ("d", 3.0, None, False)]
    out = stream_marks(_evidence(_arrivals(5, set()), sends, marks))
    assert out["underruns"] == [[0.2, 150.0]]
    assert out["marks"] == [[0.1, 0.3, 0], [0.2, 1.5, 1], [0.25, 1.52, 1], [3.0, None, 0]]
    assert out["clears"] == [1.5]  # two marks flushed 20 ms apart: one clear


def test_an_empty_call_gives_empty_tracks() -> None:
    out = stream_marks(_evidence(np.empty((0, 2)), [], []))
    assert out == {
        "media_offset_s": 0.0,
        "inbound_frames": 0,
        "gaps": [],
        "jitter": [],
        "marks": [],
        "clears": [],
        "underruns": [],
    }
