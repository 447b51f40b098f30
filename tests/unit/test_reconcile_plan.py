"""The reconciliation rules (`orchestrator.reconcile.plan`): pure, one case per row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.reconcile import CarrierAnswer, plan
from orchestrator.store import iso
from orchestrator.twilio_rest import CarrierCall

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
ENDED = NOW - timedelta(minutes=3)
SID = "CA" + "1" * 32


def call(state: str, age_s: float = 60.0) -> dict[str, str]:
    return {
        "id": "c_" + "0" * 16,
        "call_sid": SID,
        "state": state,
        "created_at": iso(NOW - timedelta(seconds=age_s)),
    }


def carrier(status: str, end: datetime | None = None) -> CarrierAnswer:
    return CarrierAnswer(CarrierCall(SID, status, NOW - timedelta(minutes=4), end, 60.0 if end else None))


def steps(state: str, answer: CarrierAnswer, **kw: object) -> list[tuple[str, str | None]]:
    return [
        (s.type, s.detail)
        for s in plan(
            call(state, **kw),
            answer,
            now=NOW,
            max_call_seconds=300,  # type: ignore[arg-type]
            last_unsettled_why=None,
        )
    ]


@pytest.mark.parametrize("state", ["queued", "ringing", "in-progress", "streaming"])
def test_a_call_the_carrier_says_ended_is_settled_at_the_carriers_end_time(state: str) -> None:
    [step] = plan(call(state), carrier("completed", ENDED), now=NOW, max_call_seconds=300)
    assert step.type == "completed" and step.at == ENDED
    assert step.detail == f"reconciled: the carrier reports completed, ended {iso(ENDED)}"
    assert step.payload["end_time"] == iso(ENDED) and step.payload["carrier_status"] == "completed"


def test_an_end_without_an_end_time_is_settled_now() -> None:
    [step] = plan(call("ringing"), carrier("busy"), now=NOW, max_call_seconds=300)
    assert (step.type, step.at, step.detail) == ("busy", None, "reconciled: the carrier reports busy")


@pytest.mark.parametrize(
    ("state", "said", "expected"),
    [
        (
            "streaming",
            "in-progress",
            ["stream_lost"],
        ),  # the stream died with the old process; the call goes on
        ("queued", "in-progress", ["in-progress"]),  # the answered callback was lost
        ("queued", "ringing", ["ringing"]),
        ("ringing", "ringing", []),  # nothing new: asked again next round
        ("in-progress", "in-progress", []),
        ("in-progress", "ringing", []),  # never backwards
    ],
)
def test_a_call_the_carrier_says_is_live(state: str, said: str, expected: list[str]) -> None:
    assert [t for t, _ in steps(state, carrier(said))] == expected


def test_a_stream_already_stopped_is_not_lost_again() -> None:
    # forward only: a call stays `streaming` after its stream stopped; that stop is not a loss
    ended = plan(call("streaming"), carrier("in-progress"), now=NOW, max_call_seconds=300, stream_ended=True)
    assert ended == []
    unsure = plan(
        call("streaming"), CarrierAnswer(None, "404"), now=NOW, max_call_seconds=300, stream_ended=True
    )
    assert [s.type for s in unsure] == ["unsettled"]


def test_when_the_carrier_cannot_say_the_call_is_marked_with_why_once_per_reason() -> None:
    no = CarrierAnswer(None, "carrier unreachable: ConnectionError")
    [step] = plan(call("in-progress"), no, now=NOW, max_call_seconds=300)
    assert step.type == "unsettled" and step.payload == {
        "found_state": "in-progress",
        "why": "carrier unreachable: ConnectionError",
    }
    same = plan(
        call("in-progress"),
        no,
        now=NOW,
        max_call_seconds=300,
        last_unsettled_why="carrier unreachable: ConnectionError",
    )
    assert same == []  # already said: not one more row per round
    other = plan(
        call("in-progress"),
        CarrierAnswer(None, "404"),
        now=NOW,
        max_call_seconds=300,
        last_unsettled_why="carrier unreachable: ConnectionError",
    )
    assert [s.type for s in other] == ["unsettled"]
    streaming = plan(call("streaming"), no, now=NOW, max_call_seconds=300)
    assert [s.type for s in streaming] == ["stream_lost", "unsettled"]


def test_past_max_call_seconds_plus_grace_an_unanswerable_call_is_interrupted_with_why() -> None:
    no = CarrierAnswer(None, "carrier refused to fetch: 20404 not found")
    assert steps("ringing", no, age_s=300 + 599) == [("unsettled", None)]
    [(kind, detail)] = steps("ringing", no, age_s=300 + 601)
    assert kind == "interrupted"
    assert detail == (
        "interrupted: still ringing past MAX_CALL_SECONDS + 600 s, and the carrier could not say "
        "how it ended (carrier refused to fetch: 20404 not found)"
    )
    # the carrier's own answer wins over age: a long call that is still up stays up
    assert steps("in-progress", carrier("in-progress"), age_s=10_000) == []


def test_a_terminal_call_is_left_alone() -> None:
    assert steps("completed", carrier("failed")) == []
