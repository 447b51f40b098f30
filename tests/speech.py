"""Real synthetic speech for meter tests: espeak-ng, resampled to the telephone rate.

Test helper only. `speak()` runs the `espeak-ng` binary (Debian package `espeak-ng`) once per text and
keeps the result in a module-level cache; tests that need it skip cleanly when the binary is missing.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
import soxr

__all__ = ["have_espeak", "speak"]

_CACHE: dict[tuple[str, int], np.ndarray] = {}


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    # espeak-ng --stdout writes a streaming WAV whose RIFF/data sizes are placeholders (0x7FFFFFFF), so
    # walk the chunks ourselves and take everything after the `data` header.
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not produce a WAV")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            channels, rate = struct.unpack("<HI", data[pos + 10 : pos + 16])
            if channels != 1:
                raise ValueError(f"expected mono, got {channels} channels")
        elif cid == b"data":
            body = data[pos + 8 :]
            return np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16), rate
        pos += 8 + size
    raise ValueError("no data chunk in espeak-ng output")


def speak(text: str, rate: int = 8000) -> np.ndarray:
    """int16 mono speech for `text` at `rate` Hz (read-only array, cached per text and rate)."""
    key = (text, rate)
    if key not in _CACHE:
        if not have_espeak():
            pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
        wav = subprocess.run(["espeak-ng", "--stdout", text], check=True, capture_output=True).stdout
        pcm, src_rate = _parse_wav(wav)
        out = soxr.resample(pcm, src_rate, rate) if src_rate != rate else pcm.copy()
        out.setflags(write=False)
        _CACHE[key] = out
    return _CACHE[key]
