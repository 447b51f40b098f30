"""Finding the Moshi files on disk: explicit paths first, else the local Hugging Face cache.

Serving never touches the network: files are looked up with `try_to_load_from_cache` (plain file
lookups; no HTTP client, so neither `HF_ENDPOINT` nor `HF_HUB_ENABLE_HF_TRANSFER` can slow it down). A
missing file is one `MissingModelFile` naming the repo, the file, the cache folder searched and the
command that fetches it (`orchestrator models pull`). Only `orchestrator models pull` downloads.

Loading (`load_model`, `new_tokenizer`) imports mlx, moshi_mlx and rustymimi inside the functions, so
the CLI and `doctor` can import this module on machines without the moshi extra.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.backends.base import BackendError

log = logging.getLogger(__name__)

DEFAULT_REPO = "kyutai/moshiko-mlx-q4"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TEXT_TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
CONFIG_FILE = "config.json"
_REPO_SUFFIX = {4: "-q4", 8: "-q8", None: "-bf16"}


class MissingModelFile(BackendError):
    """A Moshi file is neither at its explicit path nor in the local Hugging Face cache."""


def parse_quantize(value: str | int | None) -> int | None:
    """`4`, `8` or `none` (settings and CLI spelling) -> 4, 8 or None."""
    if value is None or str(value).strip().lower() in ("", "none", "bf16", "0"):
        return None
    if str(value).strip() in ("4", "8"):
        return int(value)
    raise ValueError(f"MOSHI_QUANTIZE must be 4, 8 or none, got {value!r}")


def default_repo(quantize: int | None, voice: str = "moshiko") -> str:
    """The released MLX repo for a voice (`moshiko` or `moshika`) and quantization."""
    return f"kyutai/{voice}-mlx{_REPO_SUFFIX[quantize]}"


def weight_file_name(quantize: int | None) -> str:
    return {4: "model.q4.safetensors", 8: "model.q8.safetensors", None: "model.safetensors"}[quantize]


@dataclass(frozen=True, slots=True)
class MoshiConfig:
    """Where the Moshi files come from and how the backend runs. Built by the caller (CLI, settings).

    Explicit paths override the repo file by file. `cache_dir` None means the Hugging Face default
    (`HF_HUB_CACHE` / `HF_HOME`).
    """

    hf_repo: str = DEFAULT_REPO
    quantize: int | None = 4  # picks the repo file (model.q4...); the loaded file's own layout wins
    moshi_weight: Path | None = None
    mimi_weight: Path | None = None
    tokenizer: Path | None = None
    lm_config: Path | None = None
    cache_dir: Path | None = None
    # Runtime knobs: every wait has a timeout.
    load_timeout_s: float = 900.0  # a 4-bit 7B model loads in well under a minute on a Mac
    step_timeout_s: float = 5.0  # one process() hand-off to the worker thread
    # Codec liveness (bridge/backends/mimi_stream.py): frames pending with no output for this long on
    # the wall clock *and* in this process's CPU time = a dead thread; a busy machine alone cannot do it.
    tokenizer_dead_after_s: float = 3.0
    tokenizer_stalled_after_s: float = 20.0  # no output this long on the wall clock alone ends it too
    codec_max_pending: int = 6  # frames queued per codec direction (~0.5 s); more are dropped
    budget_grace_steps: int = 13  # end the call ~1 s before LmGen's hard max_steps
    # MLX on CPU compiles fused kernels with g++ at run time: ~2 s once (cached under $TMPDIR), then
    # steps are ~35 % faster. Warm-up falls back to no compilation by itself when g++ is missing.
    disable_compile: bool = False
    seed: int = 299792458

    def __post_init__(self) -> None:
        if self.quantize not in (4, 8, None):
            raise ValueError(f"quantize must be 4, 8 or None, got {self.quantize!r}")
        name = self.hf_repo.rsplit("/", 1)[-1]
        for q, suffix in _REPO_SUFFIX.items():
            if name.endswith(suffix) and q != self.quantize and self.moshi_weight is None:
                raise ValueError(
                    f"repo {self.hf_repo} holds {suffix[1:]} weights but quantize is {self.quantize}; "
                    f"use --quantize {q or 'none'} or the repo {default_repo(self.quantize)}"
                )

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> MoshiConfig:
        """From the orchestrator's Settings (`moshi_hf_repo`, `moshi_quantize`); keyword arguments win."""
        env = {
            "MOSHI_HF_REPO": str(getattr(settings, "moshi_hf_repo", "") or ""),
            "MOSHI_QUANTIZE": str(getattr(settings, "moshi_quantize", "4") or "4"),
        }
        return cls.from_env(env, **overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> MoshiConfig:
        """From `MOSHI_HF_REPO` / `MOSHI_QUANTIZE` (explicit keyword arguments win)."""
        env = os.environ if env is None else env
        quantize = parse_quantize(env.get("MOSHI_QUANTIZE", "4"))
        repo = env.get("MOSHI_HF_REPO") or ""
        if repo == DEFAULT_REPO and quantize != 4:
            repo = ""  # the default repo follows MOSHI_QUANTIZE (settings always carry a repo value)
        kwargs: dict[str, Any] = {"quantize": quantize, "hf_repo": repo}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("quantize") is not None:
            kwargs["quantize"] = parse_quantize(overrides["quantize"])
        if not kwargs["hf_repo"]:
            kwargs["hf_repo"] = default_repo(kwargs["quantize"])
        for key in ("moshi_weight", "mimi_weight", "tokenizer", "lm_config", "cache_dir"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key]).expanduser()
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class ResolvedFiles:
    """The files one load uses, and where the LM config came from."""

    moshi_weight: Path
    mimi_weight: Path
    tokenizer: Path
    lm_config: dict[str, Any] | None  # None: moshi_mlx's built-in v0.1 config
    lm_config_source: str


