"""`orchestrator models pull | list | bench`, and `model_status()` for `orchestrator doctor`.

`models pull` is the one command that may use the network: it downloads a Moshi repo's files into the
Hugging Face cache with a progress bar, with hf_transfer disabled (a field report lost 37 minutes to
it). Everything else here reads the local cache only; only `models bench` loads the model (mlx and
moshi_mlx are imported inside it, through bridge.backends.moshi_bench).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import click

from bridge.backends.base import BackendError
from bridge.backends.moshi_loader import (
    CONFIG_FILE,
    MIMI_FILE,
    TEXT_TOKENIZER_FILE,
    MoshiConfig,
    cached_file,
    hub_cache_dir,
    load_lm_config,
    pull_command,
    resolve_files,
    weight_file_name,
)
from orchestrator import exits

MOSHI_PACKAGES = ("moshi_mlx", "rustymimi", "mlx", "sentencepiece", "huggingface_hub")
EXTRA_FIX = "pip install -e '.[moshi]'"


def _missing_packages() -> list[str]:
    return [p for p in MOSHI_PACKAGES if importlib.util.find_spec(p) is None]


def _needs_hub() -> None:
    """`models` reads and fills the Hugging Face cache: without the moshi extra there is no hub client."""
    if importlib.util.find_spec("huggingface_hub") is None:
        raise exits.UserError(
            f"`orchestrator models` needs the moshi extra (huggingface_hub is not installed): {EXTRA_FIX}"
        )


def _config(settings: Any | None, **overrides: Any) -> MoshiConfig:
    if settings is None:
        return MoshiConfig.from_env(**overrides)
    return MoshiConfig.from_settings(settings, **overrides)


def _size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None and path.is_file() else None


def model_status(
    settings: Any | None = None, *, config: MoshiConfig | None = None, **overrides: Any
) -> dict[str, Any]:
    """Whether the Moshi backend could load right now, without loading it (for `orchestrator doctor`).

    `settings` is the orchestrator's Settings (or None: the environment); keyword arguments are the
    MoshiConfig fields a caller overrides (moshi_weight, mimi_weight, tokenizer, lm_config, cache_dir...).
    """
    config = config or _config(settings, **overrides)
    missing_packages = _missing_packages()
    status: dict[str, Any] = {
        "ready": False,
        "repo": config.hf_repo,
        "quantize": "none" if config.quantize is None else config.quantize,
        "cache_dir": str(hub_cache_dir(config)) if "huggingface_hub" not in missing_packages else None,
        "files": {},
        "lm_config": None,
        "missing_packages": missing_packages,
        "error": None,
        "fix": None,
        "detail": "",  # one line for `doctor`
    }
    if "huggingface_hub" in missing_packages:  # the cache cannot even be read
        status["error"] = f"the moshi extra is not installed (missing {', '.join(missing_packages)})"
        status["fix"] = EXTRA_FIX
        status["detail"] = f"{status['error']}; fix: {status['fix']}"
        return status
    try:
        files = resolve_files(config)
    except BackendError as err:
        status["error"] = str(err)
        status["fix"] = pull_command(config)
        status["detail"] = str(err)
        return status
    status["files"] = {
        role: {"path": str(path), "bytes": _size(path)}
        for role, path in (
            ("moshi_weight", files.moshi_weight),
            ("mimi_weight", files.mimi_weight),
            ("tokenizer", files.tokenizer),
        )
    }
    status["lm_config"] = files.lm_config_source
    if missing_packages:
        status["error"] = f"the moshi extra is not installed (missing {', '.join(missing_packages)})"
        status["fix"] = EXTRA_FIX
        status["detail"] = f"{status['error']}; fix: {status['fix']}"
        return status
    status["ready"] = True
    size = sum(f["bytes"] or 0 for f in status["files"].values())
    status["detail"] = (
        f"{config.hf_repo} (quantize {status['quantize']}): files present, {size / 1e9:.2f} GB, "
        f"config {files.lm_config_source}"
    )
    return status


def _disable_hf_transfer() -> None:
    from huggingface_hub import constants

    constants.HF_HUB_ENABLE_HF_TRANSFER = False


def pull_files(config: MoshiConfig, echo: Any = click.echo, endpoint: str | None = None) -> dict[str, str]:
    """Download the repo's files (config.json first when the repo has one). Uses the network.

    `endpoint` None means the Hub ($HF_ENDPOINT); tests point it at a local fake.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    _disable_hf_transfer()
    cache = str(hub_cache_dir(config))
    fetched: dict[str, str] = {}
    try:
        fetched[CONFIG_FILE] = hf_hub_download(
            config.hf_repo, CONFIG_FILE, cache_dir=cache, endpoint=endpoint
        )
    except LocalEntryNotFoundError:  # a subclass of the next: the Hub could not be asked at all
        raise
    except EntryNotFoundError:  # older repos have none; the loader then uses moshi_mlx's v0.1 config
        echo(f"{config.hf_repo} has no {CONFIG_FILE}; the built-in config will be used")
    names, _ = load_lm_config(config)
    names = names or {}
    wanted = [
        names.get("moshi_name") or weight_file_name(config.quantize),
        names.get("mimi_name") or MIMI_FILE,
        names.get("tokenizer_name") or TEXT_TOKENIZER_FILE,
    ]
    for name in wanted:
        echo(f"fetching {config.hf_repo}/{name}")
        fetched[name] = hf_hub_download(config.hf_repo, name, cache_dir=cache, endpoint=endpoint)
    return fetched


REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def _moshi_config(**overrides: Any) -> MoshiConfig:
    """MoshiConfig from the environment and options, or a one-line UserError naming what is wrong."""
    try:
        return MoshiConfig.from_env(**overrides)
    except ValueError as err:
        raise exits.UserError(f"{err}; fix it in .env or the environment, or pass --quantize") from err


def _fetch_error(repo: str, err: Exception) -> exits.UserError:
    """Why a download failed, in one line, with the exit code of orchestrator.exits."""
    import requests
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    # most of these are OSErrors too (through requests): the specific ones first
    if isinstance(err, GatedRepoError):
        return exits.UserError(
            f"could not fetch {repo}: the repo is gated; accept its terms on huggingface.co "
            "and log in (`hf auth login`)",
            exits.UNAVAILABLE,
        )
    if isinstance(err, RepositoryNotFoundError):
        return exits.UserError(
            f"could not fetch {repo}: no such repo on the Hub (or it is private); check --repo "
            "/ MOSHI_HF_REPO, e.g. kyutai/moshiko-mlx-q4"
        )
    if isinstance(err, LocalEntryNotFoundError | requests.ConnectionError | requests.Timeout):
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = (
            "HF_HUB_OFFLINE is set: unset it to download"
            if offline
            else "the Hugging Face Hub did not answer: check the network (or HF_ENDPOINT)"
        )
        return exits.UserError(f"could not fetch {repo}: {why}", exits.UNAVAILABLE)
    if isinstance(err, EntryNotFoundError):
        return exits.UserError(
            f"could not fetch {repo}: a file is missing from the repo ({err.__class__.__name__}); "
            "is it a Moshi MLX repo? check --repo and --quantize"
        )
    if isinstance(err, PermissionError):
        return exits.UserError(f"could not fetch {repo}: cannot write the cache ({err}); pass --cache-dir")
    first = (str(err).splitlines() or [""])[0][:200]
    return exits.UserError(f"could not fetch {repo}: {type(err).__name__}: {first}", exits.UNAVAILABLE)


