"""Speech synthesis with espeak-ng, for prompts, the emulated caller and tests.

One place that runs espeak-ng and reads its output: espeak-ng --stdout writes a *streaming* WAV whose
RIFF and data sizes are placeholders, so the chunks are walked and everything after the `data` header
is taken. Resampling is one-shot soxr (this is not the live path). Blocking: call it off the event loop.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr


class SpeechUnavailable(RuntimeError):
    """espeak-ng is not installed."""


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(
    text: str, rate: int = 8000, *, voice: str | None = "en-us", words_per_minute: int = 165
) -> npt.NDArray[np.int16]:
    """`text` spoken by espeak-ng, mono int16 at `rate` Hz (`voice=None`: espeak-ng's default voice)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechUnavailable(
            "espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
        )
    args = [exe, *(["-v", voice] if voice else []), "-s", str(words_per_minute), "--stdout", text]
    out = subprocess.run(args, check=True, capture_output=True, timeout=60).stdout
    src_rate, pcm = parse_streamed_wav(out)
    if src_rate == rate:
        return pcm.copy()
    return np.asarray(soxr.resample(pcm, src_rate, rate, quality="HQ"), dtype=np.int16)  # int16 in, int16 out


def read_wav_mono(path: str | Path) -> tuple[npt.NDArray[np.float32], int]:
    """A 16-bit PCM WAV file as mono float32 samples in int16 units (channels averaged), and its rate."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported (sample width {width} bytes)")
    return np.frombuffer(raw, dtype="<i2").reshape(-1, channels).astype(np.float32).mean(axis=1), rate


def parse_streamed_wav(data: bytes) -> tuple[int, npt.NDArray[np.int16]]:
    """(sample rate, mono int16 samples) of a WAV whose chunk sizes may be placeholders."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not produce a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if tag == b"fmt ":
            channels, rate = struct.unpack("<HI", data[pos + 10 : pos + 16])
            if channels != 1:
                raise ValueError(f"expected mono speech, got {channels} channels")
        elif tag == b"data":
            body = data[pos + 8 :]
            return rate, np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2")
        pos += 8 + size
    raise ValueError("no data chunk in espeak-ng output")
