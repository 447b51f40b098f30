"""The test-run report as values: built from call documents, rendered by `orchestrator.report.text` / `.html`.

`build_report(docs, run_label)` groups calls by run and gives each call its checklist row (automatic
verdict beside any manual one; the manual one wins for display), its timeline of states and events in ms
since the call was created, and each run the p50/p95 of the latency and quality metrics across calls.

Pure: no I/O, no clock. Never raises on a partial document (a busy call has no audio, an old call has
no facts): missing evidence shows as missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.criteria import CRITERIA, evaluate
from orchestrator.lifecycle import TERMINAL_STATES
from orchestrator.settings import mask_number as _mask
from orchestrator.thresholds import Thresholds

# Metrics summarised across calls (p50/p95): the ones a person compares between runs.
SUMMARY_METRICS: tuple[str, ...] = (
    "model_load_s",
    "stream_connect_ms",
    "first_audio_ms",
    "first_audio_heard_ms",
    "response_latency_ms_p50",
    "response_latency_ms_max",
    "turns",
    "step_ms_p95",
    "echo_delay_ms",
    "echo_return_loss_db",
    "aec_erle_db",  # with AEC=on: what the canceller took out, and what echo the model still heard
    "residual_echo_return_loss_db",
    "backend_lag_ms_p50",  # the moshi-server backend: the round trip of one 80 ms frame
    "backend_path_added_ms",  # and its path's share of first audio (one Opus pass + half a ping)
    "barge_in_stop_ms",  # double talk: how long the model went on at the phone after the caller cut in
    "overlap_ms",
    "interruptions_by_caller",
    "interruptions_by_model",
    "inbound_gap_ms_total",
    "inbound_jitter_ms",
    "outbound_underruns",
    "inbound_rms_dbfs",
    "outbound_rms_dbfs",
    "inbound_clip_ratio",
    "outbound_clip_ratio",
    "call_duration_s",
)


@dataclass(frozen=True, slots=True)
class Cell:
    """One criterion of one call: what is shown, and both verdicts behind it."""

    criterion: str
    status: str  # shown: the manual verdict when there is one, else the automatic one
    evidence: str
    decided_by: str  # "manual" | "auto"
    auto_status: str
    auto_evidence: str
    auto_source: str  # "stored" (recorded when the call ended) | "computed" (by this report)
    manual_status: str | None = None
    manual_evidence: str | None = None


@dataclass(frozen=True, slots=True)
class TimelineItem:
    t_ms: float  # since the call was created
    kind: str  # "state" | "event"
    label: str
    detail: str
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class StateSpan:
    state: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class CallReport:
    id: str
    call_sid: str | None
    direction: str | None
    to: str
    from_: str
    state: str
    created_at: str | None
    duration_s: float | None
    end_reason: str | None
    backend: str | None
    cells: tuple[Cell, ...]
    timeline: tuple[TimelineItem, ...]
    spans: tuple[StateSpan, ...]
    stream_start_ms: float | None  # where analysis time 0 (stream start) lies on the timeline
    metrics: Mapping[str, Any] = field(default_factory=dict)
    analysis: Mapping[str, Any] = field(default_factory=dict)

    def cell(self, criterion: str) -> Cell | None:
        return next((c for c in self.cells if c.criterion == criterion), None)

    @property
    def verdict_source(self) -> str:
        """ "stored" (all recorded with the call), "computed" (all judged by this report) or "mixed"."""
        sources = {c.auto_source for c in self.cells}
        return sources.pop() if len(sources) == 1 else "mixed"

    def turn_latencies_ms(self) -> list[float]:
        return [float(t[2]) for t in self.analysis.get("turns") or [] if len(t) >= 3 and t[2] is not None]


@dataclass(frozen=True, slots=True)
class MetricSummary:
    name: str
    n: int
    p50: float
    p95: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class RunReport:
    label: str
    calls: tuple[CallReport, ...]
    summaries: tuple[MetricSummary, ...]
    counts: Mapping[str, Mapping[str, int]]  # criterion -> status -> number of calls

    def first_audio_heard_ms(self) -> list[tuple[str, float]]:
        return [
            (c.id, v) for c in self.calls if (v := _number(c.metrics.get("first_audio_heard_ms"))) is not None
        ]

    def response_latencies_ms(self) -> list[tuple[str, float]]:
        """Every turn of every call; a call without per-turn data contributes its p50."""
        out: list[tuple[str, float]] = []
        for c in self.calls:
            turns = c.turn_latencies_ms()
            if not turns and (p50 := _number(c.metrics.get("response_latency_ms_p50"))) is not None:
                turns = [p50]
            out.extend((c.id, v) for v in turns)
        return out


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    runs: tuple[RunReport, ...]
    thresholds: Thresholds
    criteria: tuple[str, ...] = CRITERIA

    @property
    def n_calls(self) -> int:
        return sum(len(r.calls) for r in self.runs)


def parse_at(value: object) -> datetime | None:
    """ISO-8601 as the store writes it ('...Z' included, which Python 3.10 does not parse)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def mask_number(number: object) -> str:
    return _mask(number, empty="")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _cells(doc: Mapping[str, Any], thresholds: Thresholds) -> tuple[Cell, ...]:
    stored: dict[tuple[str, str], Mapping[str, Any]] = {}
    for check in doc.get("checks") or []:  # later checks replace earlier ones
        who = "manual" if check.get("decided_by") == "manual" else "auto"
        stored[(str(check.get("criterion")), who)] = check
    computed = {v.criterion: v for v in evaluate(doc, thresholds)}
    cells = []
    for name in CRITERIA:
        auto, manual = stored.get((name, "auto")), stored.get((name, "manual"))
        if auto is not None:
            a_status, a_evidence, source = str(auto.get("status")), str(auto.get("evidence") or ""), "stored"
        else:
            a_status, a_evidence, source = computed[name].status, computed[name].evidence, "computed"
        m_status = str(manual.get("status")) if manual else None
        m_evidence = str(manual.get("evidence") or "") if manual else None
        cells.append(
            Cell(
                criterion=name,
                status=m_status or a_status,
                evidence=m_evidence if m_evidence is not None else a_evidence,
                decided_by="manual" if manual else "auto",
                auto_status=a_status,
                auto_evidence=a_evidence,
                auto_source=source,
                manual_status=m_status,
                manual_evidence=m_evidence,
            )
        )
    return tuple(cells)


