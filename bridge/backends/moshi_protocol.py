"""Kyutai's Moshi WebSocket protocol (kyutai-labs/moshi `rust/protocol.md`), as plain objects.

Every message is one binary WebSocket message: a kind byte, then the payload (little endian)::

    0 handshake  u32 protocol version (0), u32 model version; moshi_mlx `local_web` sends the kind
                 byte alone, so both fields are optional here
    1 audio      Ogg pages of Opus audio, 24 kHz mono (both directions)
    2 text       UTF-8 text piece the model emitted
    3 control    one byte: 0 start, 1 end turn, 2 pause, 3 restart (unused in full streaming)
    4 metadata   UTF-8 JSON
    5 error      UTF-8 error description
    6 ping       no payload (unused)

Unknown kinds are discarded, as the page says. Everything a peer sends is bounded before it is kept:
text pieces and error descriptions are cut to a length and stripped of unprintable characters, and
decoded audio goes through a `FrameCutter` holding at most a fixed number of frames.

The codec is `sphn` (Kyutai's own Rust binding of libopus and an Ogg muxer, already installed with
moshi_mlx): it writes exactly the stream the Kyutai servers read (one Ogg page per 80 ms frame, after
the Opus header pages) and reads theirs. A reader that has seen bytes that are not Ogg cannot
resynchronise, so a decode error is a protocol error that ends the session.

No I/O and no clock here (times are passed in): the WebSocket session lives in `moshi_server.py`.
"""

from __future__ import annotations

import functools
import struct
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from bridge.backends.base import FRAME_SAMPLES, SAMPLE_RATE, Audio
from bridge.errors import ServerProtocolError as ServerProtocolError  # re-exported: the codec raises it


class Kind(IntEnum):
    HANDSHAKE = 0
    AUDIO = 1
    TEXT = 2
    CONTROL = 3
    METADATA = 4
    ERROR = 5
    PING = 6


@dataclass(frozen=True, slots=True)
class Message:
    """One protocol message. `kind` is an int, so an unknown kind parses and can be discarded."""

    kind: int
    payload: bytes = b""

    @classmethod
    def parse(cls, data: bytes | str) -> Message:
        if isinstance(data, str):
            raise ServerProtocolError("sent a text WebSocket message; the protocol is binary only")
        if not data:
            raise ServerProtocolError("sent an empty message (no kind byte)")
        return cls(kind=data[0], payload=bytes(data[1:]))

    @classmethod
    def audio(cls, ogg: bytes) -> Message:
        return cls(Kind.AUDIO, ogg)

    @property
    def known(self) -> bool:
        return self.kind in Kind._value2member_map_

    def serialize(self) -> bytes:
        if not 0 <= self.kind <= 255:
            raise ValueError(f"message kind {self.kind} does not fit the kind byte")
        return bytes((self.kind,)) + self.payload


@dataclass(frozen=True, slots=True)
class Handshake:
    """The server's handshake. None for a field the server left out (moshi_mlx local_web sends none)."""

    protocol_version: int | None = None
    model_version: int | None = None

    @classmethod
    def parse(cls, payload: bytes) -> Handshake:
        protocol = struct.unpack_from("<I", payload, 0)[0] if len(payload) >= 4 else None
        model = struct.unpack_from("<I", payload, 4)[0] if len(payload) >= 8 else None
        return cls(protocol, model)

    def serialize(self) -> bytes:
        fields = [v for v in (self.protocol_version, self.model_version) if v is not None]
        return bytes((Kind.HANDSHAKE,)) + struct.pack(f"<{len(fields)}I", *fields)


@functools.lru_cache(maxsize=1)
def codec_delay_ms() -> float:
    """How much one Opus pass (our encoder, then our decoder) delays audio, in ms: measured, not read.

    A click is encoded and decoded and found again. Why measured: sphn's reader keeps the encoder's
    lookahead samples (6.5 ms for libopus) instead of dropping them, and its writer declares a pre-skip
    of one 80 ms frame in the OpusHead, which matches neither; the delay is what the audio shows."""
    encoder, decoder = OpusEncoder(), OpusDecoder()
    frames = np.zeros((3, FRAME_SAMPLES), np.float32)
    frames[1, 100:112] = 0.5  # 12 samples, early in the second frame
    out = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames])
    found = int(np.argmax(np.abs(out[FRAME_SAMPLES + 100 :])))
    return found * 1000.0 / SAMPLE_RATE


def bounded_text(payload: bytes, max_chars: int) -> str:
    """A peer's UTF-8 made safe to keep: invalid bytes and unprintable characters (controls, bidi
    overrides, zero-width ones) become U+FFFD, and at most `max_chars` characters are kept. Leading
    spaces are kept: the model's pieces carry word boundaries in them (" hello")."""
    text = payload[: max_chars * 4].decode("utf-8", errors="replace")[:max_chars]
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


