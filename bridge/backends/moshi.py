"""The real Moshi backend: moshi_mlx `Lm` + `LmGen` for the model, rustymimi `StreamTokenizer` for audio.

Theory of operation. One worker thread (a single-thread executor) owns all MLX work; the event loop
only hands it frames. Each `process(frame)` hands the frame to the Mimi encoder (its own Rust thread),
runs one LM step for every frame of codes the encoder has finished, hands the model's audio codes to
the Mimi decoder (another Rust thread), and returns whatever PCM the decoder has finished: pipelined,
so the first few steps return no audio. Nothing here waits for the codec: outputs are polled. Each
direction is a `mimi_stream.CodecStage`: at most `codec_max_pending` frames queued (more are dropped:
a codec behind real time cannot catch up), dead only when frames stay pending with no output while
both the clock and this process's CPU time run on (a busy machine slows a live thread; it does not
silence it while we burn CPU), and retired at hang-up until its queued frames are done.

Why a thread and not a process, measured by benchmarks/moshi_overhead.py on a loaded 2-core CPU: a
bare hand-off to the worker costs ~0.07 ms (p50), everything outside model compute ~0.5 ms p50 / ~4 ms
p99 per frame, and the event loop stays responsive while the model steps (timer lag p99 ~4 ms). A
process would add pickling on every frame, a second interpreter and a model load per worker, to win
back at most those few milliseconds.

Each call gets fresh state: cleared KV caches, a new `LmGen` sized from the call's budget (moshi_mlx's
own server makes one for the whole process), and a fresh `StreamTokenizer` (prepared while idle).
One call at a time: a second `open_session` raises BackendBusy.

This module must never touch the network, never import `moshi_mlx.local` (it needs PortAudio), and
never block the event loop: every wait on the worker has a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.backends.base import (
    FRAME_SAMPLES,
    BackendBusy,
    BackendError,
    BackendSession,
    SpeechBackend,
    StepOutput,
    frame_pcm,
)
from bridge.backends.mimi_stream import CodecStage, Retirement, retire
from bridge.backends.moshi_loader import LoadedModel, MoshiConfig, load_model, new_tokenizer

__all__ = ["CodecStage", "MoshiBackend", "MoshiConfig", "MoshiSession", "codec_stages"]

log = logging.getLogger(__name__)

STEPS_PER_SECOND = 12.5  # one Mimi frame every 80 ms
TEXT_PADDING_IDS = (0, 3)  # end-of-text padding and padding: not text the model said


def codec_stages(tokenizer: Any, config: MoshiConfig) -> tuple[CodecStage, CodecStage]:
    """The encoder and decoder stages of one StreamTokenizer, bounded and judged as configured."""

    def stage(name: str, put: Any, get: Any) -> CodecStage:
        return CodecStage(
            name,
            put,
            get,
            dead_after_s=config.tokenizer_dead_after_s,
            stalled_after_s=config.tokenizer_stalled_after_s,
            max_pending=config.codec_max_pending,
        )

    return (
        stage("encoder", tokenizer.encode, tokenizer.get_encoded),
        stage("decoder", tokenizer.decode, tokenizer.get_decoded),
    )


def warm_up(model: LoadedModel, config: MoshiConfig) -> None:
    """Compile the model's kernels and push silence through the whole pipeline once (worker thread)."""
    import mlx.core as mx
    from moshi_mlx.models.generate import LmGen
    from moshi_mlx.utils.sampling import Sampler

    try:
        model.lm.warmup(model.ct)
    except Exception as err:  # MLX on CPU compiles kernels with g++ at run time; without it, don't compile
        log.warning("moshi warm-up failed (%s); retrying with MLX compilation disabled", err)
        mx.disable_compile()
        model.lm.warmup(model.ct)
    encoder, decoder = codec_stages(new_tokenizer(model), config)
    gen = LmGen(
        model.lm,
        max_steps=model.max_delay + 4,
        text_sampler=Sampler(),
        audio_sampler=Sampler(),
        check=False,
    )
    timeout = max(config.tokenizer_dead_after_s, 10.0)  # the first frames allocate; be patient once
    decoded = 0
    for _ in range(model.max_delay + 3):
        encoder.submit(np.zeros(FRAME_SAMPLES, np.float32))
        codes = encoder.wait_one(timeout)
        gen.step(mx.array(codes).transpose(1, 0)[:, : gen.main_codebooks], ct=model.ct)
        audio = gen.last_audio_tokens()
        if audio is not None:
            decoder.submit(np.asarray(audio, dtype=np.uint32).reshape(1, -1))
            decoder.wait_one(timeout)
            decoded += 1
    if decoded == 0:
        log.warning("moshi warm-up: the model emitted only padding; the decoder was not exercised")
    model.reset_caches()


