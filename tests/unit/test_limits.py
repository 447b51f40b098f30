"""Connection slots, shedding order and rate-limited accept errors (orchestrator.web.limits), no sockets."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from orchestrator.web import limits
from orchestrator.web.limits import AcceptErrorLog, ConnectionGuard, Phase, connection_cap


@pytest.mark.parametrize(
    ("configured", "soft", "cap"),
    [
        (None, 1024, 640),  # an eighth kept back, and twice the backlog (128)
        (0, 1024, 640),  # 0 reads as "from the limit"
        (100, 1024, 100),
        (5000, 1024, 640),  # never above the limit less the reserve
        (None, 256, 128),  # at least 64 kept back, and 2 x 32
        (None, 40, 8),  # a tiny limit still serves a few
        (None, 1_048_576, 1_048_576 - 131_072 - 256),
    ],
)
def test_connection_cap_stays_below_the_file_limit(configured: int | None, soft: int, cap: int) -> None:
    assert connection_cap(configured, soft) == cap


@pytest.mark.parametrize(("soft", "backlog"), [(256, 32), (1024, 128), (4096, 128), (20000, 128)])
def test_the_accept_burst_fits_in_the_reserve(soft: int, backlog: int) -> None:
    assert limits.listen_backlog(soft) == backlog
    # what may be open beyond the cap (accepted, not yet admitted; shed, not yet closed) plus ~40 the
    # server holds anyway stays under the limit
    assert connection_cap(None, soft) + 2 * backlog + 40 <= soft
    assert soft - connection_cap(None, soft) - 2 * backlog >= 64  # and the base reserve is still there


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def guard(cap: int, streams: int = 0) -> ConnectionGuard:
    return ConnectionGuard(
        cap=cap, header_timeout_s=10, keepalive_timeout_s=10, body_timeout_s=10, streams=lambda: streams
    )


def fill(g: ConnectionGuard, phases: list[Phase]) -> list[tuple[object, Any]]:
    out = []
    for i, phase in enumerate(phases):
        handler, transport = object(), FakeTransport()
        conn = g.admit(handler, transport)  # type: ignore[arg-type]
        assert conn is not None
        conn.phase, conn.since = phase, float(i)
        out.append((handler, transport))
    return out


def test_when_full_the_longest_idle_connection_goes_first_then_the_longest_reading_one() -> None:
    g = guard(4)
    held = fill(g, [Phase.BUSY, Phase.READING, Phase.IDLE, Phase.IDLE])
    assert g.admit(object(), FakeTransport()) is not None  # type: ignore[arg-type]
    assert [t.aborted for _, t in held] == [False, False, True, False]  # the older idle one
    assert g.admit(object(), FakeTransport()) is not None  # type: ignore[arg-type]
    assert [t.aborted for _, t in held] == [False, False, True, True]
    # now: busy, reading, and the two new (reading, since now): the oldest reading one goes
    assert g.admit(object(), FakeTransport()) is not None  # type: ignore[arg-type]
    assert held[1][1].aborted and not held[0][1].aborted
    assert g.counts["shed_idle"] == 2 and g.counts["shed_reading"] == 1
    assert len(g.conns) == 4


def test_busy_connections_are_never_shed_a_new_one_is_refused() -> None:
    g = guard(2)
    held = fill(g, [Phase.BUSY, Phase.BUSY])
    assert g.admit(object(), FakeTransport()) is None  # type: ignore[arg-type]
    assert g.counts["refused"] == 1 and not any(t.aborted for _, t in held)


def test_live_calls_take_descriptors_from_the_connection_limit() -> None:
    assert guard(100, streams=10).limit == 100 - limits.FDS_PER_STREAM * 10
    assert guard(4, streams=10).limit == 1


def test_sweep_closes_reading_and_idle_connections_past_their_deadlines_only() -> None:
    g = ConnectionGuard(cap=10, header_timeout_s=5, keepalive_timeout_s=8, body_timeout_s=10)
    held = fill(g, [Phase.READING, Phase.IDLE, Phase.BUSY, Phase.READING])  # since 0, 1, 2, 3
    g.sweep(
        now=7.5
    )  # reading since 0 is 7.5 s old (> 5); reading since 3 is 4.5 s; idle since 1 is 6.5 s (< 8)
    assert [t.aborted for _, t in held] == [True, False, False, False]
    g.sweep(now=100.0)
    assert [t.aborted for _, t in held] == [True, True, False, True]  # busy is never timed out here
    assert g.counts["header_timeouts"] == 2 and g.counts["idle_timeouts"] == 1
    assert g.phases() == {"reading": 0, "busy": 1, "idle": 0}


def test_accept_errors_are_logged_once_per_interval_with_a_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock[0])
    passed: list[dict[str, Any]] = []
    handler = AcceptErrorLog(lambda loop, ctx: passed.append(ctx), interval_s=10)
    emfile = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }
    caplog.set_level(logging.ERROR, logger="orchestrator.web.limits")
    for _ in range(1000):
        handler(None, emfile)  # type: ignore[arg-type]
        clock[0] += 0.001
    assert len(caplog.records) == 1 and "Too many open files" in caplog.records[0].getMessage()
    clock[0] += 10
    handler(None, emfile)  # type: ignore[arg-type]
    assert len(caplog.records) == 2 and "(999 more in the last 11 s)" in caplog.records[1].getMessage()
    other = {"message": "Task exception was never retrieved", "exception": ValueError("x")}
    handler(None, other)  # type: ignore[arg-type]
    assert passed == [other]  # everything else reaches the handler that was there before
