"""What the server holds while it runs: settings, the service, the backend, live sessions, background tasks.

Its own module so that everything the server runs (hooks, media, evaluation, reconciliation, retention)
can name it without importing the app factory (`orchestrator.web.app`), which imports them in turn.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.backends.base import SpeechBackend
from orchestrator.settings import Settings
from orchestrator.web.prom import Prom
from orchestrator.writer import AsyncService

log = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    service: AsyncService
    backend: SpeechBackend
    prom: Prom
    facts: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)  # call id -> live MediaSession
    websockets: set[web.WebSocketResponse] = field(default_factory=set)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    analysis: Any = None  # orchestrator.evaluation.AnalysisPool, started on first use
    guard: Any = None  # orchestrator.web.limits.ConnectionGuard: connection slots and timeouts
    worker: dict[str, Any] | None = None  # this server's `workers` row when it runs as one (--worker)
    # set once the post-start warm-up (analysis imports, analysis process) is over: until then a thread
    # importing scipy holds the GIL in bursts. Harnesses that time calls (the rig, the benchmarks) wait.
    warmed: asyncio.Event = field(default_factory=asyncio.Event)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run slow follow-up work off the request path, keeping a reference so it is not lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


STATE = web.AppKey("state", AppState)