def _timeline(doc: Mapping[str, Any]) -> tuple[tuple[TimelineItem, ...], tuple[StateSpan, ...], float | None]:
    call = doc.get("call") or {}
    stamps = [parse_at(t.get("at")) for t in doc.get("transitions") or []]
    stamps += [parse_at(e.get("at")) for e in doc.get("events") or []]
    origin = parse_at(call.get("created_at")) or min((s for s in stamps if s), default=None)

    def rel(value: object) -> float | None:
        at = parse_at(value)
        return None if at is None or origin is None else (at - origin).total_seconds() * 1000

    items: list[TimelineItem] = []
    points: list[tuple[float, str]] = []
    for t in doc.get("transitions") or []:
        if (ms := rel(t.get("at"))) is None:
            continue
        items.append(
            TimelineItem(ms, "state", f"{t.get('from') or '·'} → {t.get('to')}", str(t.get("trigger") or ""))
        )
        points.append((ms, str(t.get("to"))))
    stream_start = next((ms for ms, state in points if state == "streaming"), None)
    for e in doc.get("events") or []:
        if (ms := rel(e.get("at"))) is None:
            continue
        accepted = bool(e.get("accepted", True))
        detail = "" if accepted else f"rejected: {e.get('reason') or 'no reason'}"
        items.append(TimelineItem(ms, "event", f"{e.get('source')}: {e.get('type')}", detail, accepted))
        if stream_start is None and e.get("source") == "media" and e.get("type") == "start" and accepted:
            stream_start = ms
    items.sort(key=lambda i: (i.t_ms, i.kind != "state"))
    points.sort()
    end = rel(call.get("ended_at"))
    last = max([i.t_ms for i in items] + ([end] if end is not None else []), default=0.0)
    spans = tuple(
        StateSpan(
            state, ms, points[k + 1][0] if k + 1 < len(points) else (ms if state in TERMINAL_STATES else last)
        )
        for k, (ms, state) in enumerate(points)
    )
    return tuple(items), spans, stream_start


def _call_report(doc: Mapping[str, Any], thresholds: Thresholds) -> CallReport:
    call = doc.get("call") or {}
    items, spans, stream_start = _timeline(doc)
    created, ended = parse_at(call.get("created_at")), parse_at(call.get("ended_at"))
    duration = (ended - created).total_seconds() if created and ended else None
    return CallReport(
        id=str(call.get("id") or call.get("call_sid") or "?"),
        call_sid=call.get("call_sid"),
        direction=call.get("direction"),
        to=mask_number(call.get("to")),
        from_=mask_number(call.get("from")),
        state=str(call.get("state") or "unknown"),
        created_at=call.get("created_at"),
        duration_s=duration,
        end_reason=call.get("end_reason"),
        backend=(doc.get("facts") or {}).get("backend") or call.get("backend"),
        cells=_cells(doc, thresholds),
        timeline=items,
        spans=spans,
        stream_start_ms=stream_start,
        metrics=dict(doc.get("metrics") or {}),
        analysis=dict(doc.get("analysis") or {}),
    )


def _summaries(calls: Sequence[CallReport]) -> tuple[MetricSummary, ...]:
    out = []
    for name in SUMMARY_METRICS:
        values = [v for c in calls if (v := _number(c.metrics.get(name))) is not None]
        if values:
            p50, p95 = percentile(values, 50), percentile(values, 95)
            out.append(MetricSummary(name, len(values), p50, p95, min(values), max(values)))
    return tuple(out)


def build_report(
    docs: Sequence[Mapping[str, Any]], run_label: str | None = None, thresholds: Thresholds | None = None
) -> Report:
    """Calls grouped by run (in first-seen order); with `run_label`, only that run's calls.

    Automatic verdicts are the stored ones; a call without them (an old call) is judged here with
    `thresholds`, and the cell says so (`auto_source == "computed"`).
    """
    th = thresholds if thresholds is not None else Thresholds()
    groups: dict[str, list[CallReport]] = {}
    for doc in docs:
        run = (doc.get("call") or {}).get("run")
        if run_label is not None and run != run_label:
            continue
        groups.setdefault(str(run) if run else "(no run)", []).append(_call_report(doc, th))
    runs = []
    for label, calls in groups.items():
        calls.sort(key=lambda c: c.created_at or "")
        counts = {
            name: {
                s: sum(1 for c in calls if (cell := c.cell(name)) and cell.status == s)
                for s in ("pass", "fail", "unknown")
            }
            for name in CRITERIA
        }
        runs.append(RunReport(label, tuple(calls), _summaries(calls), counts))
    title = f"Test run {run_label}" if run_label else "Test runs"
    return Report(title=title, runs=tuple(runs), thresholds=th)