class MoshiSession(BackendSession):
    """One call: its own LmGen, step budget and Mimi tokenizer. Created by `MoshiBackend.open_session`."""

    def __init__(self, backend: MoshiBackend, call_id: str, max_seconds: float, tokenizer: Any) -> None:
        from moshi_mlx.models.generate import LmGen
        from moshi_mlx.utils.sampling import Sampler

        self.call_id = call_id
        self.ended = None
        self.tokenizer = tokenizer  # exposed for diagnostics and fault-injection tests
        self._backend = backend
        self._model: LoadedModel = backend.model
        cfg = backend.config
        self.budget_steps = max(1, math.ceil(max_seconds * STEPS_PER_SECOND))
        self._end_at_step = self.budget_steps - min(cfg.budget_grace_steps, self.budget_steps // 4)
        self._model.reset_caches()
        self._gen = LmGen(
            model=self._model.lm,
            max_steps=self.budget_steps + 1,
            text_sampler=Sampler(),
            audio_sampler=Sampler(),
            check=False,
        )
        self._encoder, self._decoder = codec_stages(tokenizer, cfg)
        self._last_step: Future[StepOutput] | None = None
        self.retirement: Retirement | None = None  # the thread draining the tokenizer after close
        self._closed = False
        self.steps = 0

    @property
    def frames_dropped(self) -> dict[str, int]:
        """Frames each codec direction refused because it was `codec_max_pending` behind."""
        return {stage.name: stage.dropped for stage in (self._encoder, self._decoder)}

    @property
    def frames_pending(self) -> dict[str, int]:
        """Frames each codec direction has queued and not yet answered."""
        return {stage.name: stage.pending for stage in (self._encoder, self._decoder)}

    async def process(self, frame: NDArray[Any]) -> StepOutput:
        pcm = frame_pcm(frame, self.call_id)
        if self.ended is not None or self._closed:
            return StepOutput()
        self._last_step = self._backend.worker.submit(self._step, pcm)
        timeout = self._backend.config.step_timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._last_step), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            self._end(f"worker_timeout: a model step took longer than {timeout:.1f} s")
        except Exception as err:  # an MLX or codec failure ends this call, not the server
            log.exception("call %s: moshi step failed", self.call_id)
            self._end(f"model_error: {type(err).__name__}: {err}")
        return StepOutput()

    def _step(self, pcm: NDArray[Any]) -> StepOutput:
        """Runs on the worker thread: encode, step the LM for each ready code frame, decode, collect."""
        out = StepOutput()
        self._submit(self._encoder, pcm, "caller audio")
        model_ms = 0.0
        stepped = False
        for codes in self._encoder.drain():
            if self._gen.step_idx >= self.budget_steps:
                break  # budget spent: the call is hanging up, keep the hard limit of LmGen out of reach
            started = time.perf_counter()
            text, audio = self._lm_step(codes)
            model_ms += (time.perf_counter() - started) * 1000.0
            stepped = True
            if text is not None:
                out.text.append(text)
            if audio is not None:
                self._submit(self._decoder, audio, "model audio")
        # One (1920,) frame per decoded step; anything else (a bad batch) is not audio we can play.
        out.frames = [pcm for pcm in self._decoder.drain() if pcm.shape == (FRAME_SAMPLES,)]
        out.step_ms = model_ms if stepped else None
        self.steps = self._gen.step_idx
        if self.ended is None and self.steps >= self._end_at_step:
            self._end(
                f"budget_exhausted: {self.steps} of {self.budget_steps} steps "
                f"({self.budget_steps / STEPS_PER_SECOND:.1f} s) used"
            )
        for stage in (self._encoder, self._decoder):
            stall = stage.stall()
            if stall is not None:
                self._end(stall.reason())
        return out

    def _submit(self, stage: CodecStage, item: NDArray[Any], what: str) -> None:
        if not stage.submit(item) and stage.dropped == 1:
            log.warning(
                "call %s: the Mimi %s is %d frames behind; dropping %s until it catches up "
                "(this machine is not keeping up with real time)",
                self.call_id,
                stage.name,
                stage.pending,
                what,
            )

    def _lm_step(self, codes: NDArray[Any]) -> tuple[str | None, NDArray[Any] | None]:
        import mlx.core as mx

        # get_encoded() gives (codebooks, 1); LmGen wants (batch 1, main codebooks).
        user_codes = mx.array(codes).transpose(1, 0)[:, : self._gen.main_codebooks]
        text_token = int(self._gen.step(user_codes, ct=self._model.ct)[0].item())
        audio = self._gen.last_audio_tokens()
        piece = None
        tokenizer = self._model.text_tokenizer
        # padding is no text, and neither are sentencepiece's control pieces (<s>, </s>): never transcript
        if text_token not in TEXT_PADDING_IDS and not tokenizer.is_control(text_token):
            piece = tokenizer.id_to_piece(text_token).replace("▁", " ")
        if audio is None:
            return piece, None
        # decode() needs (1, 8) uint32: (8, 1) or any other shape makes the decoder thread drop it.
        return piece, np.asarray(audio, dtype=np.uint32).reshape(1, -1)

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            log.warning("call %s: moshi session ended: %s", self.call_id, reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Frames still queued in the Rust threads would be finished into a dropped receiver (an error
        # line each): keep the tokenizer until they are done, off the worker and off the loop.
        self.retirement = retire(
            (self._encoder, self._decoder), self._last_step, self._backend.config.step_timeout_s
        )
        if any(self.frames_dropped.values()):
            log.info("call %s: codec frames dropped: %s", self.call_id, self.frames_dropped)
        await self._backend._session_closed(self)


class MoshiBackend(SpeechBackend):
    """Moshi loaded once per server process, serving one call at a time."""

    name = "moshi"

    def __init__(self, config: MoshiConfig | None = None) -> None:
        self.config = config or MoshiConfig()
        self.load_seconds = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moshi-worker")
        self._model: LoadedModel | None = None
        self._serving: str | None = None  # the call id holding the one-call slot
        self._active: MoshiSession | None = None
        # The next call's StreamTokenizer, built on the worker while idle (a thread future, so it does
        # not belong to any one event loop).
        self._spare: Future[Any] | None = None
        self._closing = False

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            raise BackendError("the moshi backend is not loaded: call load() first")
        return self._model

    @property
    def busy(self) -> bool:
        return self._serving is not None

    @property
    def capacity(self) -> int:
        return 1  # one model in this process, one conversation at a time

    async def load(self) -> None:
        """Load the files (cache only), warm up the model and the codec; record load_seconds."""
        if self._model is not None:
            return
        started = time.perf_counter()
        model = await self._wait(
            self.worker.submit(self._load_sync), self.config.load_timeout_s, "loading Moshi"
        )
        self._model = model
        self.load_seconds = time.perf_counter() - started
        self._spare = self.worker.submit(new_tokenizer, model)
        log.info("moshi loaded in %.2f s (%s)", self.load_seconds, model.describe())

    def _load_sync(self) -> LoadedModel:
        model = load_model(self.config)
        warm_up(model, self.config)
        return model

    async def open_session(self, call_id: str, max_seconds: float) -> MoshiSession:
        if self._serving is not None:
            raise BackendBusy(f"moshi is serving call {self._serving}; it serves one call at a time")
        model = self.model
        if max_seconds <= 0:
            raise BackendError(f"call {call_id}: max_seconds must be positive, got {max_seconds}")
        # Claim the slot before the first await so two concurrent opens cannot both pass the check.
        self._serving = call_id
        try:
            spare, self._spare = self._spare, None
            if spare is None:
                spare = self.worker.submit(new_tokenizer, model)
            tokenizer = await self._wait(spare, self._setup_timeout, "building the Mimi tokenizer")
            session: MoshiSession = await self._wait(
                self.worker.submit(MoshiSession, self, call_id, max_seconds, tokenizer),
                self._setup_timeout,
                "starting the session",
            )
        except BaseException:
            self._serving = None
            raise
        self._active = session
        return session

    async def _session_closed(self, session: MoshiSession) -> None:
        if self._active is session:
            self._active = None
            self._serving = None
        if self._spare is None and self._model is not None and not self._closing:
            # Prepare the next call's tokenizer now, while nobody waits for it; not awaited, so a
            # hung worker cannot hold up the hang-up.
            self._spare = self.worker.submit(new_tokenizer, self._model)

    @property
    def _setup_timeout(self) -> float:
        return max(self.config.step_timeout_s, 30.0)

    async def _wait(self, future: Future[Any], timeout: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError as err:
            raise BackendError(f"moshi worker: {what} took longer than {timeout:.0f} s") from err

    async def aclose(self) -> None:
        self._closing = True
        if self._active is not None:
            await self._active.close()
        self._model = None
        self._spare = None
        # Never wait for a hung step: queued work is cancelled and the thread is left to finish.
        self.worker.shutdown(wait=False, cancel_futures=True)
