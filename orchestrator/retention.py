"""Recordings retention: the recordings folder does not grow for ever (~0.77 MB per call).

At server start and then every `CHECK_INTERVAL_S`, recordings (only our own files, `c_<id>.wav`, with the
files kept beside them: `.model-in.wav`, `.trace.npz`)
older than RECORDINGS_MAX_AGE_DAYS are removed, then, while the folder holds more than
RECORDINGS_MAX_TOTAL_MB, the oldest. Never the recording of a live call, nor a file written in the
last minute. A removed recording's call row no longer points at it (`recording_path` cleared), and the
server logs what went and why. 0 turns either limit off.

`plan_removals` is pure; `prune` touches the folder; `run_retention` is the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.web.state import AppState

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 600.0
RECENT_S = 60.0  # a file this fresh may still be being written
RECORDING_NAME = re.compile(r"(c_[0-9a-f]{16})\.wav")
# files kept beside a recording, removed with it: what the model heard (AEC=on), the media trace
COMPANIONS = (".model-in.wav", ".trace.npz")


def companions(recording: Path) -> list[Path]:
    return [recording.with_name(recording.stem + suffix) for suffix in COMPANIONS]


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    size: int
    mtime: float

    @property
    def call_id(self) -> str:
        return self.path.stem


@dataclass(frozen=True, slots=True)
class Removal:
    recording: Recording
    why: str


def plan_removals(
    files: Collection[Recording],
    *,
    now: float,
    max_age_days: float,
    max_total_mb: float,
    keep: Collection[str] = (),
) -> list[Removal]:
    """Which recordings go: too old first, then the oldest while the total is over the limit."""
    removable = sorted(
        (f for f in files if f.call_id not in keep and f.mtime < now - RECENT_S), key=lambda f: f.mtime
    )
    out: list[Removal] = []
    if max_age_days > 0:
        cutoff = now - max_age_days * 86400
        out += [Removal(f, f"older than {max_age_days:g} days") for f in removable if f.mtime < cutoff]
    if max_total_mb > 0:
        gone = {r.recording.path for r in out}
        total = sum(f.size for f in files if f.path not in gone)
        limit = max_total_mb * 1024 * 1024
        for f in removable:
            if total <= limit:
                break
            if f.path not in gone:
                out.append(Removal(f, f"recordings over {max_total_mb:g} MB in total"))
                total -= f.size
    return out


def scan(folder: Path) -> list[Recording]:
    if not folder.is_dir():
        return []
    out = []
    with os.scandir(folder) as entries:
        for e in entries:
            if RECORDING_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                size = st.st_size
                for extra in companions(Path(e.path)):  # they count towards the folder's size too
                    try:
                        size += extra.stat().st_size
                    except OSError:
                        pass
                out.append(Recording(Path(e.path), size, st.st_mtime))
    return out


def prune(
    folder: Path,
    *,
    max_age_days: float,
    max_total_mb: float,
    keep: Collection[str] = (),
    now: float | None = None,
) -> list[Removal]:
    """Remove what `plan_removals` says from `folder`; returns what was removed."""
    removals = plan_removals(
        scan(folder),
        now=time.time() if now is None else now,
        max_age_days=max_age_days,
        max_total_mb=max_total_mb,
        keep=keep,
    )
    done = []
    for r in removals:
        try:
            r.recording.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("recordings: cannot remove %s: %s", r.recording.path, exc)
            continue
        for extra in companions(r.recording.path):
            try:
                extra.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("recordings: cannot remove %s: %s", extra, exc)
        done.append(r)
    return done


async def run_retention(state: AppState, interval_s: float = CHECK_INTERVAL_S) -> None:
    """Prune now, then every `interval_s`, until cancelled. Never raises."""
    settings = state.settings
    folder = settings.recordings_dir
    if folder is None or (settings.recordings_max_age_days <= 0 and settings.recordings_max_total_mb <= 0):
        return
    while True:
        try:
            await prune_once(state, Path(folder))
        except Exception:  # the next check tries again
            log.exception("recordings retention check failed")
        await asyncio.sleep(interval_s)


async def prune_once(state: AppState, folder: Path) -> list[Removal]:
    settings = state.settings
    keep = set(state.sessions)  # live calls' recordings stay
    done = await asyncio.to_thread(
        prune,
        folder,
        max_age_days=settings.recordings_max_age_days,
        max_total_mb=settings.recordings_max_total_mb,
        keep=keep,
    )
    if not done:
        return done

    await state.service.forget_recordings([(r.recording.call_id, str(r.recording.path)) for r in done])
    whys = sorted({r.why for r in done})
    log.info(
        "recordings: removed %d (%.1f MB): %s",
        len(done),
        sum(r.recording.size for r in done) / 2**20,
        "; ".join(whys),
    )
    return done
