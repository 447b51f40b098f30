"""Where `orchestrator models bench` keeps its last result, and the line `orchestrator doctor` reads
from it. Imports neither mlx nor the model (doctor stays fast and works without the moshi extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["BENCH_FILE_ENV", "bench_file", "last_bench_line", "share_text"]

BENCH_FILE_ENV = "MOSHI_BENCH_FILE"


def share_text(share: float) -> str:
    """A share of steps as a percentage, with a decimal below 10 %."""
    return f"{share * 100:.0f} %" if share >= 0.1 or share == 0 else f"{share * 100:.1f} %"


def bench_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the last result is kept: $MOSHI_BENCH_FILE, else bench.json in this user's cache folder."""
    env = os.environ if env is None else env
    if env.get(BENCH_FILE_ENV):
        return Path(env[BENCH_FILE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("moshi-call-orchestrator")) / "bench.json"


def _age(at: str, now: datetime) -> str:
    seconds = (now - datetime.fromisoformat(at)).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 and unit != 'min' else ''} ago"
    return "just now"


def last_bench_line(
    path: Path | None = None, *, repo: str | None = None, now: datetime | None = None
) -> str | None:
    """One line on the last stored bench for `orchestrator doctor`; None when no bench has run yet.

    With `repo` (the configured one), a bench of another model says so. An unreadable file is a line
    saying to bench again, never an exception.
    """
    path = path or bench_file()
    try:
        doc = json.loads(path.read_text())
        verdict, at, p95 = doc["verdict"], doc["at"], float(doc["lm_step_ms"]["p95"])
        line = (
            f"{verdict} (p95 {p95:.0f} ms, late {share_text(float(doc['late_share']))}, Mimi "
            f"{float(doc['encode_rtf']):.2f}x / {float(doc['decode_rtf']):.2f}x real time; "
            f"{doc['repo']}, {_age(at, now or datetime.now(timezone.utc))})"
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        return (
            f"the last bench ({path}) is unreadable ({type(err).__name__}); run `orchestrator models bench`"
        )
    if repo is not None and doc["repo"] != repo:
        line += f"; that was not the configured {repo}: run `orchestrator models bench`"
    return line
