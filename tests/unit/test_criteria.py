"""Success criteria: every criterion judged pass / fail / unknown on documents whose truth we set."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.criteria import (
    CRITERIA,
    JUDGES,
    SAY_SECONDS_PER_WORD,
    evaluate,
)
from orchestrator.errors import SettingsError, ThresholdError
from orchestrator.report.samples import iso, sample_docs
from orchestrator.thresholds import Thresholds, env_example_lines

Doc = dict[str, Any]


def clean() -> Doc:
    """An answered, streamed, three-turn call with no problem (no stored checks)."""
    doc = copy.deepcopy(sample_docs()[0])
    doc["checks"] = []
    return doc


def busy() -> Doc:
    return copy.deepcopy(sample_docs()[2])


def answered_no_stream() -> Doc:
    doc = clean()
    doc["transitions"] = [t for t in doc["transitions"] if t["to"] != "streaming"]
    doc["events"] = [e for e in doc["events"] if e["source"] not in ("media", "stream_status")]
    for name in list(doc["metrics"]):
        if name != "model_load_s":
            del doc["metrics"][name]
    doc.pop("analysis")
    return doc


def metric(**values: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        for name, value in values.items():
            if value is None:
                doc["metrics"].pop(name, None)
            else:
                doc["metrics"][name] = value

    return apply


def facts(**values: Any) -> Callable[[Doc], None]:
    return lambda doc: doc["facts"].update(values)


def call(**values: Any) -> Callable[[Doc], None]:
    return lambda doc: doc["call"].update(values)


def same(doc: Doc) -> None:
    pass


def reject_start(doc: Doc) -> None:
    for e in doc["events"]:
        if e["source"] == "media" and e["type"] == "start":
            e.update(type="start_rejected", accepted=False, reason="bad signature")
    doc["transitions"] = [t for t in doc["transitions"] if t["to"] != "streaming"]


def create_failed(doc: Doc) -> None:
    doc["call"]["call_sid"] = None
    doc["events"] = [
        {"source": "rest", "type": "create_failed", "at": iso(0.3), "accepted": True, "reason": None,
         "payload": {"code": 21211, "message": "Invalid 'To' Phone Number"}}
    ]  # fmt: skip


def no_rest_no_sid(doc: Doc) -> None:
    doc["call"]["call_sid"] = None
    doc["events"] = [e for e in doc["events"] if e["source"] != "rest"]


def drop_metrics_keep_analysis(doc: Doc) -> None:
    for name in ("inbound_speech_s", "turns"):
        del doc["metrics"][name]


def one_turn(doc: Doc) -> None:
    doc["metrics"]["turns"] = 1
    doc["analysis"]["turns"] = doc["analysis"]["turns"][:1]


# (criterion, base, mutation, expected status, fragments the one-line evidence must contain)
CASES: list[tuple[str, Callable[[], Doc], Callable[[Doc], None], str, tuple[str, ...]]] = [
    ("model_loads_quickly", clean, same, "pass", ("7.6 s <= 10 s",)),
    ("model_loads_quickly", clean, metric(model_load_s=12.34), "fail", ("12.3 s > 10 s",)),
    ("model_loads_quickly", clean, metric(model_load_s=None), "fail", ("no model_load_s", "moshi")),
    ("model_loads_quickly", clean, facts(backend="echo"), "unknown", ("echo backend has no model",)),
    ("model_loads_quickly", clean, facts(backend="playback"), "unknown", ("playback backend",)),
    ("server_listening", clean, same, "pass", ("127.0.0.1:8080",)),
    ("server_listening", clean, facts(server_listening=None), "pass", ("stream reached the server",)),
    ("server_listening", busy, facts(server_listening=None), "fail", ("no bound address",)),
    ("tunnel_exposed", clean, same, "unknown", ("offline", "no tunnel")),
    ("tunnel_exposed", clean, facts(offline=False, public_url="https://x.example", tunnel_health=True),
     "pass", ("https://x.example/healthz answered",)),
    ("tunnel_exposed", clean, facts(offline=False, public_url="https://x.example", tunnel_health=False),
     "fail", ("https://x.example/healthz did not answer",)),
    ("tunnel_exposed", clean, facts(offline=False, public_url=None), "fail", ("no PUBLIC_URL",)),
    ("tunnel_exposed", clean, facts(offline=False, public_url="https://x.example"), "pass",
     ("reached /media through https://x.example",)),
    ("tunnel_exposed", busy, facts(offline=False, public_url="https://x.example"), "fail", ("never checked",)),
    ("call_initiated", clean, same, "pass", ("CA000000000000000000000000000000c1",)),
    ("call_initiated", clean, create_failed, "fail", ("21211", "Invalid 'To' Phone Number")),
    ("call_initiated", clean, call(direction="inbound"), "unknown", ("inbound call",)),
    ("call_initiated", clean, no_rest_no_sid, "fail", ("no CallSid",)),
    ("answered_ivr_heard", clean, same, "pass", ("2450 ms", ">= 1200 ms", "2400 ms <Say> estimate", "6 words")),
    ("answered_ivr_heard", clean, metric(stream_connect_ms=300), "fail", ("300 ms", "< 1200 ms", "cut short")),
    ("answered_ivr_heard", clean, call(say_text=""), "pass", ("no <Say>",)),
    ("answered_ivr_heard", clean, metric(stream_connect_ms=None), "pass", ("2450 ms",)),  # from transitions
    ("answered_ivr_heard", busy, same, "fail", ("never answered", "busy")),
    ("answered_ivr_heard", answered_no_stream, same, "fail", ("stream never started",)),
    ("websocket_connected", clean, same, "pass", ("`start` received",)),
    ("websocket_connected", clean, reject_start, "fail", ("rejected", "bad signature")),
    ("websocket_connected", busy, same, "unknown", ("never answered (ended busy)",)),
    ("websocket_connected", answered_no_stream, same, "fail", ("no media `start`",)),
    ("caller_hears_model", clean, same, "pass", ("5.1 s", "362 ms", "8 marks")),
    ("caller_hears_model", clean, metric(marks_played=0), "fail", ("5.1 s", "no mark")),
    ("caller_hears_model", clean, metric(outbound_speech_s=0.0), "fail", ("no model speech",)),
    ("caller_hears_model", busy, same, "unknown", ("never answered",)),
    ("caller_hears_model", answered_no_stream, same, "fail", ("no media stream",)),
    ("model_hears_caller", clean, same, "pass", ("4.8 s", "177 frames")),
    ("model_hears_caller", clean, metric(frames_to_model=0), "fail", ("4.8 s", "no frame fed")),
    ("model_hears_caller", clean, metric(inbound_speech_s=0), "fail", ("no caller speech",)),
    ("model_hears_caller", clean, drop_metrics_keep_analysis, "pass", ("4.8 s",)),  # from the segments
    ("model_hears_caller", busy, same, "unknown", ("never answered",)),
    ("conversation_interactive", clean, same, "pass", ("3 turns", "p50 420 ms <= 1000 ms")),
    ("conversation_interactive", clean, one_turn, "fail", ("1 turns < 2",)),
    ("conversation_interactive", clean, metric(response_latency_ms_p50=1310), "fail", ("1310 ms > 1000 ms",)),
    ("conversation_interactive", clean, drop_metrics_keep_analysis, "pass", ("3 turns",)),
    ("conversation_interactive", busy, same, "unknown", ("never answered",)),
    ("audio_quality_ok", clean, same, "pass", ("outbound clipping 0.04 % <= 1.00 %", "jitter 3.2 ms")),
    ("audio_quality_ok", clean, metric(outbound_clip_ratio=0.023), "fail", ("outbound clipping 2.30 % > 1.00 %",)),
    ("audio_quality_ok", clean, metric(inbound_gap_ms_total=820), "fail", ("inbound gaps 820 ms > 500 ms",)),
    ("audio_quality_ok", clean, metric(outbound_underruns=7), "fail", ("underruns 7 > 3",)),
    ("audio_quality_ok", clean, metric(inbound_rms_dbfs=-71.0), "fail", ("inbound level -71.0 dBFS < -60.0",)),
    ("audio_quality_ok", clean, metric(inbound_jitter_ms=None), "pass", ("not recorded: inbound_jitter_ms",)),
    ("audio_quality_ok", busy, same, "unknown", ("no audio to judge",)),
    ("audio_quality_ok", answered_no_stream, same, "unknown", ("no media stream",)),
    ("no_latency_echo_issues", clean, same, "pass", ("362 ms <= 2000 ms", "no echo")),
    ("no_latency_echo_issues", clean, metric(first_audio_heard_ms=2410), "fail", ("first audio heard 2410 ms > 2000 ms",)),
    ("no_latency_echo_issues", clean, metric(echo_detected=1, echo_delay_ms=210, echo_return_loss_db=18),
     "fail", ("echo detected", "210 ms delay", "ERL 18.0 dB")),
    # the echo canceller on: the line's echo is reported, what the model heard decides
    ("no_latency_echo_issues", clean, metric(echo_detected=1, echo_delay_ms=120, echo_return_loss_db=10,
     residual_echo_detected=0, aec_erle_db=27.4), "pass", ("echo on the line (120 ms delay, ERL 10.0 dB)",
     "cancelled by 27 dB", "the model did not hear it")),
    ("no_latency_echo_issues", clean, metric(echo_detected=1, echo_delay_ms=120, echo_return_loss_db=10,
     residual_echo_detected=1, residual_echo_return_loss_db=21.5), "fail", ("the model still heard it",
     "residual ERL 21.5 dB")),
    ("no_latency_echo_issues", clean, metric(residual_echo_detected=1), "fail", ("the model heard an echo",)),
    ("no_latency_echo_issues", clean, metric(residual_echo_detected=0), "pass", ("no echo",)),
    ("no_latency_echo_issues", clean, metric(step_ms_p95=95.0), "fail", ("step p95 95.0 ms > 80 ms",)),
    ("no_latency_echo_issues", clean, metric(response_latency_ms_max=2500), "fail", ("worst response 2500 ms > 2000",)),
    ("no_latency_echo_issues", clean, metric(echo_detected=None), "fail", ("echo not measured",)),
    ("no_latency_echo_issues", busy, same, "unknown", ("no latency or echo",)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "base", "change", "status", "fragments"), CASES)
def test_criterion(
    name: str, base: Callable[[], Doc], change: Callable[[Doc], None], status: str, fragments: tuple[str, ...]
) -> None:
    doc = base()
    change(doc)
    verdict = JUDGES[name](doc, Thresholds())
    assert verdict.criterion == name
    assert (verdict.status, "\n" in verdict.evidence) == (status, False), verdict.evidence
    for fragment in fragments:
        assert fragment in verdict.evidence


# Their evidence always exists: a port was bound or not; the call was answered or not.
NEVER_UNKNOWN = {"server_listening", "answered_ivr_heard"}


def test_every_criterion_has_a_pass_a_fail_and_an_unknown_case() -> None:
    seen = {(name, status) for name, _, _, status, _ in CASES}
    for name in CRITERIA:
        wanted = {"pass", "fail"} | (set() if name in NEVER_UNKNOWN else {"unknown"})
        assert {(name, s) for s in wanted} <= seen, name


def test_evaluate_gives_every_criterion_in_design_order() -> None:
    verdicts = evaluate(clean())
    assert [v.criterion for v in verdicts] == list(CRITERIA) == list(JUDGES)
    assert [v.status for v in verdicts].count("pass") == 10  # all but the tunnel, which is offline


def test_thresholds_decide_the_outcome() -> None:
    doc = clean()
    strict = Thresholds.from_env({"CHECK_MODEL_LOAD_S_MAX": "5", "CHECK_MIN_TURNS": "4"})
    assert JUDGES["model_loads_quickly"](doc, strict).evidence == "model loaded in 7.6 s > 5 s"
    assert JUDGES["conversation_interactive"](doc, strict).status == "fail"
    loose = Thresholds(response_latency_ms_max=2000)
    doc["metrics"]["response_latency_ms_p50"] = 1310
    assert JUDGES["conversation_interactive"](doc, loose).status == "pass"


def test_ivr_estimate_uses_the_public_speaking_rate() -> None:
    assert SAY_SECONDS_PER_WORD == 0.4
    doc = clean()
    doc["call"]["say_text"] = " ".join(["word"] * 10)  # 4000 ms estimate, 2000 ms needed
    doc["metrics"]["stream_connect_ms"] = 1999
    assert JUDGES["answered_ivr_heard"](doc, Thresholds()).status == "fail"
    doc["metrics"]["stream_connect_ms"] = 2000
    assert JUDGES["answered_ivr_heard"](doc, Thresholds()).status == "pass"


def test_stream_that_beat_the_answer_callback_is_not_mistaken_for_a_skipped_ivr() -> None:
    doc = clean()
    del doc["metrics"]["stream_connect_ms"]
    doc["transitions"] = [
        {"from": "ringing", "to": "streaming", "trigger": "stream_started", "at": iso(5.0)},
        {"from": "streaming", "to": "in-progress", "trigger": "answered", "at": iso(5.1)},
    ]
    verdict = JUDGES["answered_ivr_heard"](doc, Thresholds())
    assert verdict.status == "fail" and "not confirmed" in verdict.evidence


def test_a_partial_document_never_raises() -> None:
    partial: list[Doc] = [{}, {"call": {}}, {"call": {"state": "streaming"}, "metrics": {"turns": "3"}}]
    for doc in partial:
        assert [v.status for v in evaluate(doc)] and all("\n" not in v.evidence for v in evaluate(doc))


def test_from_env_reads_check_variables_and_ignores_others() -> None:
    th = Thresholds.from_env({"CHECK_GAP_MS_MAX": " 250 ", "CHECK_UNDERRUNS_MAX": "0", "PATH": "/bin"})
    assert (th.gap_ms_max, th.underruns_max, th.model_load_s_max) == (250.0, 0, 10.0)
    assert isinstance(th.underruns_max, int)
    assert Thresholds.from_env({"CHECK_LEVEL_DBFS_MIN": "-45"}).level_dbfs_min == -45.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CHECK_GAP_MS_MAX": "abc"}, "CHECK_GAP_MS_MAX='abc' is not a number"),
        (
            {"CHECK_MIN_TURNS": "2.5"},
            "CHECK_MIN_TURNS='2.5' is not a whole number (example: CHECK_MIN_TURNS=2)",
        ),
        ({"CHECK_JITTER_MS_MAX": "-3"}, "must be a finite number >= 0"),
        ({"CHECK_JITTER_MS_MAX": "nan"}, "must be a finite number >= 0"),
        ({"CHECK_LATENCY": "1"}, "unknown setting CHECK_LATENCY; known: CHECK_CLIP_RATIO_MAX"),
    ],
)
def test_from_env_rejects_malformed_values_clearly(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ThresholdError) as err:
        Thresholds.from_env(environ)
    assert message in str(err.value)
    assert isinstance(err.value, SettingsError)  # in the package's hierarchy: the CLI exits 2 with one line


def test_env_example_lines_round_trip_to_the_defaults() -> None:
    lines = env_example_lines()
    assert len(lines) == len(dataclasses.fields(Thresholds))
    environ = dict(line.split("=", 1) for line in lines)
    assert all(key.startswith("CHECK_") for key in environ)
    assert Thresholds.from_env(environ) == Thresholds()
