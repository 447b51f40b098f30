"""`orchestrator models bench` on the tiny generated weights, through the command line.

Nothing here asserts how fast this machine is (it is shared; the tiny model's verdict may go either
way): the figures are checked for structure and against truths made another way: the samples the
result stores (percentiles recomputed by numpy's inverted-CDF method, the late count recounted), the
audio fed (frames, pace), the worker's serial clock (model time cannot exceed the run's wall time), an
injected 100 ms delay in every model step (every step late), and the verdict rule restated here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from bridge.backends.base import FRAME_SAMPLES
from bridge.backends.bench_record import last_bench_line
from bridge.backends.moshi_bench import (
    BUDGET_MS,
    LATE_SHARE_LIMIT,
    Percentiles,
    judge,
    percentiles,
    speech_like,
)
from orchestrator import exits
from orchestrator.cli import cli
from tests.moshi.conftest import LM_FILE, MIMI_FILE, TOKENIZER_FILE, TinyRepo

SECONDS = 2
FIGURES = ("lm_step_ms", "frame_ms", "encode_ms", "decode_ms")


def invoke(*args: str, bench_file: Path) -> Result:
    return CliRunner().invoke(cli, ["models", "bench", *args], env={"MOSHI_BENCH_FILE": str(bench_file)})


def keeps_up_by_the_rule(doc: dict[str, Any]) -> bool:
    """The documented rule, restated: ≤ 1 % of steps late, Mimi faster than real time, nothing dropped."""
    return (
        doc["lm_step_ms"]["count"] > 0
        and doc["late_share"] <= 0.01
        and doc["encode_rtf"] < 1
        and doc["decode_rtf"] < 1
        and not any(doc["codec_dropped"].values())
        and doc["ended"] is None
    )


@pytest.fixture(scope="module")
def json_run(tiny_repo: TinyRepo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    stored = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"  # its folder does not exist yet
    result = invoke(
        "--repo",
        tiny_repo.repo,
        "--quantize",
        "none",
        "--cache-dir",
        str(tiny_repo.cache_dir),
        "--seconds",
        str(SECONDS),
        "--json",
        bench_file=stored,
    )
    return result, stored


@pytest.mark.moshi
def test_json_has_every_figure_consistent_with_its_samples(json_run: tuple[Result, Path]) -> None:
    result, stored = json_run
    doc = json.loads(result.stdout)
    assert result.exit_code == (exits.OK if doc["keeps_up"] else exits.OUTCOME), result.output
    assert doc["quantize"] == "bf16"  # the tiny weights are unquantized: the loaded file decides
    assert doc["budget_ms"] == BUDGET_MS == 80
    frames = round(SECONDS * 12.5)
    if doc["ended"] is None:  # every frame fed, paced like a phone: never faster than the audio
        assert doc["frames"] == doc["frame_ms"]["count"] == frames
        assert doc["wall_s"] >= (frames - 1) * 0.08
    for key in FIGURES:
        p = doc[key]
        assert 0 <= p["p50"] <= p["p95"] <= p["p99"] <= p["max"], (key, p)
    samples = doc["lm_step_samples_ms"]
    assert 0 < len(samples) <= frames and doc["lm_step_ms"]["count"] == len(samples)
    for q in (50, 95, 99):
        assert doc["lm_step_ms"][f"p{q}"] == pytest.approx(np.percentile(samples, q, method="inverted_cdf"))
    assert doc["late_steps"] == sum(ms > 80 for ms in samples)
    assert 0 <= doc["late_share"] <= 1 and doc["late_share"] == pytest.approx(
        doc["late_steps"] / len(samples)
    )
    assert sum(samples) <= doc["wall_s"] * 1000  # one worker runs the steps one after another
    assert doc["audio_frames_out"] <= len(samples) and doc["text_pieces"] <= len(samples)  # one per step
    assert doc["encode_ms"]["count"] == doc["decode_ms"]["count"] == frames - 2  # first two: allocation
    assert doc["encode_rtf"] == pytest.approx(doc["encode_ms"]["mean"] / 80)
    assert doc["decode_rtf"] == pytest.approx(doc["decode_ms"]["mean"] / 80)
    assert doc["peak_rss_bytes"] > 10_000_000  # the full-size Mimi alone is bigger
    assert doc["keeps_up"] == keeps_up_by_the_rule(doc)
    if doc["keeps_up"]:
        assert doc["verdict"] == f"bf16 keeps up with {80 - doc['lm_step_ms']['p95']:.0f} ms to spare at p95"
        assert doc["problems"] == []
    else:
        assert doc["problems"] and doc["verdict"] == doc["problems"][0]
    late = [p for p in doc["problems"] if "misses the 80 ms budget" in p]
    assert bool(late) == (doc["late_share"] > 0.01)
    # what was printed is what was kept
    assert doc["stored"] == str(stored)
    assert json.loads(stored.read_text()) == {k: v for k, v in doc.items() if k != "stored"}


@pytest.mark.moshi
def test_text_with_explicit_files_shows_every_figure_and_the_verdict(
    tiny_repo: TinyRepo, tmp_path: Path
) -> None:
    stored = tmp_path / "bench.json"
    files = {
        "--moshi-weight": LM_FILE,
        "--mimi-weight": MIMI_FILE,
        "--tokenizer": TOKENIZER_FILE,
        "--lm-config": "config.json",
    }
    args = [a for flag, name in files.items() for a in (flag, str(tiny_repo.file(name)))]
    empty_cache = tmp_path / "no-cache"  # the files given are used, not a cache
    result = invoke(*args, "--cache-dir", str(empty_cache), "--seconds", "1", bench_file=stored)
    doc = json.loads(stored.read_text())
    assert result.exit_code == (exits.OK if doc["keeps_up"] else exits.OUTCOME), result.output
    assert doc["weights"] == str(tiny_repo.file(LM_FILE))
    out = result.stdout
    lm = doc["lm_step_ms"]
    assert f"LM step      p50 {lm['p50']:.1f} ms, p95 {lm['p95']:.1f} ms, p99 {lm['p99']:.1f} ms" in out
    assert f"late steps   {doc['late_steps']} of {lm['count']} (" in out
    assert f"Mimi encode  {doc['encode_rtf']:.2f}x real time" in out
    assert f"Mimi decode  {doc['decode_rtf']:.2f}x real time" in out
    assert f"peak memory  RSS {doc['peak_rss_bytes'] / 1e6:,.0f} MB" in out
    assert f"verdict      {doc['verdict']}\n" in out
    assert f"kept in      {stored}" in out
    assert not empty_cache.exists()


@pytest.mark.moshi
def test_steps_slower_than_the_budget_are_late_and_exit_1(
    tiny_repo: TinyRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.backends.moshi import MoshiSession

    real_step = MoshiSession._lm_step

    def slow_step(self: MoshiSession, codes: Any) -> Any:
        time.sleep(0.1)  # every model step over the 80 ms budget, whatever this machine does
        return real_step(self, codes)

    monkeypatch.setattr(MoshiSession, "_lm_step", slow_step)
    stored = tmp_path / "bench.json"
    repo = ["--repo", tiny_repo.repo, "--quantize", "none", "--cache-dir", str(tiny_repo.cache_dir)]
    result = invoke(*repo, "--seconds", "1", "--json", bench_file=stored)
    assert result.exit_code == exits.OUTCOME, result.output
    doc = json.loads(result.stdout)
    assert doc["lm_step_ms"]["count"] > 0 and doc["lm_step_ms"]["p50"] >= 100
    assert doc["late_steps"] == doc["lm_step_ms"]["count"] and doc["late_share"] == 1.0
    assert not doc["keeps_up"]
    if doc["ended"] is None:  # nothing else can come first: the LM's problem is named before Mimi's
        assert doc["verdict"] == (
            "bf16 misses the 80 ms budget on 100 % of steps: use --quantize 8 (or 4), or close other apps"
        )
    else:
        assert doc["verdict"].startswith("the session ended early")


@pytest.mark.moshi
def test_last_bench_line_reads_what_the_bench_kept(json_run: tuple[Result, Path], tmp_path: Path) -> None:
    _, stored = json_run
    doc = json.loads(stored.read_text())
    later = datetime.fromisoformat(doc["at"]) + timedelta(hours=3, minutes=5)
    line = last_bench_line(stored, now=later)
    assert line is not None and line.startswith(doc["verdict"])
    assert f"p95 {doc['lm_step_ms']['p95']:.0f} ms" in line and doc["repo"] in line and "3 hours ago" in line
    assert "not the configured" not in (last_bench_line(stored, repo=doc["repo"], now=later) or "")
    other = last_bench_line(stored, repo="kyutai/moshiko-mlx-q8", now=later)
    assert other is not None and "not the configured kyutai/moshiko-mlx-q8" in other
    assert last_bench_line(tmp_path / "never.json") is None
    (tmp_path / "bad.json").write_text("{half a file")
    bad = last_bench_line(tmp_path / "bad.json")
    assert bad is not None and "unreadable" in bad and "orchestrator models bench" in bad


@pytest.mark.moshi
def test_a_model_not_in_the_cache_is_exit_2_and_one_line(tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    stored = tmp_path / "bench.json"
    result = invoke("--repo", "nobody/never-cached-mlx-q4", "--cache-dir", str(tmp_path), bench_file=stored)
    assert result.exit_code == exits.USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "orchestrator models pull --repo nobody/never-cached-mlx-q4 --quantize 4" in lines[0]
    assert result.stdout == "" and not stored.exists()


def test_help_has_an_example_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["models", "bench", "--help"])
    assert result.exit_code == 0
    assert "Example: orchestrator models bench" in result.stdout
    assert "Exit codes: 0 done" in result.stdout and "1 the model does not keep up" in result.stdout
    assert "--url" in result.stdout and "3 " in result.stdout  # a remote server that does not answer


# --- The pure parts: no model ----------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 19, 100, 257):
        samples = list(rng.exponential(30, n))
        p = percentiles(samples)
        for q in (50, 95, 99):
            assert getattr(p, f"p{q}") == np.percentile(samples, q, method="inverted_cdf")
        assert p.max == max(samples) and p.count == n and p.mean == pytest.approx(np.mean(samples))
    assert percentiles([]) == Percentiles(0, 0.0, 0.0, 0.0, 0.0, 0.0)


def verdict(lm_ms: list[float], **overrides: Any) -> tuple[bool, str, list[str]]:
    late = sum(ms > BUDGET_MS for ms in lm_ms) / len(lm_ms) if lm_ms else 0.0
    kwargs: dict[str, Any] = {
        "label": "q8",
        "lm": percentiles(lm_ms),
        "late_share": late,
        "encode_rtf": 0.3,
        "decode_rtf": 0.3,
        "dropped": {"encoder": 0, "decoder": 0},
        "ended": None,
        "advice": "use --quantize 4 or close other apps",
    }
    return judge(**(kwargs | overrides))


def test_the_verdict_rule() -> None:
    assert verdict([50.0] * 99 + [120.0]) == (True, "q8 keeps up with 30 ms to spare at p95", [])
    assert LATE_SHARE_LIMIT == 0.01  # one late step in a hundred is the most that keeps up
    ok, line, _ = verdict([50.0] * 69 + [120.0] * 31)
    assert (
        not ok and line == "q8 misses the 80 ms budget on 31 % of steps: use --quantize 4 or close other apps"
    )
    ok, line, _ = verdict([50.0] * 98 + [120.0] * 2)
    assert not ok and "on 2.0 % of steps" in line
    assert verdict([80.0] * 10)[0]  # exactly on the budget is in time
    ok, line, problems = verdict([50.0] * 10, encode_rtf=1.2, dropped={"encoder": 0, "decoder": 3})
    assert not ok and "encode 1.20x" in line and "decoder 3" in problems[1]
    ok, line, _ = verdict([], ended="tokenizer_dead: ...")
    assert not ok and line.startswith("the session ended early (tokenizer_dead")
    assert verdict([])[1] == "no model step ran: the Mimi encoder returned no codes"


def test_speech_like_audio_is_frames_of_talk_and_pauses() -> None:
    frames = list(speech_like(10, seed=1))
    assert len(frames) == 125 and all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.float32 for f in frames)
    assert max(float(np.abs(f).max()) for f in frames) < 1.0
    rms = np.array([np.sqrt(np.mean(f.astype(np.float64) ** 2)) for f in frames])
    assert (rms < 0.01).sum() >= 5 and (rms > 0.05).sum() >= 50  # pauses and talk, both
    assert all(np.array_equal(a, b) for a, b in zip(frames, speech_like(10, seed=1), strict=True))


@pytest.fixture(autouse=True)
def _no_stray_bench_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Nothing in this module may write the user's real bench file."""
    monkeypatch.setenv("MOSHI_BENCH_FILE", str(tmp_path / "stray-bench.json"))
    yield
