"""Tiny but real Moshi weights for tests: generated once per test session, never downloaded.

The files go into a temporary Hugging Face cache layout (`models--ORG--NAME/refs/main`,
`snapshots/SHA/FILE`) so the production loader finds them exactly as it finds a pulled repo:
- a tiny `models.Lm` (dim 32, 2 heads, 1 layer) built from a config dict of the released config.json
  form, keeping n_q 16, dep_q 8, card 2048 and the released delays;
- a sentencepiece model trained in-process (bpe; unk 0, bos 1, eos 2, pad 3);
- a full-size random Mimi file (rustymimi hard-codes the architecture), f16, in the released layout
  (`mimi_layout()`), with non-zero codebook `embedding_sum` (all-zero codebooks make every code 0).

`write_tiny_repo()` is plain code so the benchmark can generate the same files outside pytest.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TINY_REPO = "kyutai-test/moshiko-tiny"
SNAPSHOT_SHA = "0123456789abcdef0123456789abcdef01234567"
LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
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
    lm_config: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.snapshot / name


def tiny_lm_config(text_card: int) -> dict[str, Any]:
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


def write_tiny_lm(path: Path, config: dict[str, Any], seed: int = 0) -> None:
    import mlx.core as mx
    from moshi_mlx.models.lm import Lm, LmConfig

    mx.random.seed(seed)
    model = Lm(LmConfig.from_config_dict(config))
    model.set_dtype(mx.bfloat16)  # as released, and what the loader casts to
    model.save_weights(str(path))


def mimi_layout() -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes of the released Mimi file (rustymimi hard-codes this architecture).

    Built from the architecture rather than read from ../shared/reference/mimi_manifest.json, which is
    not part of the repository; a test checks the two agree wherever the manifest is present.
    """
    out: list[tuple[str, tuple[int, ...]]] = []

    def conv(prefix: str, kind: str, shape: tuple[int, ...], bias: bool = True) -> None:
        if bias:
            out.append((f"{prefix}.{kind}.{kind}.bias", (shape[1] if kind == "convtr" else shape[0],)))
        out.append((f"{prefix}.{kind}.{kind}.weight", shape))

    def resblock(prefix: str, ch: int) -> None:
        conv(f"{prefix}.block.1", "conv", (ch // 2, ch, 3))
        conv(f"{prefix}.block.3", "conv", (ch, ch // 2, 1))

    conv("encoder.model.0", "conv", (64, 1, 7))
    ch = 64
    for i, ratio in enumerate((4, 5, 6, 8)):  # residual block, then a strided conv doubling channels
        resblock(f"encoder.model.{3 * i + 1}", ch)
        conv(f"encoder.model.{3 * i + 3}", "conv", (2 * ch, ch, 2 * ratio))
        ch *= 2
    conv("encoder.model.14", "conv", (512, 1024, 3))
    conv("decoder.model.0", "conv", (1024, 512, 7))
    for i, ratio in enumerate((8, 6, 5, 4)):  # transposed conv halving channels, then a residual block
        conv(f"decoder.model.{3 * i + 2}", "convtr", (ch, ch // 2, 2 * ratio))
        ch //= 2
        resblock(f"decoder.model.{3 * i + 3}", ch)
    conv("decoder.model.14", "conv", (1, 64, 3))
    for side in ("encoder", "decoder"):
        for layer in range(8):
            p = f"{side}_transformer.transformer.layers.{layer}"
            out += [
                (f"{p}.layer_scale_1.scale", (512,)),
                (f"{p}.layer_scale_2.scale", (512,)),
                (f"{p}.linear1.weight", (2048, 512)),
                (f"{p}.linear2.weight", (512, 2048)),
                (f"{p}.norm1.bias", (512,)),
                (f"{p}.norm1.weight", (512,)),
                (f"{p}.norm2.bias", (512,)),
                (f"{p}.norm2.weight", (512,)),
                (f"{p}.self_attn.in_proj_weight", (1536, 512)),
                (f"{p}.self_attn.out_proj.weight", (512, 512)),
            ]
    out.append(("downsample.conv.conv.conv.weight", (512, 512, 4)))
    out.append(("upsample.convtr.convtr.convtr.weight", (512, 1, 4)))
    for rvq, layers in (("rvq_first", 1), ("rvq_rest", 31)):
        q = f"quantizer.{rvq}"
        out += [(f"{q}.input_proj.weight", (256, 512, 1)), (f"{q}.output_proj.weight", (512, 256, 1))]
        for layer in range(layers):
            cb = f"{q}.vq.layers.{layer}._codebook"
            out += [
                (f"{cb}._initialized", (1,)),
                (f"{cb}.cluster_usage", (2048,)),
                (f"{cb}.embedding_sum", (2048, 256)),
            ]
    return out


def write_random_mimi(path: Path, seed: int = 0) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors: dict[str, Any] = {}
    for name, shape in mimi_layout():
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
    shutil.rmtree(cache_dir, ignore_errors=True)  # ~200 MB: don't leave it to pytest's tmp retention


def started_local_web(repo: TinyRepo, workdir: Path, *extra: str) -> Any:
    """A real `moshi_mlx.local_web` on 127.0.0.1 with the tiny weights (tests/moshi/local_web_server.py);
    its failure to start is a test failure with the server's log tail."""
    pytest.importorskip("sphn")
    from tests.moshi.local_web_server import LocalWebFailed, start_local_web

    try:
        return start_local_web(repo, workdir, *extra)
    except LocalWebFailed as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def local_web(tiny_repo: TinyRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local_web per test module, killed (its whole process group) after the module."""
    server = started_local_web(tiny_repo, tmp_path_factory.mktemp("local-web"))
    yield server
    server.kill()
