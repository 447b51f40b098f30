"""What the `models` commands share: the moshi extra's check, the model's configuration from the
environment and options, and the options themselves."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import click

from bridge.backends.moshi_loader import MoshiConfig
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


REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def _moshi_config(**overrides: Any) -> MoshiConfig:
    """MoshiConfig from the environment and options, or a one-line UserError naming what is wrong."""
    try:
        return MoshiConfig.from_env(**overrides)
    except ValueError as err:
        raise exits.UserError(f"{err}; fix it in .env or the environment, or pass --quantize") from err


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