def hub_cache_dir(config: MoshiConfig) -> Path:
    if config.cache_dir is not None:
        return config.cache_dir
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def pull_command(config: MoshiConfig) -> str:
    q = "none" if config.quantize is None else str(config.quantize)
    return f"orchestrator models pull --repo {config.hf_repo} --quantize {q}"


def cached_file(config: MoshiConfig, filename: str) -> Path | None:
    """The cached path of `filename` in the configured repo, or None. File lookups only."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(config.hf_repo, filename, cache_dir=hub_cache_dir(config))
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _explicit(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise MissingModelFile(f"{flag} {path}: no such file")
    return path


def _from_cache(config: MoshiConfig, filename: str, flag: str) -> Path:
    found = cached_file(config, filename)
    if found is None:
        raise MissingModelFile(
            f"Moshi file {filename!r} of repo {config.hf_repo!r} is not in the local Hugging Face cache "
            f"(searched {hub_cache_dir(config)}). Serving never downloads. Fetch it with: "
            f"`{pull_command(config)}`, or pass {flag} PATH."
        )
    return found


def load_lm_config(config: MoshiConfig) -> tuple[dict[str, Any] | None, str]:
    """The LM config dict and its source: --lm-config, else the repo's cached config.json, else built-in."""
    if config.lm_config is not None:
        path = _explicit(config.lm_config, "--lm-config")
    else:
        cached = cached_file(config, CONFIG_FILE)
        if cached is None:
            return None, "moshi_mlx built-in config_v0_1"
        path = cached
    try:
        return json.loads(path.read_text()), str(path)
    except (OSError, ValueError) as err:
        raise BackendError(f"LM config {path}: not readable JSON ({err})") from err


def resolve_files(config: MoshiConfig) -> ResolvedFiles:
    """Every file a load needs, or MissingModelFile for the first one that is missing."""
    lm_config, source = load_lm_config(config)
    names = lm_config or {}
    if config.moshi_weight is not None:
        moshi = _explicit(config.moshi_weight, "--moshi-weight")
    else:
        name = names.get("moshi_name") or weight_file_name(config.quantize)
        moshi = _from_cache(config, name, "--moshi-weight")
    if config.mimi_weight is not None:
        mimi = _explicit(config.mimi_weight, "--mimi-weight")
    else:
        mimi = _from_cache(config, names.get("mimi_name") or MIMI_FILE, "--mimi-weight")
    if config.tokenizer is not None:
        text_tok = _explicit(config.tokenizer, "--tokenizer")
    else:
        text_tok = _from_cache(config, names.get("tokenizer_name") or TEXT_TOKENIZER_FILE, "--tokenizer")
    return ResolvedFiles(moshi, mimi, text_tok, lm_config, source)


def repo_files(config: MoshiConfig) -> list[str]:
    """The files `models pull` fetches for this config (config.json is optional upstream)."""
    return [weight_file_name(config.quantize), MIMI_FILE, TEXT_TOKENIZER_FILE]


# --- Loading (imports mlx lazily: only the serving process needs it) ---------------------------------


@dataclass(slots=True)
class LoadedModel:
    """The loaded LM, its text tokenizer and where everything came from."""

    lm: Any  # moshi_mlx.models.Lm
    text_tokenizer: Any  # sentencepiece.SentencePieceProcessor
    ct: Any  # condition tensor, or None for models without conditioners
    files: ResolvedFiles
    quantize: int | None

    @property
    def num_codebooks(self) -> int:
        return int(self.lm.cfg.depformer.num_slices)

    @property
    def max_delay(self) -> int:
        return int(max(self.lm.cfg.audio_delays))

    def reset_caches(self) -> None:
        """Forget the previous conversation: the main transformer's KV cache (the depformer's is per step)."""
        for cache in [*self.lm.transformer_cache, *self.lm.depformer_cache]:
            cache.reset()

    def describe(self) -> str:
        return (
            f"weights {self.files.moshi_weight}, mimi {self.files.mimi_weight}, "
            f"config {self.files.lm_config_source}, quantize {self.quantize}"
        )


