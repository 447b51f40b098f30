"""The call recording: a dual-channel WAV (left = caller, right = model as played), written off the loop.
With the echo canceller on, what the model heard (the caller after it) is kept beside it, on the media
clock, as `<call>.model-in.wav` (`model_input_path`).

- `DualWavWriter` is the file (blocking: call it from a worker thread). The stdlib `wave` module patches
  the RIFF and data sizes after every write and each write is flushed, so a crash mid-call still leaves
  a playable file whose header describes the samples on disk. 16-bit PCM, interleaved.
- `CallRecording` is one call's recording on the event loop. The model's channel is the mu-law we sent,
  placed on our clock where it played (0xFF = silence); the caller's is the inbound audio mapped from the
  media clock to ours. Blocks of about a second are cut on the loop (decoding only, never a file
  operation) `lag_s` behind now, so that playout estimates settle, and written on a worker thread, at
  most one write in flight: when the disk is slower than the call, the next block simply grows (the
  audio it holds is kept for the evidence anyway), nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from bridge.g711 import ulaw_decode

RATE = 8000
Block = tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]


class DualWavWriter:
    """A stereo 16-bit WAV file on disk, consistent after every `write`. Blocking."""

    def __init__(self, path: Path, rate: int = RATE) -> None:
        self.path = path
        self.rate = rate
        self.frames = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO | None = open(path, "wb")
        w = wave.open(self._f, "wb")
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"")  # the header now: even a call that never wrote audio leaves a valid file
        self._f.flush()
        self._w: wave.Wave_write | None = w

    def write(self, left: npt.NDArray[np.int16], right: npt.NDArray[np.int16]) -> None:
        """Append equal-length int16 channels and make the file on disk consistent."""
        if self._w is None or self._f is None:
            raise ValueError(f"{self.path} is closed")
        if len(left) != len(right):
            raise ValueError("both channels must have the same length")
        if not len(left):
            return
        inter = np.empty(2 * len(left), dtype="<i2")
        inter[0::2] = left
        inter[1::2] = right
        self._w.writeframes(inter.tobytes())
        self._f.flush()
        self.frames += len(left)

    def close(self) -> None:
        w, f, self._w, self._f = self._w, self._f, None, None
        try:
            if w is not None:
                w.close()  # header already right; flushes
        finally:
            if f is not None:
                f.close()


class CallRecording:
    """One call's recording, cut on the event loop and written on a worker thread (module docstring)."""

    def __init__(self, path: Path, *, lag_s: float = 0.5, rate: int = RATE) -> None:
        self.path = path
        self.lag_s = lag_s
        self.rate = rate
        self.played = bytearray()  # right channel: mu-law at its playout position on our clock
        self.pos = 0  # samples cut so far (written, or being written)
        self._writer: DualWavWriter | None = None  # opened by the first write, on the worker thread
        self._closed = False
        self._write: asyncio.Future[None] | None = None

    def place_played(self, chunk: bytes, start_s: float) -> None:
        """A chunk sent, estimated to start playing `start_s` seconds after the call's origin."""
        at = int(round(start_s * self.rate))
        codes = self.played
        if at > len(codes):
            codes.extend(b"\xff" * (at - len(codes)))
        codes[at : at + len(chunk)] = chunk

    def due(self, rel: float) -> bool:
        """More than a second waits to be cut at `rel` (seconds since the origin)."""
        return rel - self.pos / self.rate > 1.0 + self.lag_s

    def cut(
        self,
        rel: float,
        inbound: bytes | bytearray,
        inbound_offset: float | None,
        *,
        final: bool = False,
        played_end: int = 0,
    ) -> Block | None:
        """The next block: up to `lag_s` before `rel`, or everything (and at least `played_end` samples)
        when `final`. `inbound` is the caller's mu-law on the media clock, `inbound_offset` local s -
        media s. None when there is nothing new. Pure apart from advancing `pos`."""
        rate = self.rate
        upto = int((rel - (0 if final else self.lag_s)) * rate)
        if final:
            upto = max(upto, played_end)
        if upto <= self.pos:
            return None
        right = np.zeros(upto - self.pos, dtype=np.int16)
        have = self.played[self.pos : upto]
        if have:
            right[: len(have)] = ulaw_decode(bytes(have))
        left = np.zeros_like(right)
        if inbound_offset is not None:
            shift = int(round(inbound_offset * rate))
            lo, hi = self.pos - shift, upto - shift
            src = inbound[max(lo, 0) : max(min(hi, len(inbound)), 0)]
            if src:
                start = max(0, -lo)
                left[start : start + len(src)] = ulaw_decode(bytes(src))
        self.pos = upto
        return left, right

    def open(self, on_error: Callable[[BaseException], None]) -> None:
        """Create the file now, on a worker thread (the first write would otherwise)."""
        if self._write is None and not self._closed:
            self._submit(None, on_error)

    def write_behind(
        self,
        rel: float,
        inbound: bytes | bytearray,
        inbound_offset: float | None,
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Cut the next block and hand it to a worker thread, unless a write is still in flight.
        A failed write is reported to `on_error` (on the loop) and stops further writes."""
        w = self._write
        if self._closed or (w is not None and (not w.done() or w.cancelled() or w.exception() is not None)):
            return  # in flight, or failed (reported already: the session is ending)
        block = self.cut(rel, inbound, inbound_offset)
        if block is not None:
            self._submit(block, on_error)

    def _submit(self, block: Block | None, on_error: Callable[[BaseException], None]) -> None:
        fut = asyncio.get_running_loop().run_in_executor(None, self._write_block, block)

        def done(f: asyncio.Future[None]) -> None:
            exc = None if f.cancelled() else f.exception()
            if exc is not None:
                on_error(exc)

        fut.add_done_callback(done)
        self._write = fut

    async def finish(
        self, rel: float, inbound: bytes | bytearray, inbound_offset: float | None, played_end: int
    ) -> None:
        """Write the rest and close the file (off the loop). Raises what the final write raised; the file
        is closed either way. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._write is not None:
                try:
                    await self._write
                except Exception:
                    pass  # reported by write_behind's callback
            block = self.cut(rel, inbound, inbound_offset, final=True, played_end=played_end)
            await asyncio.to_thread(self._write_block, block)
        finally:
            await asyncio.to_thread(self._close)

    def _write_block(self, block: Block | None) -> None:  # on a worker thread
        if self._writer is None:
            self._writer = DualWavWriter(self.path, self.rate)
        if block is not None:
            self._writer.write(*block)

    def _close(self) -> None:  # on a worker thread
        if self._writer is not None:
            self._writer.close()


def model_input_path(recording: Path) -> Path:
    """Where the audio the model heard (after the echo canceller) is kept beside a call's recording."""
    return recording.with_name(recording.stem + ".model-in.wav")


def write_mono_wav(path: Path, pcm: npt.NDArray[np.int16], rate: int = RATE) -> None:
    """A mono 16-bit WAV in one go. Blocking: call it from a worker thread."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
