"""The PostgreSQL store's event-side rows: events and their dedupe claims, transitions, metrics, checks,
the analysis and the transcript. Same SQL meaning and row shapes as the SQLite `Store`'s methods of the
same names (see orchestrator.store_pg for the whole contract). No business rules here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.store import iso, utcnow
from orchestrator.store_pg_base import PgBase

__all__ = ["PgEventRows"]

_EARLIER_COUNTED = (
    "SELECT 1 FROM events WHERE dedupe_key = %s AND id < %s "
    "AND (reason IS NULL OR (reason NOT LIKE 'bad signature%%' AND reason NOT LIKE 'error:%%')) LIMIT 1"
)
_EARLIER_OR_CLAIM = (
    f"WITH earlier AS ({_EARLIER_COUNTED}), claim AS (INSERT INTO dedupe_claims (dedupe_key, event_id) "
    "SELECT %s, %s WHERE NOT EXISTS (SELECT 1 FROM earlier) ON CONFLICT (dedupe_key) DO NOTHING "
    "RETURNING event_id) SELECT (SELECT count(*) FROM earlier), (SELECT count(*) FROM claim)"
)
_CLAIM_HOLDER = "SELECT c.event_id, e.reason FROM dedupe_claims c JOIN events e ON e.id = c.event_id WHERE c.dedupe_key = %s"


class PgEventRows(PgBase):
    """Events, transitions, metrics, checks, analysis, transcript."""

    def insert_event(
        self,
        *,
        source: str,
        type: str,
        at: datetime,
        payload: dict[str, Any],
        call_id: str | None = None,
        call_sid: str | None = None,
        dedupe_key: str | None = None,
    ) -> int:
        row = self._one(
            "INSERT INTO events (call_id, call_sid, source, type, at, dedupe_key, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [call_id, call_sid, source, type, iso(at), dedupe_key, json.dumps(payload, default=str)],
        )
        assert row is not None
        return int(row[0])

    def judge_event(self, event_id: int, *, accepted: bool, reason: str | None, call_id: str | None) -> None:
        self._exec(
            "UPDATE events SET accepted = %s, reason = %s, call_id = COALESCE(call_id, %s) WHERE id = %s",
            [int(accepted), reason, call_id, event_id],
        )

    def dedupe_seen(self, key: str, before_id: int) -> bool:
        """Whether an event before `before_id` counts under `key` (as in SQLite), or another event holds
        the key's claim. Claiming waits for a transaction that claimed it first and has not ended."""
        # one round trip: an earlier counted event, else the claim (made unless one exists)
        earlier, claimed = self._one(_EARLIER_OR_CLAIM, [key, before_id, key, before_id]) or (0, 0)
        if earlier:
            return True
        if claimed:
            return False
        for _ in range(8):  # each lap: a claim that another process moved meanwhile
            holder = self._one(_CLAIM_HOLDER, [key])
            if holder is None or int(holder[0]) == before_id:
                return False
            if holder[1] is None or not str(holder[1]).startswith(("bad signature", "error:")):
                return True
            # the holder was judged later as a bad signature or an error: it does not count (as in
            # SQLite), so this event takes the claim over, if nobody else did first
            moved = self._one(
                "UPDATE dedupe_claims SET event_id = %s WHERE dedupe_key = %s AND event_id = %s "
                "RETURNING event_id",
                [before_id, key, holder[0]],
            )
            if moved is not None:
                return False
        return True

    def record_transition(
        self,
        call_id: str,
        *,
        from_state: str,
        to_state: str,
        trigger: str,
        at: datetime,
        event_id: int | None,
    ) -> None:
        self._exec(
            "INSERT INTO transitions (call_id, from_state, to_state, trigger, at, event_id) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [call_id, from_state, to_state, trigger, iso(at), event_id],
        )

    def events_for(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events WHERE call_id = %s"
        args: list[Any] = [call["id"]]
        if call.get("call_sid"):
            sql += " OR (call_id IS NULL AND call_sid = %s)"
            args.append(call["call_sid"])
        return self._rows(sql + " ORDER BY id", args)

    def transitions_for(self, call_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM transitions WHERE call_id = %s ORDER BY id", [call_id])

    # -- metrics, checks, analysis ------------------------------------------------------------------

    def put_metrics(
        self, call_id: str, metrics: Mapping[str, float | None], units: Mapping[str, str]
    ) -> None:
        now = iso(utcnow())
        rows = [(call_id, k, v, units.get(k), now) for k, v in metrics.items() if v is not None]
        if rows:
            self._many(
                "INSERT INTO metrics (call_id, name, value, unit, at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (call_id, name) DO UPDATE SET value = excluded.value, unit = excluded.unit, "
                "at = excluded.at",
                rows,
            )

    def metrics_for(self, call_id: str) -> dict[str, float]:
        return {
            r["name"]: r["value"]
            for r in self._rows("SELECT name, value FROM metrics WHERE call_id = %s", [call_id])
        }

    def metric_units_for(self, call_id: str) -> dict[str, str]:
        rows = self._rows("SELECT name, unit FROM metrics WHERE call_id = %s AND unit IS NOT NULL", [call_id])
        return {r["name"]: r["unit"] for r in rows}

    def add_check(
        self,
        call_id: str,
        criterion: str,
        status: str,
        evidence: str,
        decided_by: str,
        note: str | None = None,
    ) -> None:
        with self._atomic():
            if decided_by == "auto":
                self._exec(
                    "DELETE FROM checks WHERE call_id = %s AND criterion = %s AND decided_by = 'auto'",
                    [call_id, criterion],
                )
            self._exec(
                "INSERT INTO checks (call_id, criterion, status, evidence, decided_by, note, at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [call_id, criterion, status, evidence, decided_by, note, iso(utcnow())],
            )

    def checks_for(self, call_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM checks WHERE call_id = %s ORDER BY id", [call_id])

    def put_analysis(self, call_id: str, data: dict[str, Any]) -> None:
        self._exec(
            "INSERT INTO call_analysis (call_id, data, at) VALUES (%s, %s, %s) "
            "ON CONFLICT (call_id) DO UPDATE SET data = excluded.data, at = excluded.at",
            [call_id, json.dumps(data, default=float), iso(utcnow())],
        )

    def analysis_for(self, call_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT data FROM call_analysis WHERE call_id = %s", [call_id])
        return json.loads(row[0]) if row else None

    def add_transcript(self, call_id: str, pieces: list[tuple[float, str]]) -> None:
        if pieces:
            self._many(
                "INSERT INTO transcript (call_id, at_ms, text) VALUES (%s, %s, %s)",
                [(call_id, t, s) for t, s in pieces],
            )

    def transcript_for(self, call_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT at_ms, text FROM transcript WHERE call_id = %s ORDER BY id", [call_id])
