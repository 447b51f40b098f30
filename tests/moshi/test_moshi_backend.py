"""The real Moshi backend (moshi_mlx + rustymimi) on tiny generated weights: load, serve, refuse, end.

One backend is loaded per module (through the production loader, from a temporary Hugging Face cache)
while a local TCP socket posing as the Hub counts connection attempts; every session runs a few seconds
of audio at most. RUST_BACKTRACE=1 is set for the whole module, and every test checks that no Rust
backtrace reached stderr (file descriptor 2, where rustymimi's threads write).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

pytest.importorskip("moshi_mlx")
pytest.importorskip("rustymimi")

from bridge.backends.base import FRAME_SAMPLES, BackendBusy, BackendError
from bridge.backends.moshi import MoshiBackend, MoshiSession
from bridge.backends.moshi_loader import MissingModelFile, MoshiConfig, resolve_files
from tests.moshi.conftest import TinyRepo, mimi_layout, tiny_lm_config, write_tiny_lm

pytestmark = pytest.mark.moshi

FRAME_S = 0.08


class ConnectionTrap:
    """A local TCP listener standing in for the Hub: counts every connection, answers nothing."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@pytest.fixture(scope="module")
def hub_trap() -> Iterator[ConnectionTrap]:
    """HF_ENDPOINT -> a counting local socket, hf_transfer requested: any Hub traffic would show up."""
    import huggingface_hub.constants as hf_constants

    trap = ConnectionTrap()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", trap.url)
        mp.setenv("HF_HUB_ENABLE_HF_TRANSFER", "1")
        # huggingface_hub read these at import; make the running process see them too.
        mp.setattr(hf_constants, "ENDPOINT", trap.url)
        template = trap.url + "/{repo_id}/resolve/{revision}/{filename}"
        mp.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        # file_download took its own copy of the template when it was imported: whichever test imported
        # it first (a cache lookup does), the trap must see what it would fetch
        import huggingface_hub.file_download as hf_file_download

        mp.setattr(hf_file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        mp.setattr(hf_constants, "HF_HUB_ENABLE_HF_TRANSFER", True)
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        yield trap
    trap.close()


@pytest.fixture(scope="module")
def backend(tiny_repo: TinyRepo, hub_trap: ConnectionTrap) -> Iterator[MoshiBackend]:
    config = MoshiConfig(
        hf_repo=tiny_repo.repo, quantize=None, cache_dir=tiny_repo.cache_dir, tokenizer_dead_after_s=2.0
    )
    moshi = MoshiBackend(config)
    with pytest.MonkeyPatch.context() as mp:
        # As on a developer's machine: without the backend's own setting, every error a rustymimi
        # thread prints would carry a ~37-line backtrace.
        mp.setenv("RUST_BACKTRACE", "1")
        mp.delenv("RUST_LIB_BACKTRACE", raising=False)
        # The backend keeps nothing bound to an event loop, so one load serves every test's loop.
        asyncio.run(moshi.load())
    yield moshi
    asyncio.run(moshi.aclose())


@pytest.fixture(autouse=True)
def no_rust_backtraces(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    yield
    err = capfd.readouterr().err
    assert "Stack backtrace" not in err, err[-2000:]


def noise(seed: int) -> Iterator[NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    while True:
        yield (0.1 * rng.standard_normal(FRAME_SAMPLES)).astype(np.float32)


def wait_decoded(tokenizer: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while tokenizer.get_decoded() is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)


async def run_frames(
    session: MoshiSession, frames: int, seed: int = 0, until_ended: bool = False, min_out: int = 0
) -> tuple[list[NDArray[np.float32]], list[str], list[float]]:
    """Push frames at the phone's pace; return everything the session produced.

    With `min_out`, keeps going (up to 4x `frames`) until that many frames came out: a loaded CI machine
    makes the codec pipeline lag, and the test is about what comes out, not how fast.
    """
    out_frames: list[NDArray[np.float32]] = []
    texts: list[str] = []
    step_ms: list[float] = []
    source = noise(seed)
    for i in range(4 * frames):
        if i >= frames and len(out_frames) >= min_out:
            break
        started = time.monotonic()
        out = await session.process(next(source))
        out_frames += out.frames
        texts += out.text
        if out.step_ms is not None:
            step_ms.append(out.step_ms)
        if until_ended and session.ended:
            break
        await asyncio.sleep(max(0.0, FRAME_S - (time.monotonic() - started)))
    return out_frames, texts, step_ms


async def test_loads_from_cache_and_serves_without_touching_the_network(
    backend: MoshiBackend, hub_trap: ConnectionTrap, tiny_repo: TinyRepo
) -> None:
    assert backend.load_seconds is not None and backend.load_seconds > 0
    assert backend.model.files.moshi_weight.parent == tiny_repo.snapshot
    assert backend.model.files.lm_config_source.endswith("config.json")

    session = await backend.open_session("call-serve", max_seconds=30)
    try:
        frames, texts, step_ms = await run_frames(session, frames=30, min_out=8)
    finally:
        await session.close()

    # Pipelined: the first frames give nothing, then about one frame out per frame in.
    assert 8 <= len(frames) <= session.steps
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.float32 for f in frames)
    assert all(np.isfinite(f).all() for f in frames)
    assert max(float(np.abs(f).max()) for f in frames) > 0  # the random decoder makes sound, not zeros
    assert step_ms and all(ms > 0 for ms in step_ms)
    vocab = {
        backend.model.text_tokenizer.id_to_piece(i) for i in range(backend.model.text_tokenizer.vocab_size())
    }
    assert texts, "the random model should emit some text"
    assert all(t.replace(" ", "▁") in vocab for t in texts)
    assert not {"<unk>", "<pad>", "<s>", "</s>"} & set(texts)  # padding and control pieces are no text

    assert hub_trap.connections == 0
    # The trap does catch Hub traffic: a real download attempt is counted.
    import huggingface_hub

    with pytest.raises(Exception):  # noqa: B017 - whatever the client makes of a closed socket
        huggingface_hub.hf_hub_download(
            tiny_repo.repo, "not-cached.bin", cache_dir=tiny_repo.cache_dir, etag_timeout=2
        )
    assert hub_trap.connections >= 1


async def test_second_call_is_refused_while_one_is_served(backend: MoshiBackend) -> None:
    first = await backend.open_session("call-a", max_seconds=10)
    assert backend.busy
    with pytest.raises(BackendBusy, match="call-a"):
        await backend.open_session("call-b", max_seconds=10)
    await first.close()
    await first.close()  # safe twice
    assert not backend.busy
    second = await backend.open_session("call-b", max_seconds=10)
    try:
        # Fresh state per call: the KV cache starts empty and the step count at zero.
        assert second.steps == 0
        assert all(c.self_attn.offset == 0 for c in backend.model.lm.transformer_cache)
    finally:
        await second.close()


async def test_budget_ends_the_call_before_lmgen_runs_out(backend: MoshiBackend) -> None:
    session = await backend.open_session("call-budget", max_seconds=1.0)
    try:
        await run_frames(session, frames=100, until_ended=True)
        assert session.ended is not None and session.ended.startswith("budget_exhausted:")
        assert session.budget_steps == 13
        assert 10 <= session.steps <= session.budget_steps
        after = await session.process(np.zeros(FRAME_SAMPLES, np.float32))
        assert after.frames == [] and after.step_ms is None
    finally:
        await session.close()


async def test_dead_tokenizer_thread_ends_the_call_with_a_reason(
    backend: MoshiBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    session = await backend.open_session("call-dead", max_seconds=30)
    try:
        # Codes shaped (2, 8) as the decoder's first input poison its streaming state: that one decodes,
        # then every later decode fails inside the Rust thread and get_decoded() returns None forever.
        session.tokenizer.decode(np.zeros((2, 8), np.uint32))
        await asyncio.to_thread(wait_decoded, session.tokenizer, 10.0)
        # Until it ends: how soon depends on how much CPU this process gets (see mimi_stream.py).
        frames, _, _ = await run_frames(session, frames=300, until_ended=True)
        assert frames == []
        assert session.ended is not None and session.ended.startswith("tokenizer_dead:"), session.ended
        assert "decoder" in session.ended and "s of CPU" in session.ended
        # Once codec_max_pending frames went unanswered the decoder was given no more.
        assert session.frames_pending["decoder"] == backend.config.codec_max_pending
        assert session.frames_dropped["decoder"] > 0
    finally:
        await session.close()
    assert not backend.busy
    # The dead decoder is let go of; the live encoder was drained first (else: error lines later).
    assert session.retirement is not None
    session.retirement.join(timeout=60)
    assert session.retirement.left == {"decoder": backend.config.codec_max_pending}
    # The thread's errors reach stderr one line per frame it was given, and no backtrace with them.
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error in decoder thread")]
    assert 1 <= len(errors) <= backend.config.codec_max_pending, err[-2000:]
    assert "Stack backtrace" not in err


async def test_hang_up_with_codec_work_queued_prints_nothing(
    backend: MoshiBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    original = backend.config
    backend.config = dataclasses.replace(original, codec_max_pending=2)  # read when a session opens
    try:
        session = await backend.open_session("call-queued", max_seconds=30)
    finally:
        backend.config = original
    # A burst faster than the encoder can take: two frames queue, the rest are dropped.
    source = noise(3)
    for _ in range(12):
        await session.process(next(source))
    assert session.frames_pending["encoder"] > 0
    assert session.frames_dropped["encoder"] > 0
    assert session.frames_pending["encoder"] + session.frames_pending["decoder"] <= 4
    await session.close()
    retirement = session.retirement
    assert retirement is not None
    del session  # from here only the retiring thread holds the tokenizer
    gc.collect()
    retirement.join(timeout=60)
    assert not retirement.is_alive() and retirement.left == {}
    await asyncio.sleep(1.0)  # room for a Rust thread to finish a frame into a dropped receiver
    # Every queued frame was answered while its receiver existed: no "sending on a closed channel".
    assert "error in" not in capfd.readouterr().err


async def test_a_hung_worker_step_ends_the_call_instead_of_hanging(backend: MoshiBackend) -> None:
    session = await backend.open_session("call-hung", max_seconds=30)
    original = backend.config
    backend.config = dataclasses.replace(original, step_timeout_s=0.3)
    try:
        blocker = backend.worker.submit(time.sleep, 1.0)  # the worker is busy elsewhere
        out = await session.process(np.zeros(FRAME_SAMPLES, np.float32))
        assert out.frames == []
        assert session.ended is not None and session.ended.startswith("worker_timeout:")
        blocker.result(timeout=5)
    finally:
        backend.config = original
        await session.close()


def test_missing_file_names_repo_file_cache_and_pull_command(tmp_path: Path) -> None:
    config = MoshiConfig(hf_repo="kyutai/moshiko-mlx-q4", quantize=4, cache_dir=tmp_path)
    with pytest.raises(MissingModelFile) as err:
        resolve_files(config)
    text = str(err.value)
    assert "kyutai/moshiko-mlx-q4" in text
    assert "model.q4.safetensors" in text
    assert str(tmp_path) in text
    assert "orchestrator models pull --repo kyutai/moshiko-mlx-q4 --quantize 4" in text

    with pytest.raises(MissingModelFile, match="--moshi-weight"):
        resolve_files(dataclasses.replace(config, moshi_weight=tmp_path / "nope.safetensors"))

    backend = MoshiBackend(config)
    with pytest.raises(MissingModelFile, match=r"model\.q4\.safetensors"):
        asyncio.run(backend.load())
    assert backend.load_seconds is None


def test_weights_that_do_not_fit_the_config_name_file_and_expectation(
    tiny_repo: TinyRepo, tmp_path: Path
) -> None:
    from bridge.backends.moshi_loader import load_model

    wide = tmp_path / "wide.safetensors"
    write_tiny_lm(wide, {**tiny_lm_config(tiny_repo.lm_config["text_card"]), "dim": 64})
    config = MoshiConfig(
        hf_repo=tiny_repo.repo, quantize=None, cache_dir=tiny_repo.cache_dir, moshi_weight=wide
    )
    with pytest.raises(BackendError) as err:
        load_model(config)
    text = str(err.value)
    assert str(wide) in text
    assert "wrong shape" in text and "expected (" in text and "(2049, 32)" in text

    # The file's own quantization wins over the setting: a bf16 file configured as 4-bit loads as bf16.
    loaded = load_model(
        dataclasses.replace(config, moshi_weight=tiny_repo.file("model.safetensors"), quantize=4)
    )
    assert loaded.quantize is None


def test_quantization_is_read_from_the_weights_file() -> None:
    from bridge.backends.moshi_loader import detect_quantize

    def shaped(*shape: int) -> NDArray[np.float32]:
        return np.zeros(shape, np.float32)

    dim = 4096  # a released Linear: 4096 inputs
    q4 = {
        "l.weight": shaped(8, dim * 4 // 32),
        "l.scales": shaped(8, dim // 32),
        "l.biases": shaped(8, dim // 32),
    }
    q8 = {
        "l.weight": shaped(8, dim * 8 // 32),
        "l.scales": shaped(8, dim // 64),
        "l.biases": shaped(8, dim // 64),
    }
    assert detect_quantize(q4) == 4
    assert detect_quantize(q8) == 8
    assert detect_quantize({"l.weight": shaped(8, dim)}) is None


def test_settings_pick_repo_and_quantization() -> None:
    assert MoshiConfig.from_env({}).hf_repo == "kyutai/moshiko-mlx-q4"
    eight = MoshiConfig.from_env({"MOSHI_QUANTIZE": "8"})
    assert (eight.hf_repo, eight.quantize) == ("kyutai/moshiko-mlx-q8", 8)
    bf16 = MoshiConfig.from_env({"MOSHI_QUANTIZE": "none", "MOSHI_HF_REPO": "kyutai/moshika-mlx-bf16"})
    assert (bf16.hf_repo, bf16.quantize) == ("kyutai/moshika-mlx-bf16", None)
    with pytest.raises(ValueError, match="q4"):
        MoshiConfig(hf_repo="kyutai/moshiko-mlx-q4", quantize=8)
    explicit = MoshiConfig.from_env({}, moshi_weight="~/w.safetensors")
    assert explicit.moshi_weight == Path("~/w.safetensors").expanduser()


class FakeHub:
    """Just enough of the Hub's resolve endpoint for hf_hub_download: HEAD/GET a file, 404 otherwise."""

    COMMIT = "fedcba9876543210fedcba9876543210fedcba98"

    def __init__(self, files: dict[str, bytes]) -> None:
        import http.server

        hub = self
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                name = self.path.split("/resolve/main/", 1)[-1]
                data = files.get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", FakeHub.COMMIT)
                self.send_header("ETag", f'"{abs(hash(data))}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_models_pull_fills_the_cache_that_serving_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hf_constants
    from click.testing import CliRunner

    from orchestrator.cli.models import model_status, models, pull_files

    # hf_transfer requested but not installed: pull must still work because it turns hf_transfer off.
    monkeypatch.setattr(hf_constants, "HF_HUB_ENABLE_HF_TRANSFER", True)
    files = {
        "model.q8.safetensors": b"weights" * 100,
        "tokenizer-e351c8d8-checkpoint125.safetensors": b"mimi" * 100,
        "tokenizer_spm_32k_3.model": b"spm" * 10,
    }
    hub = FakeHub(files)
    config = MoshiConfig(hf_repo="kyutai/moshiko-mlx-q8", quantize=8, cache_dir=tmp_path)
    assert model_status(config=config)["ready"] is False
    try:
        fetched = pull_files(config, echo=lambda _m: None, endpoint=hub.url)
    finally:
        hub.close()
    assert set(fetched) == set(files)  # no config.json upstream: the built-in config is used
    assert any("config.json" in r for r in hub.requests)
    resolved = resolve_files(config)
    assert resolved.moshi_weight.read_bytes() == files["model.q8.safetensors"]
    assert resolved.lm_config is None and "built-in" in resolved.lm_config_source
    status = model_status(config=config)
    assert status["ready"] is True and status["files"]["moshi_weight"]["bytes"] == 700

    listed = CliRunner().invoke(models, ["list", "--cache-dir", str(tmp_path), "--json"])
    assert listed.exit_code == 0, listed.output
    import json

    repos = json.loads(listed.output)["repos"]
    assert [r["repo"] for r in repos] == ["kyutai/moshiko-mlx-q8"]
    assert {f["name"]: f["bytes"] for f in repos[0]["files"]}["model.q8.safetensors"] == 700


def test_generated_mimi_layout_matches_the_reference_manifest() -> None:
    import json

    manifest = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mimi_manifest.json"
    if not manifest.is_file():
        pytest.skip(f"reference manifest not present at {manifest}")
    expected = {name: tuple(shape) for name, shape in json.loads(manifest.read_text())}
    layout = dict(mimi_layout())
    assert len(layout) == len(mimi_layout()) == 318
    assert layout == expected
