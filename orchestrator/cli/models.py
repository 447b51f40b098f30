"""`orchestrator models pull | list | bench`, and `model_status()` for `orchestrator doctor`.

`models pull` is the one command that may use the network: it downloads a Moshi repo's files into the
Hugging Face cache with a progress bar, with hf_transfer disabled (a field report lost 37 minutes to
it). Everything else here reads the local cache only; only `models bench` loads the model (mlx and
moshi_mlx are imported inside it, through bridge.backends.moshi_bench).
"""

from __future__ import annotations

import json
import os
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
from orchestrator.cli.models_bench import bench
from orchestrator.cli.models_common import (
    EXTRA_FIX,
    _config,
    _missing_packages,
    _moshi_config,
    _needs_hub,
    cache_option,
    json_option,
    quantize_option,
    repo_option,
)


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


__all__ = ["bench", "cached_file", "cached_repos", "model_status", "models", "pull_files"]

models.add_command(bench)
