"""Incremental dual-channel WAV writer: a crash mid-call still leaves a playable file.

The RIFF and data sizes are patched after every write, so the header on disk always describes the
samples on disk. Left = caller, right = model (as played), 16-bit PCM, interleaved.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np


class DualWavWriter:
    def __init__(self, path: Path, rate: int = 8000) -> None:
        self.path = path
        self.rate = rate
        self.frames = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO | None = open(path, "wb")
        self._f.write(self._header(0))
        self._f.flush()

    def _header(self, data_bytes: int) -> bytes:
        channels, width = 2, 2
        return (
            b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, self.rate, self.rate * channels * width,
                                    channels * width, 16)
            + b"data" + struct.pack("<I", data_bytes)
        )

    def write(self, left: np.ndarray, right: np.ndarray) -> None:
        """Append equal-length int16 channels and make the file on disk consistent."""
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        if len(left) != len(right):
            raise ValueError("both channels must have the same length")
        if not len(left):
            return
        inter = np.empty(2 * len(left), dtype="<i2")
        inter[0::2] = left
        inter[1::2] = right
        f = self._f
        f.seek(0, 2)
        f.write(inter.tobytes())
        self.frames += len(left)
        data_bytes = self.frames * 4
        f.seek(4)
        f.write(struct.pack("<I", 36 + data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", data_bytes))
        f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
