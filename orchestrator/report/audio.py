"""The recording as the call page shows it: a min/max envelope per side, and one mono WAV per side.

The recording (`bridge.recorder`) is a dual-channel 8 kHz 16-bit WAV, left = caller, right = model as
played, sample 0 at the stream's `start`: the page's time 0. Pure numpy on arrays and bytes; reading
and writing files is the caller's (`orchestrator.cli.report_pages`).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RATE = 8000
SIDES = ("caller", "model")


@dataclass(frozen=True, slots=True)
class CallAudio:
    """Envelopes to draw and where each side's audio is, as the page links it (relative href)."""

    envelopes: dict[str, list[tuple[float, float, float]]]
    hrefs: dict[str, str]
    duration_s: float
    note: str = ""


def split_stereo(data: bytes) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16], int]:
    """(caller, model, rate) from a dual-channel 16-bit WAV's bytes. Raises ValueError for another shape."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getnchannels() != 2 or w.getsampwidth() != 2:
                raise ValueError(
                    f"not a dual-channel 16-bit recording ({w.getnchannels()} ch, {8 * w.getsampwidth()} bit)"
                )
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV recording: {exc}") from exc
    x = np.frombuffer(frames[: len(frames) // 4 * 4], dtype="<i2").reshape(-1, 2)
    return x[:, 0].astype(np.int16), x[:, 1].astype(np.int16), rate


def envelope(
    pcm: npt.NDArray[np.int16], rate: int = RATE, bins: int = 600
) -> list[tuple[float, float, float]]:
    """(bin start s, min, max) of the samples in each of at most `bins` equal bins, scaled to -1..1."""
    n = len(pcm)
    if n == 0:
        return []
    step = max(1, -(-n // bins))
    pad = (-n) % step
    x = np.concatenate([pcm.astype(np.float64), np.zeros(pad)]).reshape(-1, step) / 32768.0
    lo, hi = x.min(axis=1), x.max(axis=1)
    return [
        (round(i * step / rate, 4), round(float(a), 4), round(float(b), 4))
        for i, (a, b) in enumerate(zip(lo, hi, strict=True))
    ]


def mono_wav(pcm: npt.NDArray[np.int16], rate: int = RATE) -> bytes:
    """A mono 16-bit WAV file's bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()
