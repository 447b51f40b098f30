"""The tunnel adapter reads the public URL from the program's output (stand-in executables)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.errors import SettingsError
from orchestrator.tunnel import start_tunnel

CLOUDFLARED_LINES = """2026-11-24T12:00:00Z INF Thank you for trying Cloudflare Tunnel.
2026-11-24T12:00:01Z INF Requesting new quick Tunnel on trycloudflare.com...
2026-11-24T12:00:02Z INF +--------------------------------------------------------------------------------------------+
2026-11-24T12:00:02Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |
2026-11-24T12:00:02Z INF |  https://quiet-river-sample-words.trycloudflare.com                                        |
2026-11-24T12:00:02Z INF +--------------------------------------------------------------------------------------------+
"""
NGROK_LINES = (
    't=2026-11-24T12:00:00+0000 lvl=info msg="starting web service" obj=web addr=127.0.0.1:4040\n'
    't=2026-11-24T12:00:01+0000 lvl=info msg="started tunnel" obj=tunnels name=command_line '
    "addr=http://127.0.0.1:8080 url=https://ab12-34-56.ngrok-free.app\n"
)


def stand_in(tmp_path: Path, name: str, output: str, *, then_sleep: bool = True) -> Path:
    script = tmp_path / name
    text = output.replace("'", "'\\''")
    script.write_text(f"#!/bin/sh\nprintf '%s' '{text}'\n" + ("exec sleep 30\n" if then_sleep else ""))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


async def test_cloudflared_url_is_read_and_process_stopped(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, "cloudflared", CLOUDFLARED_LINES)
    tunnel = await start_tunnel("cloudflared", "http://127.0.0.1:8080", executable=str(exe), timeout_s=10)
    assert tunnel.public_url == "https://quiet-river-sample-words.trycloudflare.com"
    await tunnel.stop()
    assert tunnel.process.returncode is not None


async def test_ngrok_url_is_read(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, "ngrok", NGROK_LINES)
    tunnel = await start_tunnel("ngrok", "http://127.0.0.1:8080", executable=str(exe), timeout_s=10)
    assert tunnel.public_url == "https://ab12-34-56.ngrok-free.app"
    await tunnel.stop()


async def test_no_url_in_time_is_one_clear_error(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, "cloudflared", "INF starting\n")
    with pytest.raises(SettingsError, match="no public https URL in its output within 1 s"):
        await start_tunnel("cloudflared", "http://127.0.0.1:8080", executable=str(exe), timeout_s=1)


async def test_program_exits_without_url(tmp_path: Path) -> None:
    exe = stand_in(tmp_path, "cloudflared", "ERR failed to connect\n", then_sleep=False)
    with pytest.raises(SettingsError, match="no public https URL"):
        await start_tunnel("cloudflared", "http://127.0.0.1:8080", executable=str(exe), timeout_s=5)


async def test_missing_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SettingsError, match="`ngrok` is not installed"):
        await start_tunnel("ngrok", "http://127.0.0.1:8080")
