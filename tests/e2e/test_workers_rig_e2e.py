"""A worker in the rig (server, emulator, echo backend in one process, SQLite): a call placed over its
database claims a session through the workers table; one claimed on another worker that streams here
anyway (the two share a public URL: the misconfiguration the README warns of) moves its claim to the
worker that holds the stream, so the sessions counted are the sessions in use."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator.emulator import CallOptions, Faults
from orchestrator.rig import RIG_PUBLIC_URL, LocalRig, rig_settings
from orchestrator.store import iso, utcnow


async def test_a_call_streaming_to_another_worker_moves_its_claim_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = rig_settings(tmp_path, backend="echo", greeting="", worker="me", worker_capacity=1)
    async with LocalRig(settings, tmp_path / "truth") as rig:
        store = rig.service.store
        now = iso(utcnow())
        store.put_worker(  # up, more sessions free than `me`, and (wrongly) the same public URL
            "twin", public_url=RIG_PUBLIC_URL, backend="echo", capacity=3, host="h", pid=1,
            started_at=now, heartbeat_at=now,
        )  # fmt: skip
        rig.emulator.set_defaults(CallOptions(ring_s=0.1, faults=Faults(hangup_after_stream_s=1.0)))
        with caplog.at_level(logging.WARNING, logger="orchestrator.web.media"):
            row = await rig.place()
            assert store.get_call(row["id"])["worker"] == "twin"  # the claim: the freest worker
            doc = await rig.settled(row["id"])
        ended = store.get_call(row["id"])
        assert ended["state"] == "completed" and ended["stream_sid"] and doc["call"]["worker"] == "me"
        assert ended["worker"] == "me"  # the stream came here: so did the claim
        assert any("claimed on twin streams to worker me" in r.getMessage() for r in caplog.records)
        claimed = {w["name"]: w["claimed"] for w in store.list_workers()}
        assert claimed == {"me": 0, "twin": 0}  # over: nothing held