class OpusEncoder:
    """Caller audio to Ogg/Opus: one (1920,) frame in, the Ogg bytes to send out (maybe empty)."""

    def __init__(self) -> None:
        import sphn

        self._writer: Any = sphn.OpusStreamWriter(SAMPLE_RATE)

    def encode(self, frame: Audio) -> bytes:
        pcm = np.ascontiguousarray(frame, dtype=np.float32).reshape(-1)
        if pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(f"an Opus frame must be ({FRAME_SAMPLES},) samples, got {pcm.shape}")
        return bytes(self._writer.append_pcm(np.clip(pcm, -1.0, 1.0)))


class OpusDecoder:
    """The server's Ogg/Opus bytes back to float32 samples at 24 kHz (any number per call)."""

    def __init__(self) -> None:
        import sphn

        self._reader: Any = sphn.OpusStreamReader(SAMPLE_RATE)

    def decode(self, ogg: bytes) -> Audio:
        try:
            pcm = self._reader.append_bytes(ogg)
        except ValueError as err:
            raise ServerProtocolError(f"sent audio that is not Ogg/Opus ({err})") from None
        out = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(out)):
            raise ServerProtocolError("sent audio that decodes to non-finite samples")
        return out


class FrameCutter:
    """Re-cuts decoded audio into exact (1920,) frames, keeping at most `max_frames` ready.

    When the frames are not taken fast enough (or a peer sends far more audio than real time), the
    oldest are dropped and counted in `dropped`: late audio is worth less than current audio, and a
    peer must never grow our memory."""

    def __init__(self, max_frames: int, frame_samples: int = FRAME_SAMPLES) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.frame_samples = frame_samples
        self.max_frames = max_frames
        self._ready: deque[Audio] = deque()
        self._partial: Audio = np.zeros(0, np.float32)
        self.dropped = 0
        self.frames_out = 0  # frames completed (taken or dropped)

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def partial_samples(self) -> int:
        return int(self._partial.shape[0])

    def push(self, samples: Audio) -> int:
        """Add samples; return how many whole frames they completed."""
        pcm: Audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        if pcm.shape[0] == 0:
            return 0
        # Never hold more than max_frames of input: anything older would be dropped below anyway.
        limit = (self.max_frames + 1) * self.frame_samples
        if pcm.shape[0] > limit:
            skipped = (pcm.shape[0] - limit) // self.frame_samples
            self.dropped += skipped
            self.frames_out += skipped
            pcm = pcm[skipped * self.frame_samples :]
        buf = np.concatenate((self._partial, pcm)) if self._partial.shape[0] else pcm
        whole = buf.shape[0] // self.frame_samples
        for i in range(whole):
            self._ready.append(buf[i * self.frame_samples : (i + 1) * self.frame_samples].copy())
        self._partial = buf[whole * self.frame_samples :].copy()
        self.frames_out += whole
        while len(self._ready) > self.max_frames:
            self._ready.popleft()
            self.dropped += 1
        return whole

    def take_all(self) -> list[Audio]:
        out = list(self._ready)
        self._ready.clear()
        return out


class LagMeter:
    """Send->receive lag of whole frames, paired in order: the k-th frame received back is paired with
    the k-th frame sent, and its lag is the time between the two.

    Why that pairing is honest: a full-duplex Moshi server runs one model step per 80 ms frame it is
    given and answers one frame per step, so the k-th frame out is the answer to the step the k-th
    frame in started. The lag then includes the network both ways, the Opus/Ogg round trip on both
    ends, the server's compute and the model's own fixed pipeline delay; it does not isolate any one
    of them, and it is not the model's conversational response time. A server that drops frames or
    adds some (moshi_mlx `local_web` can send audio left over from its previous client) breaks the
    pairing: frames received with no frame sent left to pair are counted in `unpaired`, and sends
    never answered remain `outstanding`."""

    def __init__(self, max_samples: int = 20_000, max_outstanding: int = 1_000) -> None:
        self._sent: deque[float] = deque(maxlen=max_outstanding)
        self.lags_s: deque[float] = deque(maxlen=max_samples)
        self.unpaired = 0
        self.overflowed = 0  # sends forgotten because too many were outstanding

    @property
    def outstanding(self) -> int:
        return len(self._sent)

    def sent(self, at: float) -> None:
        if len(self._sent) == self._sent.maxlen:
            self.overflowed += 1
        self._sent.append(at)

    def received(self, at: float, frames: int = 1) -> None:
        for _ in range(frames):
            if self._sent:
                self.lags_s.append(at - self._sent.popleft())
            else:
                self.unpaired += 1

    def summary(self) -> dict[str, float | int | None]:
        lags = np.asarray(self.lags_s, dtype=np.float64) * 1000.0
        out: dict[str, float | int | None] = {"lag_frames": int(lags.shape[0])}
        for q in (50, 95, 99):
            out[f"lag_ms_p{q}"] = float(np.percentile(lags, q)) if lags.size else None
        out["lag_ms_max"] = float(lags.max()) if lags.size else None
        out["lag_unpaired_frames"] = self.unpaired
        out["lag_outstanding_frames"] = self.outstanding
        return out
