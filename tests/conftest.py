"""Shared fixtures: settings for a test server with its own database in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import Settings

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-" + "x" * 16
PUBLIC_URL = "https://tunnel.example.test"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number="+15005550006",
        public_url=PUBLIC_URL,
        db=tmp_path / "orchestrator.db",
        host="127.0.0.1",
        port=8080,
        backend="echo",
        recordings_dir=tmp_path / "recordings",
        echo_delay_ms=200.0,
        reconcile_interval_s=0,  # no carrier to ask here (and never real Twilio): tests that want it set it
    )
