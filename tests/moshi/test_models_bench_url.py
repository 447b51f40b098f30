"""`orchestrator models bench --url`: the remote bench through the command line, against the real
moshi_mlx `local_web` (tiny generated weights) and against fake servers whose behaviour is the truth:
an echo with a known delay (keeps up, round trip = that delay plus at most a frame), one slower than
real time (falls behind: exit 1), one that never sends the handshake (exit 3, one line).

Nothing here asserts how fast this machine is: the tiny model on a shared CPU may keep up or not,
so against local_web the verdict is checked against the documented rule restated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

pytest.importorskip("sphn")
pytest.importorskip("websockets")

from websockets.asyncio.server import ServerConnection, serve

from bridge.backends import moshi_server_bench
from bridge.backends.moshi_bench import percentiles
from bridge.backends.moshi_protocol import Handshake
from bridge.backends.moshi_server import MoshiServerConfig
from bridge.backends.moshi_server_bench import GROWTH_LIMIT_MS, JITTER_LIMIT_MS, judge
from orchestrator import exits
from orchestrator.cli import cli
from tests.moshi.local_web_server import LocalWeb, free_port

pytestmark = pytest.mark.moshi
Handler = Callable[[ServerConnection], Awaitable[None]]
FIGURES = ("lag_ms", "encode_ms", "decode_ms", "process_ms")


def invoke(*args: str, bench_file: Path) -> Result:
    return CliRunner().invoke(
        cli, ["models", "bench", *args], env={"MOSHI_BENCH_FILE": str(bench_file)}, catch_exceptions=False
    )


@contextlib.contextmanager
def server_in_thread(handler: Handler) -> Iterator[str]:
    """A websockets server on its own event loop in a thread (the command runs its own asyncio.run)."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            ready.append(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not ready and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def echo(delay_s: float, interval_s: float = 0.0) -> Handler:
    """Sends each audio message back `delay_s` after it came, and never two within `interval_s`
    (an interval over 80 ms is a server slower than real time)."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(Handshake(0, 1).serialize())
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def sender() -> None:
            last = 0.0
            while True:
                at, msg = await queue.get()
                await asyncio.sleep(
                    max(0.0, at + delay_s - time.monotonic(), last + interval_s - time.monotonic())
                )
                last = time.monotonic()
                await ws.send(msg)

        task = asyncio.create_task(sender())
        try:
            async for msg in ws:
                if isinstance(msg, bytes) and msg[:1] == b"\x01":
                    queue.put_nowait((time.monotonic(), msg))
        finally:
            task.cancel()

    return handler


async def silent(ws: ServerConnection) -> None:
    """Accepts the WebSocket and never sends the handshake (a local_web busy with another client)."""
    await ws.wait_closed()


def keeps_up_by_the_rule(doc: dict[str, Any]) -> bool:
    """The documented rule, restated: up, audio back, nothing dropped, lag not growing, steady."""
    return (
        doc["ended"] is None
        and doc["frames_received"] > 0
        and doc["frames_dropped_send"] + doc["frames_dropped_receive"] == 0
        and doc["lag_growth_ms"] <= 80
        and doc["lag_ms"]["p99"] - doc["lag_ms"]["p50"] <= 60
    )


# --- against the real local_web ----------------------------------------------------------------------


@pytest.mark.slow
def test_json_against_local_web_has_every_figure_and_the_rules_verdict(
    local_web: LocalWeb, tmp_path: Path
) -> None:
    stored = tmp_path / "bench.json"
    result = invoke("--url", local_web.url, "--seconds", "3", "--json", bench_file=stored)
    doc = json.loads(result.stdout)
    assert result.exit_code == (exits.OK if doc["keeps_up"] else exits.OUTCOME), result.output
    assert doc["kind"] == "remote" and doc["url"] == local_web.url
    assert doc["protocol_version"] is None and doc["model_version"] is None  # local_web: the kind byte alone
    frames = round(3 * 12.5)
    if doc["ended"] is None:  # every frame fed, paced like a phone: never faster than the audio
        assert doc["frames_sent"] == doc["process_ms"]["count"] == doc["encode_ms"]["count"] == frames
        assert doc["wall_s"] >= (frames - 1) * 0.08
    assert 0 < doc["frames_received"] <= doc["frames_sent"], local_web.log_tail()
    assert doc["handshake_ms"] > 0 and doc["first_audio_ms"] is not None and doc["first_audio_ms"] > 0
    for key in FIGURES:
        p = doc[key]
        assert 0 <= p["p50"] <= p["p95"] <= p["p99"] <= p["max"], (key, p)
    # every frame back is paired with one sent, or counted unpaired; the rest are still unanswered
    assert doc["lag_ms"]["count"] + doc["lag_unpaired_frames"] == doc["frames_received"]
    assert doc["lag_ms"]["count"] + doc["lag_outstanding_frames"] == doc["frames_sent"]
    assert doc["lag_ms"]["p50"] >= 0 and doc["opus_ms_per_frame"] > 0
    assert doc["keeps_up"] == keeps_up_by_the_rule(doc)
    assert (doc["problems"] == []) == doc["keeps_up"]
    assert doc["verdict"] == (doc["problems"][0] if doc["problems"] else doc["verdict"])
    assert not stored.exists(), "a remote bench is not kept for doctor"


@pytest.mark.slow
def test_text_against_local_web_prints_every_figure_and_the_verdict(
    local_web: LocalWeb, tmp_path: Path
) -> None:
    result = invoke(
        "--url", local_web.url.removesuffix("/api/chat"), "--seconds", "2", bench_file=tmp_path / "b"
    )
    assert result.exit_code in (exits.OK, exits.OUTCOME), result.output
    out = result.stdout
    assert out.startswith(f"Moshi server bench: {local_web.url}, 2 s of speech-like audio")  # /api/chat added
    for label in ("handshake", "round trip", "Opus", "bridge", "dropped", "verdict"):
        assert f"\n  {label:<12} " in out, label
    assert "ms CPU per 80 ms frame" in out and "per frame (grew" in out
    assert "connecting to" in result.stderr


# --- against fakes whose behaviour is the truth -------------------------------------------------------


def test_an_echo_server_keeps_up_with_its_delay_as_the_round_trip(tmp_path: Path) -> None:
    delay_s = 0.12
    with server_in_thread(echo(delay_s)) as url:
        result = invoke("--url", url, "--seconds", "3", "--json", bench_file=tmp_path / "b.json")
    doc = json.loads(result.stdout)
    assert result.exit_code == exits.OK, doc["problems"]
    assert doc["keeps_up"] and doc["verdict"].startswith("the server keeps up")
    assert doc["protocol_version"] == 0 and doc["model_version"] == 1
    # our own Ogg pages come back: each frame's round trip is the echo's delay, plus at most one frame
    # (an 80 ms frame is whole only once its last page is back) and the scheduling of a shared box
    assert delay_s * 1000 <= doc["lag_ms"]["p50"] <= delay_s * 1000 + 80 + 40, doc["lag_ms"]
    assert doc["frames_received"] >= doc["frames_sent"] - 3
    assert abs(doc["lag_growth_ms"]) <= 80


def test_a_server_slower_than_real_time_falls_behind_and_exits_1(tmp_path: Path) -> None:
    with server_in_thread(echo(0.02, interval_s=0.16)) as url:  # half real time
        result = invoke("--url", url, "--seconds", "3", "--json", bench_file=tmp_path / "b.json")
    assert result.exit_code == exits.OUTCOME, result.output
    doc = json.loads(result.stdout)
    assert not doc["keeps_up"] and doc["verdict"].startswith("the server falls behind: its round trip grew")
    # truth: the k-th answer leaves at k * 160 ms, the k-th frame at k * 80 ms: the lag grows 80 ms a
    # frame, so from the first quarter of the paired frames to the last it grows by far more than one
    assert doc["lag_growth_ms"] > 4 * GROWTH_LIMIT_MS
    assert doc["lag_outstanding_frames"] > 5  # frames never answered pile up


def test_a_server_that_never_sends_the_handshake_is_exit_3_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        moshi_server_bench, "MoshiServerConfig", functools.partial(MoshiServerConfig, handshake_timeout_s=1.0)
    )
    with server_in_thread(silent) as url:
        result = CliRunner().invoke(cli, ["models", "bench", "--url", url, "--seconds", "2"])
    assert result.exit_code == exits.UNAVAILABLE, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: cannot bench {url}/api/chat: sent no handshake within 1 s (serving another client? "
        "moshi_mlx local_web and moshi.server serve one client at a time)"
    )
    assert len([line for line in lines if line.startswith("error:")]) == 1 and result.stdout == ""


def test_nothing_listening_is_exit_3(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["models", "bench", "--url", url, "--json"])
    assert result.exit_code == exits.UNAVAILABLE, result.output
    assert result.stderr.startswith(f"error: cannot bench {url}/api/chat: refused the connection")
    assert json.loads(result.stdout) == {
        "error": result.stderr.strip().removeprefix("error: "),
        "exit_code": 3,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://host:8998"], "--url 'http://host:8998': the scheme must be ws:// or wss://"),
        (["--url", "ws://a:1 ws://b:2"], "--url takes one server, got 2"),
        (
            ["--url", "ws://a:1", "--quantize", "8"],
            "--url benches a remote server; --quantize choose a local",
        ),
    ],
)
def test_a_bad_url_or_local_options_are_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["models", "bench", *args])
    assert result.exit_code == exits.USAGE, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_documents_url_and_exit_3() -> None:
    out = CliRunner().invoke(cli, ["models", "bench", "--help"]).stdout
    assert "--url ws://HOST:PORT[/api/chat]" in out and "Example: orchestrator models bench --url" in out
    assert "3 nothing done: with --url" in out and "Not kept for doctor" in out


# --- the rule, without a server ---------------------------------------------------------------------


def verdict(lags: list[float], **overrides: Any) -> tuple[bool, str, list[str]]:
    kwargs: dict[str, Any] = {
        "lag": percentiles(lags),
        "growth_ms": moshi_server_bench.lag_growth_ms(lags),
        "frames_received": len(lags),
        "dropped": 0,
        "ended": None,
    }
    return judge(**(kwargs | overrides))


def test_the_verdict_rule() -> None:
    steady = [200.0 + (i % 5) for i in range(100)]
    ok, line, problems = verdict(steady)
    assert ok and line == "the server keeps up: every frame answered, round trip p99 204 ms, steady"
    assert not problems
    growing = [200.0 + 3 * i for i in range(100)]  # 3 ms a frame: 225 ms from the first quarter to the last
    ok, line, _ = verdict(growing)
    assert not ok and line.startswith("the server falls behind: its round trip grew by 225 ms")
    assert verdict([200.0 + i for i in range(100)])[0]  # 75 ms of growth: within one frame
    jumpy = [200.0] * 97 + [200.0 + JITTER_LIMIT_MS + 1] * 3
    ok, line, _ = verdict(jumpy)
    assert not ok and line.startswith("answers come unevenly: p99 261 ms is 61 ms over p50")
    assert verdict([200.0] * 97 + [200.0 + JITTER_LIMIT_MS] * 3)[0]  # exactly the buffer is in time
    ok, line, problems = verdict(steady, dropped=2, ended="moshi server ws://x/api/chat: stalled")
    assert not ok and line == "the session ended early: moshi server ws://x/api/chat: stalled"
    assert "2 frames were dropped" in problems[1]
    assert verdict([])[1] == "the server sent no audio back"
    assert moshi_server_bench.lag_growth_ms([1.0] * 7) == 0.0  # too few frames to tell
