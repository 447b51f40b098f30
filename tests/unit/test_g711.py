"""G.711 μ-law tables against the reference codecs: audioop (or audioop-lts) bit for bit, and sox."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bridge.g711 import ULAW_SILENCE, ulaw_decode, ulaw_decode_float, ulaw_encode

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _audioop() -> ModuleType | None:
    # audioop is in the stdlib up to 3.12 (deprecated); audioop-lts provides the same module on 3.13+.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


AUDIOOP = _audioop()
SOX = shutil.which("sox")


def _sox(args_in: list[str], args_out: list[str], data: bytes, tmp_path: Path) -> bytes:
    src, dst = tmp_path / "in.raw", tmp_path / "out.raw"
    src.write_bytes(data)
    # -D: sox dithers when it reduces precision unless told not to.
    subprocess.run(["sox", "-D", "-t", "raw", "-r", "8000", "-c", "1", *args_in, str(src), "-t", "raw", *args_out,
                    str(dst)], check=True, capture_output=True)  # fmt: skip
    return dst.read_bytes()


@pytest.mark.skipif(AUDIOOP is None, reason="neither audioop nor audioop-lts is importable")
def test_encode_matches_audioop_for_every_int16() -> None:
    assert AUDIOOP is not None
    expected = AUDIOOP.lin2ulaw(ALL_PCM.tobytes(), 2)
    got = ulaw_encode(ALL_PCM)
    mismatches = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(expected, np.uint8))
    assert mismatches.size == 0, f"first differing inputs: {ALL_PCM[mismatches[:10]]}"


@pytest.mark.skipif(AUDIOOP is None, reason="neither audioop nor audioop-lts is importable")
def test_decode_matches_audioop_for_every_code() -> None:
    assert AUDIOOP is not None
    expected = np.frombuffer(AUDIOOP.ulaw2lin(ALL_CODES, 2), np.int16)
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), expected)


@pytest.mark.skipif(SOX is None, reason="sox is not installed")
def test_decode_matches_sox_for_every_code(tmp_path: Path) -> None:
    out = _sox(["-e", "u-law", "-b", "8"], ["-e", "signed", "-b", "16"], ALL_CODES, tmp_path)
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), np.frombuffer(out, np.int16))


@pytest.mark.skipif(SOX is None, reason="sox is not installed")
def test_encode_agrees_with_sox_except_its_rounding(tmp_path: Path) -> None:
    # sox rounds to the nearer of the two neighbouring μ-law levels where audioop truncates (sample >> 2),
    # so they differ on 508 of 65,536 inputs (sox 14.4.2, measured). Both must pick one of the two levels
    # that bracket the input.
    out = np.frombuffer(
        _sox(["-e", "signed", "-b", "16"], ["-e", "u-law"], ALL_PCM.tobytes(), tmp_path), np.uint8
    )
    ours = np.frombuffer(ulaw_encode(ALL_PCM), np.uint8)
    diff = np.flatnonzero(ours != out)
    assert diff.size < 0.01 * ALL_PCM.size
    a, b = ulaw_decode(ours[diff]).astype(int), ulaw_decode(out[diff]).astype(int)
    x = ALL_PCM[diff].astype(int)
    assert np.all((np.minimum(a, b) <= x) & (x <= np.maximum(a, b)))


def test_known_values_and_silence() -> None:
    assert ulaw_encode(np.zeros(3, np.int16)) == bytes([ULAW_SILENCE]) * 3
    np.testing.assert_array_equal(ulaw_decode(b"\x00\x80\x7f\xff"), [-32124, 32124, 0, 0])
    assert ulaw_encode(np.array([-32768, 32767], np.int16)) == b"\x00\x80"


def test_roundtrip_of_codes_is_identity_except_negative_zero() -> None:
    again = np.frombuffer(ulaw_encode(ulaw_decode(ALL_CODES)), np.uint8)
    expected = np.arange(256, dtype=np.uint8)
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(again, expected)


def test_decode_is_monotonic_in_magnitude_and_float_is_scaled() -> None:
    pcm = ulaw_decode(np.arange(0x80, 0x100, dtype=np.uint8))  # +32124 down to 0
    assert np.all(np.diff(pcm.astype(int)) < 0)
    np.testing.assert_array_equal(ulaw_decode_float(ALL_CODES), ulaw_decode(ALL_CODES) / np.float32(32768))


def test_encode_quantisation_error_is_within_half_a_step() -> None:
    decoded = ulaw_decode(np.frombuffer(ulaw_encode(ALL_PCM), np.uint8)).astype(int)
    err = np.abs(decoded - ALL_PCM.astype(int))
    # Steps double per segment: 8 near zero up to 1024 in the top one; beyond 32124 it clips.
    inside = np.abs(ALL_PCM.astype(int)) <= 32124
    assert err[inside].max() <= 512 + 4
    assert np.all(err[np.abs(ALL_PCM.astype(int)) < 120] <= 8)


def test_rejects_non_int16_pcm_and_non_uint8_codes() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, np.float32))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ulaw_decode(np.zeros(4, np.int16))  # type: ignore[arg-type]
