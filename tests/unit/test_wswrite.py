"""The media sender's batched frame writer: frames a WebSocket parser accepts, one write per burst."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side

from orchestrator.web.wswrite import WRITE_BUFFER_LIMIT, BatchSender, text_frames


def parse_as_client(data: bytes) -> list[tuple[Opcode, bool, str]]:
    client = Protocol(Side.CLIENT, max_size=None)
    client.receive_data(data)
    return [(f.opcode, f.fin, f.data.decode()) for f in client.events_received()]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_form_parses_as_one_text_frame(size: int) -> None:
    # 7-bit, 16-bit and 64-bit length forms, at and around each boundary
    text = "é" * (size // 2) + "a" * (size % 2)  # multi-byte UTF-8: lengths are in bytes, not characters
    assert parse_as_client(text_frames([text])) == [(Opcode.TEXT, True, text)]


def test_a_burst_is_the_frames_in_order() -> None:
    texts = ['{"event":"media","n":1}', '{"event":"mark","n":2}', "x" * 300]
    assert [t for _, _, t in parse_as_client(text_frames(texts))] == texts


class FakeTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeWs:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        self.sent.append(text)


async def test_one_write_per_burst_and_nothing_after_close() -> None:
    ws, transport = FakeWs(), FakeTransport()
    sender = BatchSender(ws, transport)  # type: ignore[arg-type]
    await sender.send(["a", "b", "c"])
    assert len(transport.written) == 1
    assert [t for _, _, t in parse_as_client(transport.written[0])] == ["a", "b", "c"]
    await sender.send([])
    ws.closed = True  # aiohttp marks the socket closed before its close frame goes out
    await sender.send(["d"])
    transport.closing, ws.closed = True, False
    await sender.send(["e"])
    assert len(transport.written) == 1


async def test_a_peer_that_stops_reading_holds_the_sender_until_it_drains() -> None:
    ws, transport = FakeWs(), FakeTransport()
    sender = BatchSender(ws, transport)  # type: ignore[arg-type]
    transport.buffered = WRITE_BUFFER_LIMIT + 1
    task = asyncio.create_task(sender.send(["a"]))
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the kernel to take the backlog
    transport.buffered = 0
    await asyncio.wait_for(task, 1.0)
    transport.buffered = WRITE_BUFFER_LIMIT + 1
    task = asyncio.create_task(sender.send(["b"]))
    await asyncio.sleep(0.05)
    transport.closing = True  # ... or for the socket to go
    await asyncio.wait_for(task, 1.0)
    assert len(transport.written) == 2


async def test_without_a_plain_transport_it_falls_back_to_the_library() -> None:
    ws = FakeWs()
    await BatchSender(ws, None).send(["a", "b"])  # type: ignore[arg-type]
    assert ws.sent == ["a", "b"]
