"""The recording's writes run on a worker thread, one at a time, and a failed one is reported, not lost."""

from __future__ import annotations

import asyncio
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.recorder import CallRecording, DualWavWriter


async def until(cond: Any) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_slow_disk_holds_one_write_in_flight_and_the_next_block_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    loop_thread = threading.get_ident()
    threads: list[int] = []
    blocks: list[int] = []
    real_write = DualWavWriter.write

    def slow_write(self: DualWavWriter, left: Any, right: Any) -> None:
        threads.append(threading.get_ident())
        blocks.append(len(left))
        release.wait(10)
        real_write(self, left, right)

    monkeypatch.setattr(DualWavWriter, "write", slow_write)
    rec = CallRecording(tmp_path / "c.wav", lag_s=0.5)
    errors: list[BaseException] = []
    rec.open(errors.append)
    inbound = b"\x10" * 8000 * 5
    rec.write_behind(1.6, inbound, 0.0, errors.append)  # the file is being created: that write waits
    assert rec.pos == 0

    def first() -> bool:  # once the file exists, 1.5 s are cut and handed over
        rec.write_behind(2.0, inbound, 0.0, errors.append)
        return rec.pos > 0

    await until(first)
    await until(lambda: blocks)
    assert blocks == [12000]
    rec.write_behind(3.0, inbound, 0.0, errors.append)  # still writing: nothing more is cut
    assert rec.pos == 12000
    release.set()

    def again() -> bool:
        rec.write_behind(4.0, inbound, 0.0, errors.append)
        return len(blocks) == 2

    await until(again)
    assert blocks == [12000, 16000]  # the block after the slow one covers all it had to wait for
    await rec.finish(4.2, inbound, 0.0, played_end=0)
    assert errors == [] and loop_thread not in threads
    with wave.open(str(tmp_path / "c.wav")) as w:
        assert w.getnframes() == int(4.2 * 8000)


async def test_a_failed_write_is_reported_once_and_stops_further_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def full_disk(self: DualWavWriter, left: Any, right: Any) -> None:
        calls.append(len(left))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DualWavWriter, "write", full_disk)
    rec = CallRecording(tmp_path / "c.wav", lag_s=0.5)
    errors: list[BaseException] = []
    rec.write_behind(2.0, b"", None, errors.append)
    await until(lambda: errors)
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    rec.write_behind(4.0, b"", None, errors.append)
    await asyncio.sleep(0.05)
    assert calls == [12000]
    with pytest.raises(OSError):  # the final write is tried, and its failure is the caller's to report
        await rec.finish(4.5, b"", None, played_end=0)
    await rec.finish(5.0, b"", None, played_end=0)  # twice: nothing more
    assert len(errors) == 1


async def test_a_recording_that_cannot_be_created_is_reported_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rec = CallRecording(blocker / "c.wav")
    errors: list[BaseException] = []
    rec.open(errors.append)
    await until(lambda: errors)
    assert len(errors) == 1 and isinstance(errors[0], OSError)


async def test_a_live_sessions_recording_is_written_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.backends.echo import EchoSession
    from bridge.protocol import Media, MediaStream, Start
    from bridge.session import MediaSession, SessionConfig

    loop_thread = threading.get_ident()
    writes: list[tuple[int, int]] = []  # (thread, samples)
    real_write = DualWavWriter.write

    def watched(self: DualWavWriter, left: Any, right: Any) -> None:
        writes.append((threading.get_ident(), len(left)))
        real_write(self, left, right)

    monkeypatch.setattr(DualWavWriter, "write", watched)
    sid = "MZ" + "3" * 32
    stream = MediaStream()
    stream.receive_text(Start(1, sid, "AC" + "0" * 32, "CA" + "0" * 32).serialize())
    stream.events_received()

    async def send(texts: list[str]) -> None:
        pass

    path = tmp_path / "rec" / "c.wav"
    config = SessionConfig(jitter_buffer_s=0.0, recording=path, record_lag_s=0.2)
    session = MediaSession(call_id="c", stream=stream, backend=EchoSession(0.0), send=send, config=config)
    session.start()
    loop = asyncio.get_running_loop()
    for i in range(75):  # 1.5 s of caller audio at real-time pace: the first block is due after 1.2 s
        session.on_media(Media(i + 2, sid, "inbound", i + 1, 20 * i, b"\x10" * 160), loop.time())
        await asyncio.sleep(0.02)
    await session.finish("test")
    assert session.failure is None
    assert len(writes) >= 2 and all(
        t != loop_thread for t, _ in writes
    )  # a block during the call, the rest at the end
    with wave.open(str(path)) as w:
        frames = w.getnframes()
        pcm = np.frombuffer(w.readframes(frames), dtype="<i2").reshape(-1, 2)
    assert frames == sum(n for _, n in writes)
    assert (pcm[:, 0] != 0).sum() >= 70 * 160 and (
        pcm[:, 1] != 0
    ).sum() >= 60 * 160  # both channels hold audio
