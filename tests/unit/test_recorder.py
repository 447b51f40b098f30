"""The recording: a WAV file consistent after every write, and blocks cut from the call's two tracks."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.g711 import ulaw_decode
from bridge.recorder import CallRecording, DualWavWriter


def read_wav(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    with wave.open(str(path)) as w:
        params = (w.getnchannels(), w.getframerate(), w.getsampwidth())
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return params, pcm


def test_the_file_on_disk_is_a_valid_wav_after_every_write_even_before_close(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.wav"
    writer = DualWavWriter(path)
    assert read_wav(path) == ((2, 8000, 2), pytest.approx(np.zeros((0, 2))))  # header from the start
    left = np.arange(100, dtype=np.int16)
    right = -np.arange(100, dtype=np.int16)
    writer.write(left, right)
    writer.write(left[:10], right[:10])
    writer.write(left[:0], right[:0])  # nothing: nothing changes
    params, pcm = read_wav(path)  # still open: as a crash would leave it
    assert params == (2, 8000, 2) and writer.frames == 110
    assert pcm[:, 0].tolist() == left.tolist() + left[:10].tolist()
    assert pcm[:, 1].tolist() == right.tolist() + right[:10].tolist()
    assert path.stat().st_size == 44 + 110 * 4
    with pytest.raises(ValueError, match="same length"):
        writer.write(left, right[:5])
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(left, right)
    assert read_wav(path)[1].shape == (110, 2)


def test_blocks_put_what_played_and_what_the_caller_said_where_they_happened_on_our_clock() -> None:
    rec = CallRecording(Path("unused.wav"), lag_s=0.5)
    played = bytes([0x20]) * 160
    rec.place_played(played, 0.25)  # played from 250 ms on our clock
    inbound = bytearray(b"\xff" * 800) + bytes([0x30]) * 160  # the caller at 100 ms on the media clock
    offset = 0.05  # media clock + 50 ms = ours: the caller's audio lands at 150 ms
    assert not rec.due(1.5) and rec.due(1.51)
    left, right = rec.cut(1.51, inbound, offset)  # type: ignore[misc]
    assert len(left) == len(right) == int(1.01 * 8000)
    assert np.flatnonzero(right).tolist() == list(range(2000, 2160))
    assert right[2000:2160].tolist() == ulaw_decode(played).tolist()
    assert np.flatnonzero(left).tolist() == list(range(1200, 1360))
    assert rec.pos == len(left) and rec.cut(1.51, inbound, offset) is None  # nothing new yet


def test_the_final_block_reaches_the_end_of_playout_and_the_caller_before_any_audio_is_silence() -> None:
    rec = CallRecording(Path("unused.wav"), lag_s=0.5)
    rec.place_played(bytes([0x20]) * 160, 0.9)
    block = rec.cut(0.3, b"", None, final=True, played_end=int(1.1 * 8000))
    assert block is not None
    left, right = block
    assert len(right) == 8800 and not left.any()  # no inbound audio: no mapping, silence
    assert np.flatnonzero(right).tolist() == list(range(7200, 7360))
