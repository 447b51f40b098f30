"""The server's life as a worker (orchestrator.workers): registered at start, a heartbeat every
WORKER_HEARTBEAT_S, and with each beat the unfinished calls of dead or stopped workers adopted and
reconciled at once; stopped at shutdown. Store work runs on the writer thread."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from orchestrator import workers
from orchestrator.reconcile import Reconciler
from orchestrator.web.state import AppState
from orchestrator.workers import register

log = logging.getLogger(__name__)

__all__ = ["WorkerLoop"]


class WorkerLoop:
    """The server's life as a worker: registered at start, a heartbeat (and adoption of dead workers'
    calls) every WORKER_HEARTBEAT_S, stopped at shutdown."""

    def __init__(self, state: AppState, capacity: int) -> None:
        name = state.settings.worker
        assert name is not None
        self.state, self.name, self.capacity = state, name, capacity
        self._beat_failed = False

    async def start(self) -> dict[str, Any]:
        settings = self.state.settings
        row = await self.state.service.run(
            lambda s: register(
                s,
                self.name,
                public_url=settings.public_url,
                backend=self.state.backend.name,
                capacity=self.capacity,
                stale_s=settings.worker_stale_s,
            )
        )
        log.info("worker %s: %d session(s), public URL %s", self.name, self.capacity, settings.public_url)
        return row

    async def run(self) -> None:
        """Heartbeats and adoption until cancelled. A failed round is logged once and tried again.

        After a round that failed (the database away, say), no call is adopted for WORKER_STALE_S: the
        other workers were cut off too, and their first heartbeats since may not be in yet; adopting
        then would take the calls of workers that are alive."""
        reconciler = Reconciler.for_state(self.state)
        loop = asyncio.get_running_loop()
        stale_s = self.state.settings.worker_stale_s
        may_adopt_at = 0.0
        while True:
            await asyncio.sleep(self.state.settings.worker_heartbeat_s)
            try:
                await self.beat()
                if self._beat_failed:
                    may_adopt_at = loop.time() + stale_s
                    log.info("worker %s: heartbeat back; adopting again in %.0f s", self.name, stale_s)
                self._beat_failed = False
                if loop.time() >= may_adopt_at and (adopted := await self.adopt()):
                    await reconciler.settle(adopted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away, say: the next beat tries again
                if not self._beat_failed:
                    log.warning("worker %s: heartbeat failed (%s); retrying", self.name, exc)
                self._beat_failed = True

    async def beat(self) -> None:
        in_use = len(self.state.sessions)
        alive = await self.state.service.run(lambda s: workers.beat(s, self.name, in_use=in_use))
        if not alive:  # the row was removed or marked stopped: this process is still serving
            log.warning("worker %s: its row was gone or stopped; registering again", self.name)
            await self.start()

    async def adopt(self) -> list[dict[str, Any]]:
        """Take over the unfinished calls of dead and stopped workers (orchestrator.workers.adopt)."""
        stale_s = self.state.settings.worker_stale_s
        return await self.state.service.run(lambda s: workers.adopt(s, self.name, stale_s=stale_s))

    async def stop(self) -> None:
        await self.state.service.run(lambda s: workers.stop(s, self.name))
