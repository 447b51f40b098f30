"""The metric names an expectation may bound: the ones the product records, and nothing else.

Bounding a name the product never records would be an expectation that can never be met (or, worse,
one a typo turns into a silent failure), so the parser refuses it and suggests the closest names.
The list is the analysis's (bridge/analysis.py), the call-level ones (orchestrator/evaluation.py), the
remote backend's evidence and the scenario measurements; a unit test holds it to what `analyse` records.
"""

from __future__ import annotations

import difflib

# bridge/analysis.py: what the end-of-call analysis records (some only when they apply: echo delay when
# echo is detected, step times with a model, the canceller's figures with AEC on)
ANALYSIS = (
    "first_audio_ms",
    "first_audio_heard_ms",
    "turns",
    "response_latency_ms_p50",
    "response_latency_ms_max",
    "echo_detected",
    "echo_delay_ms",
    "echo_return_loss_db",
    "echo_peak",
    "echo_confidence",
    "echo_path_z",
    "echo_absent_ratio",
    "echo_segments_used",
    "echo_segments_flagged",
    "residual_echo_detected",
    "residual_echo_return_loss_db",
    "aec_erle_db",
    "aec_single_talk_s",
    "step_ms_p50",
    "step_ms_p95",
    "step_ms_p99",
    "steps_over_budget",
    "late_frames",
    "inbound_gap_ms_total",
    "inbound_gap_count",
    "lost_frames",
    "inbound_jitter_ms",
    "inbound_jitter_ms_max",
    "inbound_media_offset_ms",
    "outbound_underruns",
    "inbound_rms_dbfs",
    "inbound_peak",
    "inbound_clip_ratio",
    "inbound_silence_ratio",
    "outbound_rms_dbfs",
    "outbound_peak",
    "outbound_clip_ratio",
    "outbound_silence_ratio",
    "inbound_speech_s",
    "outbound_speech_s",
    "frames_to_model",
    "marks_sent",
    "marks_played",
    "chunks_flushed",
)
# orchestrator/evaluation.py call_level_metrics: read off the event log
CALL_LEVEL = ("stream_connect_ms", "call_duration_s", "model_load_s")
# the moshi-server backend's own evidence (bridge/backends/moshi_server_session.py)
REMOTE_BACKEND = (
    "backend_handshake_ms",
    "backend_first_audio_ms",
    "backend_lag_ms_p50",
    "backend_lag_ms_p95",
    "backend_lag_ms_p99",
    "backend_stale_frames",
    "backend_frames_dropped",
)
# issue 18's measurements of scripted callers (DESIGN.md's stable names)
SCENARIO = ("barge_in_stop_ms",)


def known_metrics() -> frozenset[str]:
    """Every name an expectation may bound (the evaluation's unit table included, so a metric given a
    unit there is known here too)."""
    from orchestrator.evaluation import UNITS

    return frozenset((*ANALYSIS, *CALL_LEVEL, *REMOTE_BACKEND, *SCENARIO, *UNITS))


def closest(name: str, n: int = 3) -> list[str]:
    """The known names nearest `name` (difflib), for a 'did you mean' hint."""
    return difflib.get_close_matches(name, sorted(known_metrics()), n=n, cutoff=0.5)