def cached_repos(cache_dir: Path) -> list[dict[str, Any]]:
    """Moshi-related repos in the cache with their files and sizes (reads the disk only)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    repos = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not any(k in repo.repo_id.lower() for k in ("moshi", "mimi")):
            continue
        files = sorted({f.file_name: f.size_on_disk for rev in repo.revisions for f in rev.files}.items())
        repos.append(
            {
                "repo": repo.repo_id,
                "bytes": repo.size_on_disk,
                "files": [{"name": n, "bytes": b} for n, b in files],
            }
        )
    return repos


quantize_option = click.option(
    "--quantize",
    type=click.Choice(["4", "8", "none"]),
    default=None,
    help="Weights to use: 4-bit, 8-bit or none (bf16). Default: $MOSHI_QUANTIZE, else 4.",
)


def _repo(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not REPO_ID.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a Hugging Face repo id: OWNER/NAME, e.g. kyutai/moshiko-mlx-q4"
        )
    return value


repo_option = click.option(
    "--repo",
    default=None,
    callback=_repo,
    help="Hugging Face repo, OWNER/NAME (default: $MOSHI_HF_REPO, else kyutai/moshiko-mlx-q4).",
)
cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Hugging Face hub cache folder (default: $HF_HUB_CACHE or ~/.cache/huggingface/hub).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group()
def models() -> None:
    """Fetch and inspect the Moshi model files (Hugging Face cache).

    Serving never downloads; `models pull` is the one command that does.

    Example: orchestrator models pull --quantize 4
    """


@models.command(epilog=exits.epilog(unavailable="the Hugging Face Hub did not answer or refused"))
@repo_option
@quantize_option
@cache_option
@json_option
def pull(repo: str | None, quantize: str | None, cache_dir: Path | None, as_json: bool) -> None:
    """Download the Moshi weights, Mimi codec and text tokenizer (progress bar; uses the network).

    Example: orchestrator models pull --repo kyutai/moshika-mlx-q8 --quantize 8
    """
    _needs_hub()
    config = _moshi_config(hf_repo=repo, quantize=quantize, cache_dir=cache_dir)
    try:
        fetched = pull_files(config, echo=(lambda _m: None) if as_json else click.echo)
    except Exception as err:  # network, auth or disk problems: one line, not a traceback
        raise _fetch_error(config.hf_repo, err) from err
    status = model_status(config=config)
    if as_json:
        click.echo(json.dumps({"fetched": fetched, "status": status}, indent=2))
        return
    click.echo(f"ready: {status['ready']} ({config.hf_repo}, cache {status['cache_dir']})")


@models.command(name="list", epilog=exits.epilog(unavailable=None))
@cache_option
@json_option
def list_(cache_dir: Path | None, as_json: bool) -> None:
    """Show the Moshi repos in the local Hugging Face cache, their files and sizes.

    Example: orchestrator models list --json
    """
    _needs_hub()
    config = _moshi_config(cache_dir=cache_dir)
    root = hub_cache_dir(config)
    repos = cached_repos(root)
    status = model_status(config=config)
    if as_json:
        click.echo(json.dumps({"cache_dir": str(root), "repos": repos, "configured": status}, indent=2))
        return
    click.echo(f"cache: {root}")
    if not repos:
        click.echo(f"no Moshi files cached; run `{pull_command(config)}`")
    for repo in repos:
        click.echo(f"{repo['repo']}  {repo['bytes'] / 1e6:,.1f} MB")
        for f in repo["files"]:
            click.echo(f"    {f['name']}  {f['bytes'] / 1e6:,.1f} MB")
    ready = "ready" if status["ready"] else f"not ready: {status['error']}"
    click.echo(f"configured: {config.hf_repo} (quantize {status['quantize']}): {ready}")


BENCH_EXITS = exits.epilog(
    outcome="the model does not keep up with real time (with --url: the server; the verdict says why)",
    unavailable="with --url: the server did not answer, refused the connection or sent no handshake",
)


def _file_option(flag: str, what: str) -> Any:
    return click.option(
        flag, type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help=what
    )


@models.command(epilog=BENCH_EXITS)
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

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not as_json:
        click.echo(f"loading {config.hf_repo}, then {seconds:g} s of audio in real time...", err=True)
    # The verdict reports a codec that fell behind; the backend's own warning would say it twice.
    backend_log = logging.getLogger("bridge.backends.moshi")
    level = backend_log.level
    backend_log.setLevel(logging.ERROR)
    try:
        result = moshi_bench.bench(config, seconds)
    finally:
        backend_log.setLevel(level)
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
    backend_log = logging.getLogger("bridge.backends")
    level = backend_log.level
    backend_log.setLevel(logging.ERROR)
    try:
        result = moshi_server_bench.bench_url(spec, seconds)
    except BackendError as err:
        raise exits.UserError(f"cannot bench {spec.display}: {err}", exits.UNAVAILABLE) from None
    finally:
        backend_log.setLevel(level)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo("\n".join(moshi_server_bench.render(result)))
    if not result.keeps_up:
        ctx.exit(exits.OUTCOME)


__all__ = ["bench", "cached_file", "cached_repos", "model_status", "models", "pull_files"]
