"""Picks and builds the speech backend named by the settings (`BACKEND` / `--backend`)."""

from __future__ import annotations

from typing import Any

from bridge.backends.base import BackendError, SpeechBackend


def create(settings: Any, **overrides: Any) -> SpeechBackend:
    name = overrides.pop("name", None) or settings.backend
    if name == "echo":
        from bridge.backends.echo import EchoBackend

        return EchoBackend(
            delay_ms=overrides.get("echo_delay_ms", settings.echo_delay_ms),
            mode=overrides.get("echo_mode", settings.echo_mode),
            greeting=overrides.get("echo_greeting", settings.echo_greeting),
            yield_ms=overrides.get("echo_yield_ms", settings.echo_yield_ms),
        )
    if name == "playback":
        from bridge.backends.playback import PlaybackBackend

        return PlaybackBackend(wav=overrides.get("playback_wav"))
    if name == "moshi":
        try:
            from bridge.backends.moshi import MoshiBackend, MoshiConfig
        except ImportError as exc:
            raise BackendError(
                f"the moshi backend needs the moshi extra: pip install -e '.[moshi]' ({exc})"
            ) from exc
        config = overrides.get("moshi_config") or MoshiConfig.from_settings(settings)
        return MoshiBackend(config)
    if name == "moshi-server":
        from bridge.backends.moshi_server import MoshiServerBackend, MoshiServerConfig

        config = overrides.get("moshi_server_config") or MoshiServerConfig.from_settings(settings)
        return MoshiServerBackend(config)
    raise BackendError(f"unknown backend {name!r}: choose echo, playback, moshi or moshi-server")
