"""End-to-end fixtures: the real server and the carrier emulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import shutil

import pytest

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (CI installs it: the caller speaks with it)",
)
