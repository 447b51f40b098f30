"""G.711 μ-law codec as numpy lookup tables, bit-exact with CPython's ``audioop``.

Twilio Media Streams carry 8 kHz μ-law; everything else in the bridge is linear PCM. Both tables are
built once at import from the same 14-bit segment algorithm ``audioop`` uses (``st_14linear2ulaw`` on
``sample >> 2``, and Sun's ``st_ulaw2linear16``), so every one of the 65,536 int16 inputs and 256 codes
maps exactly as ``audioop.lin2ulaw`` / ``audioop.ulaw2lin`` would, on any Python version (``audioop`` is
gone from 3.13). Encoding or decoding a 20 ms frame is then one fancy-index.

This module does no I/O and never calls ``audioop``; the tests compare against it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ULAW_SILENCE", "ulaw_decode", "ulaw_decode_float", "ulaw_encode"]

#: The code ``ulaw_encode`` gives for 0 (``0x7F``, "-0", also decodes to 0).
ULAW_SILENCE = 0xFF

_BIAS = 0x84
# audioop's segment ends in the 14-bit domain, after adding BIAS >> 2.
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # Indexed by the int16 sample's bit pattern read as uint16, so that entry i holds the code of
    # int16(i); numpy's negative indices wrap the same way, letting int16 arrays index it directly.
    index = np.arange(65536, dtype=np.int32)
    pcm14 = np.where(index >= 32768, index - 65536, index) >> 2  # arithmetic shift, like audioop
    mask = np.where(pcm14 < 0, 0x7F, 0xFF)
    mag = np.abs(pcm14) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")  # first segment end >= mag
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> np.minimum(seg + 1, 8)) & 0x0F))
    table: npt.NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return table


_DECODE_I16 = _build_decode_table()
_DECODE_F32 = (_DECODE_I16 / 32768.0).astype(np.float32)
_ENCODE = _build_encode_table()
_DECODE_I16.setflags(write=False)
_DECODE_F32.setflags(write=False)
_ENCODE.setflags(write=False)


def _codes(codes: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(codes, np.ndarray):
        if codes.dtype != np.uint8:
            raise TypeError(f"μ-law codes must be uint8, got {codes.dtype}")
        return codes
    return np.frombuffer(codes, dtype=np.uint8)


def ulaw_decode(codes: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """Decode μ-law bytes (or a uint8 array) to int16 PCM, exactly like ``audioop.ulaw2lin(b, 2)``."""
    return _DECODE_I16.take(_codes(codes))


def ulaw_decode_float(
    codes: bytes | bytearray | memoryview | npt.NDArray[np.uint8],
) -> npt.NDArray[np.float32]:
    """Decode μ-law to float32 in [-1, 1): ``ulaw_decode(codes) / 32768`` in one table look-up."""
    return _DECODE_F32.take(_codes(codes))


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM to μ-law bytes, exactly like ``audioop.lin2ulaw(pcm.tobytes(), 2)``.

    Only int16 is accepted: clipping and rounding floats is the caller's decision, not a codec's.
    """
    if pcm.dtype != np.int16:
        raise TypeError(f"ulaw_encode takes int16 PCM, got {pcm.dtype}")
    return _ENCODE.take(pcm.view(np.uint16)).tobytes()
