"""A Moshi-protocol server whose model is the identity and costs nothing: what the wire path alone adds.

It speaks `/api/chat` as Kyutai's servers do (rust/protocol.md; the handshake byte, then kind-1 Ogg/Opus
messages both ways) and treats audio as moshi_mlx's `local_web` does: an `sphn.OpusStreamReader`
decodes what arrives, the samples are cut into 1920-sample frames, and each frame goes straight back
through an `sphn.OpusStreamWriter` (local_web hands it to the model and encodes the model's frame; here
the "model" returns its input at once). So a bridge talking to it pays every cost of the remote path
(our Opus encode, Ogg paging, the socket both ways, the server's decode and encode, our decode and
re-cutting) and none of a model's: benchmarks/moshi_server_overhead.py compares that with the
in-process path on the same audio. Run in its own process so its CPU is not timed as ours:

    python -m tests.moshi.identity_server --port 0      # prints "listening ws://127.0.0.1:PORT"

Plain code, no pytest; it listens on 127.0.0.1 only and serves one client at a time, as local_web.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME = 1920
RATE = 24_000
START_TIMEOUT_S = 30.0


async def serve_identity(port: int) -> None:
    import sphn
    from websockets.asyncio.server import ServerConnection, serve

    lock = asyncio.Lock()

    async def chat(ws: ServerConnection) -> None:
        async with lock:  # one client at a time, like local_web and moshi.server
            reader, writer = sphn.OpusStreamReader(RATE), sphn.OpusStreamWriter(RATE)
            await ws.send(b"\x00")
            pending = np.zeros(0, dtype=np.float32)
            async for message in ws:
                if not isinstance(message, bytes) or message[:1] != b"\x01":
                    continue
                pcm = np.asarray(reader.append_bytes(message[1:]), dtype=np.float32).reshape(-1)
                pending = np.concatenate([pending, pcm])
                while pending.shape[0] >= FRAME:
                    frame, pending = pending[:FRAME], pending[FRAME:]
                    out = writer.append_pcm(frame)
                    if len(out):
                        await ws.send(b"\x01" + bytes(out))

    async with serve(chat, "127.0.0.1", port, compression=None, max_size=2**20) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening ws://127.0.0.1:{bound}", flush=True)
        await asyncio.Future()  # until killed


@dataclass
class IdentityServer:
    url: str
    proc: subprocess.Popen[str]

    def signal_group(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_identity_server() -> IdentityServer:
    """Start it in its own process group and wait for its address; raises RuntimeError if it fails."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.moshi.identity_server", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening "):
            return IdentityServer(line.split()[1] + "/api/chat", proc)
        if not line and proc.poll() is not None:
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the identity server did not start: {proc.stdout.read()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one).")
    args = parser.parse_args()
    try:
        asyncio.run(serve_identity(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
