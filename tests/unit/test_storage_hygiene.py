"""Pure parts of what the store keeps: DTMF batches, redaction, recordings retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.redact import personal_data_masked, without_secrets
from orchestrator.retention import Recording, plan_removals, prune
from orchestrator.web.dtmf import DtmfBatch

DAY = 86400.0
NOW = 1_800_000_000.0


def test_dtmf_digits_wait_for_their_window_and_a_flood_keeps_only_its_count() -> None:
    batch = DtmfBatch(window_s=1.0, max_digits=4)
    assert not batch.due(0.0) and batch.take() is None
    for i, digit in enumerate("123"):
        batch.add(digit, "inbound_track", 0.1 * i)
    assert not batch.due(0.9) and batch.due(1.0)  # the window runs from the first digit
    assert batch.take() == {"digits": "123", "count": 3, "track": "inbound_track"}
    assert batch.take() is None  # taken: a new batch starts empty
    for i in range(10_000):
        batch.add("9", "inbound_track", 5.0 + i * 1e-5)
    assert batch.take() == {"digits": "9999", "count": 10_000, "track": "inbound_track", "dropped": 9_996}


def test_secrets_are_replaced_wherever_they_sit() -> None:
    payload = {
        "CallSid": "CA1",
        "CallToken": "%7B%22parentCallInfoToken...",
        "nested": {"token": "t0k"},
        "items": [{"AuthToken": "x"}],
        "token": "",
    }
    assert without_secrets(payload) == {
        "CallSid": "CA1",
        "CallToken": "(redacted)",
        "nested": {"token": "(redacted)"},
        "items": [{"AuthToken": "(redacted)"}],
        "token": "",
    }


def test_personal_data_masked_for_sharing() -> None:
    doc = {
        "call": {"to": "+14155550100", "from": "+15005550006", "state": "completed"},
        "events": [
            {
                "payload": {
                    "From": "+14155550100",
                    "Caller": "+14155550100",
                    "CallerCity": "SAN FRANCISCO",
                    "FromZip": "94105",
                    "CallerName": "Jane Doe",
                    "CallerCountry": "US",
                    "StirPassportToken": "eyJhbGciOi...",
                }
            }
        ],
        "checks": [{"evidence": "answered: +14155550100 rang 2 s"}],
    }
    out = personal_data_masked(doc)
    assert out["call"] == {"to": "…0100", "from": "…0006", "state": "completed"}
    assert out["events"][0]["payload"] == {
        "From": "…0100",
        "Caller": "…0100",
        "CallerCity": "(redacted)",
        "FromZip": "(redacted)",
        "CallerName": "(redacted)",
        "CallerCountry": "US",
        "StirPassportToken": "(redacted)",
    }
    assert out["checks"][0]["evidence"] == "answered: …0100 rang 2 s"
    assert doc["call"]["to"] == "+14155550100"  # the input is left as it was


def rec(name: str, age_days: float, mb: float) -> Recording:
    return Recording(Path(f"/r/c_{name:0>16}.wav"), int(mb * 2**20), NOW - age_days * DAY)


@pytest.mark.parametrize(
    ("max_age_days", "max_total_mb", "gone"),
    [
        (30, 0, ["1"]),  # only the one older than 30 days
        (0, 0, []),  # both limits off
        (0, 2.5, ["1", "2"]),  # 4 MB in all: the two oldest go to get under 2.5 MB
        (30, 2.5, ["1", "2"]),  # the old one by age, then one more by size
        (0, 100, []),
    ],
)
def test_plan_removals(max_age_days: float, max_total_mb: float, gone: list[str]) -> None:
    files = [rec("1", 40, 1), rec("2", 10, 1), rec("3", 5, 1), rec("4", 1, 1)]
    plan = plan_removals(files, now=NOW, max_age_days=max_age_days, max_total_mb=max_total_mb)
    assert [r.recording.call_id[-1] for r in plan] == gone


def test_live_and_fresh_recordings_are_never_planned_for_removal() -> None:
    live, fresh = rec("1", 40, 1), Recording(Path("/r/c_" + "2" * 16 + ".wav"), 2**20, NOW - 10)
    plan = plan_removals([live, fresh], now=NOW, max_age_days=1, max_total_mb=0.5, keep={live.call_id})
    assert plan == []


def test_prune_touches_only_our_own_recordings(tmp_path: Path) -> None:
    ours_old = tmp_path / ("c_" + "a" * 16 + ".wav")
    ours_new = tmp_path / ("c_" + "b" * 16 + ".wav")
    theirs = tmp_path / "notes.wav"
    for p in (ours_old, ours_new, theirs):
        p.write_bytes(b"\0" * 100)
        os.utime(p, (NOW - 40 * DAY, NOW - 40 * DAY))
    os.utime(ours_new, (NOW - DAY, NOW - DAY))
    done = prune(tmp_path, max_age_days=30, max_total_mb=0, now=NOW)
    assert [r.recording.path for r in done] == [ours_old]
    assert done[0].why == "older than 30 days"
    assert not ours_old.exists() and ours_new.exists() and theirs.exists()
    assert prune(tmp_path / "missing", max_age_days=30, max_total_mb=0) == []
