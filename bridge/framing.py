"""The two per-call audio pipelines between Twilio's 20 ms μ-law chunks and Moshi's 80 ms float frames.

- ``InboundPipeline``: μ-law 8 kHz payloads (any length) -> 24 kHz float32 -> 1920-sample frames.
- ``OutboundPipeline``: 24 kHz float32 frames -> 8 kHz -> clip, round -> int16 -> μ-law -> 160-byte chunks.
- ``FrameAccumulator``: the re-chunker both rely on.

One instance per call per direction; each keeps the resampler's history, so feed it the stream in order.
This runs for every 20 ms of every call, so each step is one numpy call where it can be: int16 <-> float
scaling is folded into the resampler's coefficients (gain), and int16 -> float32 happens inside the
resampler's history concatenation.

Taps for the recorder and meters: after every ``push``, ``pcm8k_last`` holds the int16 8 kHz PCM of what
that push consumed (inbound: the decoded payload, or the zeros of ``push_silence``) or produced (outbound:
the PCM of the returned chunks, chunk ``i`` being ``pcm8k_last[160*i : 160*(i+1)]``). It is replaced, not
appended to, on the next push; keep a reference if you need it later (it is never modified in place).

No I/O, no clock here: the caller paces, timestamps and sends.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from bridge.g711 import ulaw_decode, ulaw_encode
from bridge.resample import StreamResampler

__all__ = ["CHUNK_SAMPLES_8K", "FRAME_SAMPLES_24K", "FrameAccumulator", "InboundPipeline", "OutboundPipeline"]

FRAME_SAMPLES_24K = 1920  # Moshi/Mimi frame: 80 ms at 24 kHz
CHUNK_SAMPLES_8K = 160  # Twilio media chunk: 20 ms at 8 kHz, one μ-law byte per sample

_EMPTY_I16: npt.NDArray[np.int16] = np.zeros(0, np.int16)

#: A filter on the decoded inbound audio (`bridge.cancel.InboundCanceller`): (int16 block, index of its
#: first sample on the media clock) -> the block to resample (float32, int16 scale, same length).
BlockFilter = Callable[[npt.NDArray[np.int16], int], npt.NDArray[np.float32]]


class FrameAccumulator:
    """Re-chunks a stream of arrays into arrays of exactly ``size`` samples.

    ``push(x)`` returns every complete frame now available (possibly none). Each returned frame is a fresh
    array that the accumulator never touches again; ``pending`` samples wait for the next push.
    """

    __slots__ = ("_buf", "_dtype", "_fill", "size")

    def __init__(self, size: int, dtype: type[np.generic] = np.float32) -> None:
        if size <= 0:
            raise ValueError(f"frame size must be positive, got {size}")
        self.size, self._dtype = size, dtype
        self._buf: npt.NDArray[np.generic] = np.empty(size, dtype)
        self._fill = 0

    @property
    def pending(self) -> int:
        """Samples held back until a frame is complete."""
        return self._fill

    def push(self, x: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        frames: list[npt.NDArray[np.generic]] = []
        n, i = x.shape[0], 0
        while i < n:
            take = min(self.size - self._fill, n - i)
            self._buf[self._fill : self._fill + take] = x[i : i + take]
            self._fill += take
            i += take
            if self._fill == self.size:
                # Hand the full buffer over and start a new one: one copy per sample, no aliasing.
                frames.append(self._buf)
                self._buf = np.empty(self.size, self._dtype)
                self._fill = 0
        return frames

    def reset(self) -> None:
        """Drop the pending partial frame."""
        self._fill = 0


class InboundPipeline:
    """Caller audio: Twilio μ-law 8 kHz payloads -> 1920-sample float32 frames at 24 kHz for the model.

    ``push(payload)`` decodes, resamples and returns the frames completed by it (usually one per four
    20 ms payloads). ``push_silence(n)`` stands in for ``n`` missing 8 kHz samples (a gap in the media
    stream) so that the model's clock keeps running; it is the same as pushing ``n`` bytes of 0xFF.
    Added delay: ``delay_ms`` (the resampler's), plus up to 80 ms of frame filling inherent to the model.
    """

    __slots__ = ("_codes", "_consumed", "_frame_8k", "_frames", "_last", "_resampler", "canceller")

    def __init__(self, frame_samples: int = FRAME_SAMPLES_24K, canceller: BlockFilter | None = None) -> None:
        self._resampler = StreamResampler(8000, 24000, gain=1.0 / 32768.0)
        self._frames = FrameAccumulator(frame_samples, np.float32)
        # Codes wait here until a whole frame has arrived and are then decoded and resampled in one go:
        # the frame leaves on the same push as it would chunk by chunk (no added delay), for a third of
        # the CPU (one resampler call per frame instead of four). 0: a size not a multiple of 3, chunk
        # by chunk through the accumulator instead.
        self._frame_8k = frame_samples // 3 if frame_samples % 3 == 0 else 0
        self._codes = bytearray()
        self._last = b""
        # An echo canceller between the decode and the resampler: each 8 kHz block of a whole frame
        # (640 samples) goes through it with its first sample's index on the media clock.
        self.canceller = canceller if self._frame_8k else None
        self._consumed = 0  # 8 kHz samples decoded so far (= the media clock: gaps are filled)

    @property
    def pcm8k_last(self) -> npt.NDArray[np.int16]:
        """The int16 8 kHz PCM the last push consumed (decoded when asked: the hot path never needs it)."""
        return ulaw_decode(self._last) if self._last else _EMPTY_I16

    @property
    def delay_ms(self) -> float:
        return self._resampler.delay_ms

    @property
    def pending(self) -> int:
        """24 kHz samples waiting for the next frame."""
        return 3 * len(self._codes) if self._frame_8k else self._frames.pending

    def push(self, payload: bytes | bytearray | memoryview) -> list[npt.NDArray[np.float32]]:
        self._last = payload if isinstance(payload, bytes) else bytes(payload)
        f = self._frame_8k
        if not f:
            return self._frames.push(self._resampler.process(ulaw_decode(payload)))  # type: ignore[return-value]
        codes = self._codes
        codes += payload
        if len(codes) < f:
            return []
        k = len(codes) - len(codes) % f
        decoded = ulaw_decode(codes[:k])
        pcm: npt.NDArray[np.float32] | npt.NDArray[np.int16] = decoded
        if self.canceller is not None:
            at = self._consumed
            pcm = np.concatenate([self.canceller(decoded[j : j + f], at + j) for j in range(0, k, f)])
        self._consumed += k
        out = self._resampler.process(pcm)
        del codes[:k]
        return [out] if k == f else list(out.reshape(-1, 3 * f))

    def push_silence(self, n_samples_8k: int) -> list[npt.NDArray[np.float32]]:
        return self.push(b"\xff" * n_samples_8k)  # 0xFF decodes to 0

    def reset(self) -> None:
        """Start over: no history, no partial frame (a new stream on the same call)."""
        self._resampler.reset()
        self._frames.reset()
        self._codes.clear()
        self._last = b""
        self._consumed = 0


class OutboundPipeline:
    """Model audio: 24 kHz float32 frames -> 160-byte Twilio μ-law chunks (20 ms at 8 kHz).

    ``push(frame)`` takes any length that is a multiple of 3 (a 1920-sample frame gives exactly four
    chunks) and returns the complete chunks; a remainder waits for the next push, and ``flush()`` pads
    it with silence. Samples beyond [-1, 1] are clipped, never wrapped. ``pcm8k_last`` is the int16 PCM
    of the chunks just returned, in order. Added delay: ``delay_ms``.
    """

    __slots__ = ("_pending", "_resampler", "chunk_samples", "pcm8k_last")

    def __init__(self, chunk_samples: int = CHUNK_SAMPLES_8K) -> None:
        # The int16 scale rides in the filter; what comes out is already in int16 units.
        self._resampler = StreamResampler(24000, 8000, gain=32768.0)
        self.chunk_samples = chunk_samples
        self._pending: npt.NDArray[np.int16] = _EMPTY_I16
        self.pcm8k_last: npt.NDArray[np.int16] = _EMPTY_I16

    @property
    def delay_ms(self) -> float:
        return self._resampler.delay_ms

    @property
    def pending(self) -> int:
        """8 kHz samples waiting for a complete chunk."""
        return int(self._pending.shape[0])

    def push(self, frame: npt.NDArray[np.float32]) -> list[bytes]:
        y = self._resampler.process(frame)
        np.clip(y, -32768.0, 32767.0, out=y)
        pcm = np.rint(y, out=y).astype(np.int16)
        if self._pending.shape[0]:
            pcm = np.concatenate((self._pending, pcm))
        return self._emit(pcm)

    def flush(self) -> list[bytes]:
        """Emit the pending partial chunk, padded with silence (end of the model's audio)."""
        if not self._pending.shape[0]:
            self.pcm8k_last = _EMPTY_I16
            return []
        pcm = np.zeros(self.chunk_samples, np.int16)
        pcm[: self._pending.shape[0]] = self._pending
        return self._emit(pcm)

    def reset(self) -> None:
        """Start over: no history, no partial chunk."""
        self._resampler.reset()
        self._pending = self.pcm8k_last = _EMPTY_I16

    def _emit(self, pcm: npt.NDArray[np.int16]) -> list[bytes]:
        n = pcm.shape[0] - pcm.shape[0] % self.chunk_samples
        self._pending = pcm[n:]
        self.pcm8k_last = pcm = pcm[:n]
        codes = ulaw_encode(pcm)
        step = self.chunk_samples
        return [codes[i : i + step] for i in range(0, n, step)]
