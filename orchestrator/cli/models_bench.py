"""`orchestrator models bench`: will this machine (or a remote Moshi server) keep up with a call?

The measuring is bridge.backends.moshi_bench (a local model) and moshi_server_bench (a server by URL);
this is the command: its options, one-line errors and exit codes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from bridge.backends.base import BackendError
from bridge.backends.moshi_loader import resolve_files
from orchestrator import exits
from orchestrator.cli.models_common import (
    EXTRA_FIX,
    _missing_packages,
    _moshi_config,
    _needs_hub,
    cache_option,
    json_option,
    quantize_option,
    repo_option,
)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from `logger` while the bench runs (its verdict says what the warnings would)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


BENCH_EXITS = exits.epilog(
    outcome="the model does not keep up with real time (with --url: the server; the verdict says why)",
    unavailable="with --url: the server did not answer, refused the connection or sent no handshake",
)


def _file_option(flag: str, what: str) -> Any:
    return click.option(
        flag, type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help=what
    )


@click.command(epilog=BENCH_EXITS)
@repo_option
@quantize_option
@cache_option
@_file_option("--moshi-weight", "Moshi LM weights (instead of the repo's file).")
@_file_option("--mimi-weight", "Mimi codec weights (instead of the repo's file).")
@_file_option("--tokenizer", "Text tokenizer (instead of the repo's file).")
@_file_option("--lm-config", "LM config.json (instead of the repo's file).")
@click.option(
    "--seconds",
    type=click.FloatRange(min=1, max=600),
    default=20.0,
    show_default=True,
    help="Seconds of audio to run through the model, at the phone's pace (1-600).",
)
@click.option(
    "--url",
    default=None,
    metavar="ws://HOST:PORT[/api/chat]",
    help="Bench a remote Moshi server (local_web, moshi.server, the Rust moshi-server) instead of a "
    "local model: round trip per 80 ms frame, handshake, first audio, Opus CPU, frames dropped. "
    "Keeps up when its round trip does not grow by more than a frame over the run, p99 is within "
    "60 ms of p50 and nothing is dropped or closed. Not kept for doctor.",
)
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    repo: str | None,
    quantize: str | None,
    cache_dir: Path | None,
    moshi_weight: Path | None,
    mimi_weight: Path | None,
    tokenizer: Path | None,
    lm_config: Path | None,
    seconds: float,
    url: str | None,
    as_json: bool,
) -> None:
    """Will this machine keep up? Run the model on speech-like audio and time every step.

    Loads the model as `serve` does (local cache or the files given; never downloads), feeds one real
    session an 80 ms frame every 80 ms for --seconds, and prints the LM step time (p50/p95/p99) against
    the 80 ms budget, the share of late steps, Mimi's encode and decode real-time factors and the peak
    memory. It keeps up when at most 1 % of steps are over 80 ms, Mimi is faster than real time both
    ways and drops no frame. The result is kept for `orchestrator doctor` ($MOSHI_BENCH_FILE, else
    bench.json in the user cache folder).

    With --url, the same audio goes to a remote Moshi server over its /api/chat protocol, as a call's
    would (see --url for the rule); that result is printed only, never kept.

    Example: orchestrator models bench --quantize 8 --seconds 30

    Example: orchestrator models bench --url ws://gpu-box:8998 --seconds 30
    """
    if url is not None:
        local = {
            "--repo": repo,
            "--quantize": quantize,
            "--cache-dir": cache_dir,
            "--moshi-weight": moshi_weight,
            "--mimi-weight": mimi_weight,
            "--tokenizer": tokenizer,
            "--lm-config": lm_config,
        }
        given = [flag for flag, value in local.items() if value is not None]
        if given:
            raise exits.UserError(
                f"--url benches a remote server; {', '.join(given)} choose a local model: drop one or the other"
            )
        _bench_url(ctx, url, seconds, as_json)
        return
    _needs_hub()
    missing = _missing_packages()
    if missing:
        raise exits.UserError(
            f"`models bench` needs the moshi extra (missing {', '.join(missing)}): {EXTRA_FIX}"
        )
    config = _moshi_config(
        hf_repo=repo,
        quantize=quantize,
        cache_dir=cache_dir,
        moshi_weight=moshi_weight,
        mimi_weight=mimi_weight,
        tokenizer=tokenizer,
        lm_config=lm_config,
    )
    try:
        resolve_files(config)  # a model not in the cache: one line with the pull command, before mlx loads
    except BackendError as err:
        raise exits.UserError(f"cannot bench: {err}") from err
    from bridge.backends import moshi_bench

    if not as_json:
        click.echo(f"loading {config.hf_repo}, then {seconds:g} s of audio in real time...", err=True)
    # The verdict reports a codec that fell behind; the backend's own warning would say it twice.
    with _quiet("bridge.backends.moshi"):
        result = moshi_bench.bench(config, seconds)  # loads as `serve` does: the cache only, never the Hub
    stored: str | None = None
    try:
        stored = str(moshi_bench.save(result))
    except OSError as err:  # the figures are still worth printing
        click.echo(f"could not keep the result for `orchestrator doctor`: {err}", err=True)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "stored": stored}, indent=2))
    else:
        click.echo("\n".join(moshi_bench.render(result)))
        if stored:
            click.echo(f"  kept in      {stored}")
    if not result.keeps_up:
        ctx.exit(exits.OUTCOME)


def _bench_url(ctx: click.Context, url: str, seconds: float, as_json: bool) -> None:
    """`models bench --url`: bridge.backends.moshi_server_bench, its errors as one line and an exit code."""
    if importlib.util.find_spec("sphn") is None:
        raise exits.UserError(f"`models bench --url` needs sphn for Opus (missing): {EXTRA_FIX}")
    from bridge.backends import moshi_server_bench

    try:
        spec = moshi_server_bench.parse_url(url)
    except ValueError as err:
        raise exits.UserError(str(err)) from None
    if not as_json:
        click.echo(f"connecting to {spec.display}, then {seconds:g} s of audio in real time...", err=True)
    # The verdict names a server that stalls or closes; the backend's own warning would say it twice.
    try:
        with _quiet("bridge.backends"):
            result = moshi_server_bench.bench_url(spec, seconds)
    except BackendError as err:
        raise exits.UserError(f"cannot bench {spec.display}: {err}", exits.UNAVAILABLE) from None
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo("\n".join(moshi_server_bench.render(result)))
    if not result.keeps_up:
        ctx.exit(exits.OUTCOME)
