"""Start a tunnel program (cloudflared or ngrok), read its public https URL, stop it on exit.

cloudflared's quick tunnel prints a line containing `https://<words>.trycloudflare.com`; ngrok, when
run with `--log stdout --log-format logfmt`, prints `url=https://....ngrok...` on its `started tunnel`
line. We read the program's output until such a URL appears, or fail with one clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
from dataclasses import dataclass

from orchestrator.children import dying_with_us
from orchestrator.errors import SettingsError

log = logging.getLogger(__name__)

COMMANDS = {
    "cloudflared": lambda local: ["tunnel", "--no-autoupdate", "--url", local],
    "ngrok": lambda local: ["http", local, "--log", "stdout", "--log-format", "logfmt"],
}
URL_PATTERNS = {
    "cloudflared": re.compile(r"https://[a-z0-9-]+\.trycloudflare\.com"),
    "ngrok": re.compile(r"url=(https://[^\s\"]+)"),
}
INSTALL_HINT = {
    "cloudflared": "install it (macOS: `brew install cloudflared`) or set PUBLIC_URL to a tunnel you run",
    "ngrok": "install it (macOS: `brew install ngrok`) and run `ngrok config add-authtoken ...`",
}


@dataclass
class Tunnel:
    program: str
    public_url: str
    process: asyncio.subprocess.Process
    _drain: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._drain:
            self._drain.cancel()


async def start_tunnel(
    program: str, local_url: str, *, timeout_s: float = 30.0, executable: str | None = None
) -> Tunnel:
    if program not in COMMANDS:
        raise SettingsError(f"unknown tunnel {program!r}: choose cloudflared or ngrok")
    exe = executable or shutil.which(program)
    if exe is None:
        raise SettingsError(f"--tunnel {program}: `{program}` is not installed; {INSTALL_HINT[program]}")
    proc = await asyncio.create_subprocess_exec(  # killed with us, even if we are killed with SIGKILL
        *dying_with_us([exe, *COMMANDS[program](local_url)]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    pattern = URL_PATTERNS[program]
    assert proc.stdout is not None
    try:
        url = await asyncio.wait_for(_find_url(proc.stdout, pattern), timeout_s)
    except (asyncio.TimeoutError, EOFError):
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
            proc.kill()
        await proc.wait()
        raise SettingsError(
            f"--tunnel {program}: no public https URL in its output within {timeout_s:.0f} s "
            f"(exit status {proc.returncode}); run `{program}` by hand to see why"
        ) from None
    drain = asyncio.get_running_loop().create_task(_drain(proc.stdout))
    log.info("tunnel %s: %s -> %s", program, url, local_url)
    return Tunnel(program, url, proc, drain)


async def _find_url(stream: asyncio.StreamReader, pattern: re.Pattern[str]) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise EOFError
        text = line.decode(errors="replace")
        log.debug("tunnel: %s", text.rstrip())
        match = pattern.search(text)
        if match:
            return match.group(1) if match.groups() else match.group(0)


async def _drain(stream: asyncio.StreamReader) -> None:
    """Keep reading so the program never blocks on a full pipe."""
    while await stream.readline():
        pass
