"""Several WebSocket text messages in one socket write: the media sender's outbound path.

aiohttp's `send_str` writes each message to the transport on its own, and asyncio's transport turns each
write into a `send()` system call and, on loopback or a quiet link, a TCP segment that wakes the peer. A
media session sends its 20 ms chunks and marks in bursts (an 80 ms model frame is four chunks and often a
mark), so this writes each burst as one buffer of complete frames instead: at 50 echo calls on the 2-core
dev box the per-message writes were about a tenth of the server's event loop (py-spy, benchmarks/README.md).

The frames are serialized by the `websockets` package's own frame codec as RFC 6455 server frames: FIN
set, opcode text, no mask (a server never masks), no extensions (the media socket never negotiates
permessage-deflate). Every write holds whole frames, so they interleave safely with aiohttp's own writes on
the same transport (pongs, the close frame).
Nothing is written once aiohttp considers the socket closed, since a close frame may already be out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web
from websockets.frames import Frame, Opcode

#: Above this many bytes waiting in the transport, the peer is reading slower than we send: wait for it.
WRITE_BUFFER_LIMIT = 64 * 1024
_DRAIN_POLL_S = 0.01


def text_frames(texts: Iterable[str]) -> bytes:
    """The wire bytes of one unmasked, unfragmented text frame per message, in order."""
    return b"".join(Frame(Opcode.TEXT, t.encode("utf-8")).serialize(mask=False, extensions=[]) for t in texts)


class BatchSender:
    """`await send(texts)` writes the messages to `ws` as one buffer (see the module docstring)."""

    __slots__ = ("_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self._ws = ws
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None

    async def send(self, texts: list[str]) -> None:
        ws, transport = self._ws, self._transport
        if ws.closed or not texts:
            return
        if transport is None:  # not a plain transport (a test double): the library's own path
            for text in texts:
                await ws.send_str(text)
            return
        if transport.is_closing():
            return
        transport.write(text_frames(texts))
        # Paced audio keeps the buffer near empty; if it grows, the peer has stopped reading: hold the
        # sender until the kernel takes it (or the socket goes), rather than queueing without bound.
        # (Polled: the transport has no public event to await, and aiohttp's drain is private.)
        while transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            if transport.is_closing():
                return
            await asyncio.sleep(_DRAIN_POLL_S)
