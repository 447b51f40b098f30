"""The Moshi-server backend's pure parts, with no server: message framing, the handshake, bounded
text, re-cutting audio into 1920-sample frames, the lag pairing, MOSHI_SERVER_URLS and the pool."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.backends.base import FRAME_SAMPLES
from bridge.backends.moshi_pool import ServerPool, ServerSpec, parse_server_urls
from bridge.backends.moshi_protocol import (
    FrameCutter,
    Handshake,
    Kind,
    LagMeter,
    Message,
    OpusDecoder,
    OpusEncoder,
    ServerProtocolError,
    bounded_text,
    codec_delay_ms,
)
from orchestrator.errors import SettingsError
from orchestrator.settings import Settings

# -- framing -----------------------------------------------------------------------------------------


def test_a_message_is_its_kind_byte_then_the_payload() -> None:
    assert Message.audio(b"OggS...").serialize() == b"\x01OggS..."
    assert Message.parse(b"\x02 hello") == Message(Kind.TEXT, b" hello")
    assert Message.parse(b"\x00") == Message(Kind.HANDSHAKE, b"")


def test_unknown_kinds_parse_so_they_can_be_discarded() -> None:
    msg = Message.parse(b"\x63abc")
    assert (msg.kind, msg.known) == (0x63, False)
    assert Message.parse(b"\x06").known


@pytest.mark.parametrize("data", [b"", "a text frame"])
def test_what_is_not_a_protocol_message_is_the_peers_error(data: bytes | str) -> None:
    with pytest.raises(ServerProtocolError):
        Message.parse(data)


def test_handshake_versions_are_little_endian_and_optional() -> None:
    assert Handshake.parse(b"") == Handshake(None, None)  # what moshi_mlx local_web sends
    assert Handshake.parse(bytes([0, 0, 0, 0, 7, 0, 0, 0])) == Handshake(0, 7)
    assert Handshake.parse(bytes([1, 0, 0, 0])) == Handshake(1, None)
    assert Handshake(0, 258).serialize() == bytes([0, 0, 0, 0, 0, 2, 1, 0, 0])
    assert Handshake.parse(Handshake(3, 9).serialize()[1:]) == Handshake(3, 9)


def test_bounded_text_cuts_and_neutralises_what_a_peer_sends() -> None:
    assert bounded_text(b" hello", 200) == " hello"  # the word boundary stays
    assert bounded_text(b"x" * 10_000, 200) == "x" * 200
    assert bounded_text(b"\xff\xfeok", 200) == "\ufffd\ufffdok"
    assert bounded_text("a\nb\u202ec\x1b[31m".encode(), 200) == "a\ufffdb\ufffdc\ufffd[31m"


# -- re-cutting --------------------------------------------------------------------------------------


def test_cutter_turns_any_chunking_into_exact_frames_in_order() -> None:
    signal = np.arange(5 * FRAME_SAMPLES + 100, dtype=np.float32)
    cutter = FrameCutter(max_frames=10)
    made = 0
    for chunk in np.split(signal, [7, 960, 3000, 3001, 9000]):
        made += cutter.push(chunk)
    frames = cutter.take_all()
    assert made == len(frames) == 5
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.float32 for f in frames)
    np.testing.assert_array_equal(np.concatenate(frames), signal[: 5 * FRAME_SAMPLES])
    assert cutter.partial_samples == 100 and cutter.take_all() == []


def test_cutter_keeps_the_newest_frames_and_counts_the_dropped() -> None:
    cutter = FrameCutter(max_frames=3)
    for i in range(5):
        cutter.push(np.full(FRAME_SAMPLES, i, np.float32))
    assert [int(f[0]) for f in cutter.take_all()] == [2, 3, 4]
    assert cutter.dropped == 2


def test_cutter_never_holds_more_than_its_bound_of_one_huge_push() -> None:
    cutter = FrameCutter(max_frames=4)
    huge = np.repeat(np.arange(1000, dtype=np.float32), FRAME_SAMPLES)  # 1000 frames at once
    cutter.push(huge)
    frames = cutter.take_all()
    assert [int(f[0]) for f in frames] == [996, 997, 998, 999]
    assert cutter.dropped == 996 and cutter.frames_out == 1000


# -- lag ---------------------------------------------------------------------------------------------


def test_lag_pairs_the_kth_frame_back_with_the_kth_sent() -> None:
    lag = LagMeter()
    for k in range(10):  # a frame every 80 ms, each answered 250 ms later
        lag.sent(k * 0.08)
    for k in range(10):
        lag.received(k * 0.08 + 0.25)
    summary = lag.summary()
    assert summary["lag_frames"] == 10
    assert summary["lag_ms_p50"] == pytest.approx(250.0)
    assert summary["lag_ms_max"] == pytest.approx(250.0)


def test_frames_back_with_none_sent_left_are_unpaired_not_negative_lag() -> None:
    lag = LagMeter()
    lag.received(0.0, frames=3)  # e.g. local_web's audio left over from its previous client
    lag.sent(1.0)
    lag.sent(1.08)
    lag.received(1.2)
    summary = lag.summary()
    assert summary["lag_unpaired_frames"] == 3
    assert summary["lag_outstanding_frames"] == 1
    assert summary["lag_ms_p50"] == pytest.approx(200.0)
    assert LagMeter().summary()["lag_ms_p50"] is None


# -- MOSHI_SERVER_URLS -------------------------------------------------------------------------------


def test_urls_split_on_commas_and_whitespace_with_sessions_per_url() -> None:
    specs = parse_server_urls(" ws://127.0.0.1:8998 ,wss://gpu.example/api/chat*4\n ws://[::1]:9000/x*2 ")
    assert specs == (
        ServerSpec("ws://127.0.0.1:8998/api/chat", 1),
        ServerSpec("wss://gpu.example/api/chat", 4),
        ServerSpec("ws://[::1]:9000/x", 2),
    )


def test_display_drops_credentials_and_query() -> None:
    (spec,) = parse_server_urls("wss://user:secret@gpu.example:8443/api/chat?token=abc*2")
    assert spec.url == "wss://user:secret@gpu.example:8443/api/chat?token=abc"
    assert spec.display == "wss://gpu.example:8443/api/chat"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "empty"),
        (" , ", "empty"),
        ("http://127.0.0.1:8998", "'http://127.0.0.1:8998'"),
        ("ws://127.0.0.1:8998*0", "'ws://127.0.0.1:8998*0'"),
        ("ws://127.0.0.1:8998*two", "'ws://127.0.0.1:8998*two'"),
        ("ws://127.0.0.1:99999", "'ws://127.0.0.1:99999'"),
        ("ws://:8998", "'ws://:8998'"),
        ("ws://a:1 ws://a:1/api/chat", "twice"),
    ],
)
def test_bad_urls_are_one_line_naming_the_entry(value: str, named: str) -> None:
    with pytest.raises(ValueError, match="MOSHI_SERVER_URLS") as info:
        parse_server_urls(value)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_settings_validate_the_urls_only_for_the_moshi_server_backend() -> None:
    ok = Settings.from_env({"BACKEND": "moshi-server", "MOSHI_SERVER_URLS": "ws://h:1*3"}, dotenv=False)
    assert ok.moshi_servers() == (ServerSpec("ws://h:1/api/chat", 3),)
    with pytest.raises(SettingsError, match="needs MOSHI_SERVER_URLS"):
        Settings.from_env({"BACKEND": "moshi-server"}, dotenv=False)
    with pytest.raises(SettingsError, match="'ftp://h'"):
        Settings.from_env({"BACKEND": "moshi-server", "MOSHI_SERVER_URLS": "ftp://h"}, dotenv=False)
    Settings.from_env({"BACKEND": "echo", "MOSHI_SERVER_URLS": "ftp://h"}, dotenv=False)  # unused: fine


def test_env_example_documents_the_setting() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert "MOSHI_SERVER_URLS=" in text and "moshi-server" in text


def test_registry_builds_the_backend_from_settings() -> None:
    from bridge.backends import registry

    settings = Settings.from_env(
        {"BACKEND": "moshi-server", "MOSHI_SERVER_URLS": "ws://a:1 ws://b:2*2"}, dotenv=False
    )
    backend = registry.create(settings)
    assert backend.name == "moshi-server" and not backend.busy
    assert [s["url"] for s in backend.servers()] == ["ws://a:1/api/chat", "ws://b:2/api/chat"]  # type: ignore[attr-defined]


# -- the pool ----------------------------------------------------------------------------------------


def test_pool_takes_the_least_loaded_server_and_is_busy_when_full() -> None:
    pool = ServerPool((ServerSpec("ws://a/api/chat", 2), ServerSpec("ws://b/api/chat", 1)))
    order = [pool.take() for _ in range(3)]
    assert [s.spec.url[5] if s else None for s in order] == ["a", "b", "a"]
    assert pool.busy and pool.take() is None
    assert "ws://a/api/chat 2/2" in pool.describe_busy()
    first = order[1]
    assert first is not None
    pool.release(first)
    assert not pool.busy
    with pytest.raises(RuntimeError):
        pool.release(first)


def test_pool_tries_servers_known_to_fail_last_but_still_tries_them() -> None:
    pool = ServerPool((ServerSpec("ws://a/api/chat"), ServerSpec("ws://b/api/chat")))
    pool.states[0].reachable = False
    taken = pool.take()
    assert taken is pool.states[1]
    assert pool.take() is pool.states[0]
    assert pool.take(exclude=()) is None


# -- the codec's delay -------------------------------------------------------------------------------


def test_the_codec_delay_is_where_clicks_come_out_of_one_pass_at_other_places_too() -> None:
    """codec_delay_ms measures one click; truth by more of them, at other places in other frames."""
    rng = np.random.default_rng(3)
    n_frames = 12
    audio = np.zeros(n_frames * FRAME_SAMPLES, np.float32)
    clicks = [k * FRAME_SAMPLES + int(rng.integers(300, 1500)) for k in range(n_frames)]
    for at in clicks:
        audio[at : at + 12] = 0.5
    encoder, decoder = OpusEncoder(), OpusDecoder()
    pages = [encoder.encode(audio[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]) for k in range(n_frames)]
    env = np.abs(np.concatenate([decoder.decode(p) for p in pages]))
    lags = [int(np.argmax(env[at : at + 600])) for at in clicks[:-1]]
    assert max(lags) - min(lags) <= 2, lags  # a fixed delay, wherever the click falls
    assert abs(codec_delay_ms() - float(np.median(lags)) / 24.0) <= 0.1, (codec_delay_ms(), lags)
    assert 2.0 <= codec_delay_ms() <= 30.0  # libopus: 6.5 ms of lookahead; 80 ms would be a frame lost
