"""Start and stop the real Kyutai server, `python -m moshi_mlx.local_web`, with the tiny generated
weights (tests/moshi/conftest.py) on 127.0.0.1: for the tests and for benchmarks/moshi_server_overhead.py.

Plain code, no pytest: a server that cannot start raises `LocalWebFailed` with the tail of its log
(tests turn that into a failure, the benchmark prints it). Each server runs in its own process group
and `LocalWeb.kill()` kills the group: local_web runs the model and the web server in two
multiprocessing children that outlive a killed parent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.moshi.conftest import LM_FILE, MIMI_FILE, TOKENIZER_FILE, TinyRepo

__all__ = [
    "START_TIMEOUT_S",
    "LocalWeb",
    "LocalWebFailed",
    "free_port",
    "launch_local_web",
    "start_local_web",
    "wait_listening",
]

START_TIMEOUT_S = 120.0


class LocalWebFailed(RuntimeError):
    """local_web exited or did not listen in time; the message ends with its log's tail."""


@dataclass
class LocalWeb:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def signal_group(self, sig: signal.Signals) -> None:
        """Send `sig` to the server and both its children (SIGSTOP/SIGCONT pause and resume them)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: the parent and both children
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local_web(repo: TinyRepo, workdir: Path, *extra: str) -> LocalWeb:
    """Spawn local_web on a free port and return at once (it loads and warms up before it listens)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lm_config = workdir / "lm_config.json"
    lm_config.write_text(json.dumps(repo.lm_config))
    port = free_port()
    # stdout is a file, so Python block-buffers the server's log: unbuffered, a failure's tail is there
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(repo.cache_dir), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "moshi_mlx.local_web",
        "--static",
        "none",
        "--no-browser",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--moshi-weight",
        str(repo.file(LM_FILE)),
        "--mimi-weight",
        str(repo.file(MIMI_FILE)),
        "--tokenizer",
        str(repo.file(TOKENIZER_FILE)),
        "--lm-config",
        str(lm_config),
        *extra,
    ]
    log = workdir / "local_web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return LocalWeb(f"ws://127.0.0.1:{port}/api/chat", proc, log)


def wait_listening(server: LocalWeb, timeout_s: float = START_TIMEOUT_S) -> LocalWeb:
    """Block until the server accepts TCP connections (only once the model and Mimi are warmed up).
    On failure the server is killed and `LocalWebFailed` raised."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise LocalWebFailed(
                f"local_web exited with {server.proc.returncode} before listening:\n{server.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return server
        except OSError:
            time.sleep(0.25)
    server.kill()
    raise LocalWebFailed(f"local_web did not listen within {timeout_s:.0f} s:\n{server.log_tail()}")


def start_local_web(repo: TinyRepo, workdir: Path, *extra: str) -> LocalWeb:
    """Spawn local_web and wait until it listens (`LocalWebFailed` otherwise)."""
    return wait_listening(launch_local_web(repo, workdir, *extra))