def _weight_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """What differs between the model's parameters and a weights file, in words; None when they match."""
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    wrong = [
        f"{k}: file has {tuple(found[k].shape)}, expected {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & found.keys())
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. " + "; ".join(wrong[:3]))
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, e.g. {', '.join(missing[:3])}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s), e.g. {', '.join(extra[:3])}")
    return " | ".join(problems) or None


def detect_quantize(weights: Mapping[str, Any]) -> int | None:
    """4, 8 or None from a weights file's tensors (anything with `.shape`).

    A quantized Linear stores `weight` packed into uint32 (in * bits / 32 columns) and one scale per
    group (in / group_size columns): packed/scales is 4 for q4 (group 32) and 16 for q8 (group 64).
    """
    for name, scales in weights.items():
        if name.endswith(".scales"):
            packed = weights.get(name[: -len(".scales")] + ".weight")
            if packed is None:
                continue
            ratio = packed.shape[-1] / scales.shape[-1]
            return {4.0: 4, 16.0: 8}.get(ratio)
    return None


def load_model(config: MoshiConfig) -> LoadedModel:
    """Resolve the files (cache only) and load the LM and text tokenizer. Blocking: run it off the loop."""
    import mlx.core as mx
    import mlx.nn as nn
    import sentencepiece
    from mlx.utils import tree_flatten
    from moshi_mlx.models.lm import Lm, LmConfig, config_v0_1

    if config.disable_compile:
        mx.disable_compile()
    files = resolve_files(config)
    try:
        text_tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
    except (OSError, RuntimeError) as err:
        raise BackendError(f"text tokenizer {files.tokenizer}: not a sentencepiece model ({err})") from err
    lm_config = LmConfig.from_config_dict(files.lm_config) if files.lm_config else config_v0_1()
    if text_tokenizer.vocab_size() < lm_config.text_out_vocab_size:
        raise BackendError(
            f"text tokenizer {files.tokenizer} has {text_tokenizer.vocab_size()} pieces but the LM config "
            f"({files.lm_config_source}) emits {lm_config.text_out_vocab_size} text ids"
        )
    try:
        weights = mx.load(str(files.moshi_weight))
    except (OSError, RuntimeError, ValueError) as err:
        raise BackendError(
            f"Moshi weights {files.moshi_weight}: not a readable safetensors file ({err})"
        ) from err
    # The file says how it was quantized; trusting it makes `--moshi-weight model.q8...` just work.
    quantize = detect_quantize(weights)
    if quantize != config.quantize:
        log.warning(
            "%s holds %s weights; using that instead of quantize %s",
            files.moshi_weight,
            f"{quantize}-bit" if quantize else "unquantized",
            config.quantize,
        )
    mx.random.seed(config.seed)
    lm = Lm(lm_config)
    lm.set_dtype(mx.bfloat16)
    if quantize is not None:
        try:
            group_size = 32 if quantize == 4 else 64  # what the released q4 / q8 files use
            nn.quantize(lm, bits=quantize, group_size=group_size)  # type: ignore[attr-defined]
        except ValueError as err:
            raise BackendError(
                f"Moshi weights {files.moshi_weight} are {quantize}-bit but the LM config "
                f"({files.lm_config_source}) cannot be quantized to {quantize} bits ({err})"
            ) from err
    mismatch = _weight_mismatch(dict(tree_flatten(lm.parameters())), weights)
    if mismatch is not None:
        q = "none" if quantize is None else quantize
        raise BackendError(
            f"Moshi weights {files.moshi_weight} do not fit the LM config ({files.lm_config_source}) with "
            f"quantize {q}: {mismatch}. Check that --lm-config describes this model."
        )
    try:
        lm.load_weights(list(weights.items()), strict=True)
    except ValueError as err:
        raise BackendError(f"Moshi weights {files.moshi_weight}: {err}") from err
    ct = None
    if lm.condition_provider is not None:
        ct = lm.condition_provider.condition_tensor("description", "very_good")
    return LoadedModel(lm=lm, text_tokenizer=text_tokenizer, ct=ct, files=files, quantize=quantize)


def new_tokenizer(model: LoadedModel) -> Any:
    """A fresh rustymimi StreamTokenizer (its encoder and decoder each run on their own thread)."""
    from bridge.backends.mimi_stream import quiet_error_backtraces

    quiet_error_backtraces()  # before the first tokenizer: Rust reads it once, at the first error
    import rustymimi

    try:
        return rustymimi.StreamTokenizer(str(model.files.mimi_weight), num_codebooks=model.num_codebooks)
    except Exception as err:  # rustymimi raises plain exceptions for unreadable or mis-shaped files
        raise BackendError(
            f"Mimi weights {model.files.mimi_weight}: rustymimi could not load them ({err}); expected the "
            f"released Mimi layout ({MIMI_FILE})"
        ) from err
