"""Tiny but real Moshi weights for tests: generated once per test session, never downloaded.

The files go into a temporary Hugging Face cache layout (`models--ORG--NAME/refs/main`,
`snapshots/SHA/FILE`) so the production loader finds them exactly as it finds a pulled repo:
- a tiny `models.Lm` (dim 32, 2 heads, 1 layer) built from a config dict of the released config.json
  form, keeping n_q 16, dep_q 8, card 2048 and the released delays;
- a sentencepiece model trained in-process (bpe; unk 0, bos 1, eos 2, pad 3);
- a full-size random Mimi file (rustymimi hard-codes the architecture), f16, per the reference manifest,
  with non-zero codebook `embedding_sum` (all-zero codebooks make every code 0).

`write_tiny_repo()` is plain code so the benchmark can generate the same files outside pytest.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TINY_REPO = "kyutai-test/moshiko-tiny"
SNAPSHOT_SHA = "0123456789abcdef0123456789abcdef01234567"
LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mimi_manifest.json"
# The released delays: text, then 8 generated (model) codebooks, then 8 codebooks of the caller.
RELEASED_DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]

_WORDS = (
    "hello there how are you doing today I am fine thanks for calling this is moshi speaking "
    "what can I do for you the weather is nice we can talk about anything you like goodbye"
).split()


@dataclass(frozen=True, slots=True)
class TinyRepo:
    cache_dir: Path  # the HF hub cache root (what HF_HUB_CACHE would point at)
    repo: str
    snapshot: Path  # the folder holding the files
    lm_config: dict

    def file(self, name: str) -> Path:
        return self.snapshot / name


def tiny_lm_config(text_card: int) -> dict:
    """A config dict in the form of the released config.json, shrunk to dim 32 / 2 heads / 1 layer."""
    return {
        "dim": 32,
        "text_card": text_card,
        "existing_text_padding_id": 3,
        "n_q": 16,
        "dep_q": 8,
        "card": 2048,
        "num_heads": 2,
        "num_layers": 1,
        "hidden_scale": 4.125,
        "causal": True,
        "layer_scale": None,
        "context": 3000,
        "max_period": 10000,
        "gating": "silu",
        "norm": "rms_norm_f32",
        "positional_embedding": "rope",
        "depformer_dim": 32,
        "depformer_dim_feedforward": 128,
        "depformer_num_heads": 2,
        "depformer_num_layers": 1,
        "depformer_causal": True,
        "depformer_layer_scale": None,
        "depformer_multi_linear": True,
        "depformer_context": 8,
        "depformer_max_period": 10000,
        "depformer_gating": "silu",
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": True,
        "delays": RELEASED_DELAYS,
        "moshi_name": LM_FILE,
        "mimi_name": MIMI_FILE,
        "tokenizer_name": TOKENIZER_FILE,
    }


def train_sentencepiece(vocab_size: int = 200) -> bytes:
    import sentencepiece as spm

    rng = random.Random(7)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    return model.getvalue()


def write_tiny_lm(path: Path, config: dict, seed: int = 0) -> None:
    import mlx.core as mx
    from moshi_mlx import models

    mx.random.seed(seed)
    model = models.Lm(models.LmConfig.from_config_dict(config))
    model.set_dtype(mx.bfloat16)  # as released, and what the loader casts to
    model.save_weights(str(path))


def write_random_mimi(path: Path, seed: int = 0) -> None:
    from safetensors.numpy import save_file

    manifest = json.loads(MANIFEST.read_text())
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in manifest:
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "embedding_sum":
            arr = rng.standard_normal(shape, dtype=np.float32)
        elif leaf in ("cluster_usage", "_initialized"):
            arr = np.ones(shape, np.float32)
        elif leaf == "scale":
            arr = np.full(shape, 0.01, np.float32)
        elif leaf == "bias":
            arr = np.zeros(shape, np.float32)
        elif "norm" in name:
            arr = np.ones(shape, np.float32)
        else:
            # 1/sqrt(fan_in) keeps activations bounded through the random conv and transformer stacks.
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            arr = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)
        tensors[name] = arr.astype(np.float16)
    save_file(tensors, str(path))


def write_tiny_repo(cache_dir: Path, repo: str = TINY_REPO, with_config: bool = True) -> TinyRepo:
    """Write the tiny Moshi repo into `cache_dir` in the Hugging Face hub cache layout."""
    import sentencepiece as spm

    repo_dir = cache_dir / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / SNAPSHOT_SHA
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(SNAPSHOT_SHA)

    sp_bytes = train_sentencepiece()
    (snapshot / TOKENIZER_FILE).write_bytes(sp_bytes)
    text_card = spm.SentencePieceProcessor(model_proto=sp_bytes).vocab_size()
    config = tiny_lm_config(text_card)
    if with_config:
        (snapshot / "config.json").write_text(json.dumps(config, indent=1))
    write_tiny_lm(snapshot / LM_FILE, config)
    write_random_mimi(snapshot / MIMI_FILE)
    return TinyRepo(cache_dir=cache_dir, repo=repo, snapshot=snapshot, lm_config=config)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRepo]:
    pytest.importorskip("moshi_mlx")
    pytest.importorskip("rustymimi")
    pytest.importorskip("sentencepiece")
    cache_dir = tmp_path_factory.mktemp("hf-cache")
    yield write_tiny_repo(cache_dir)
