"""A database server that can go away and come back, as the writer thread (orchestrator.writer) sees it.

`ServerStore` is what a store on a server offers for that (PgStore does; SQLite's Store, a file with no
server to lose, does not, so its errors are never retried). `DbHealth` is what the writer last found:
written by the writer thread only, read by /healthz through `snapshot()`, under a lock.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol, runtime_checkable

from orchestrator.store import iso, utcnow

log = logging.getLogger(__name__)

#: the wait before the first try after the server was lost, doubled after each failed try up to the most
RETRY_FIRST_S, RETRY_MOST_S = 0.1, 1.0


@runtime_checkable
class ServerStore(Protocol):
    """A store on a server that can go away and come back (PgStore; SQLite's Store is not one)."""

    def lost_connection(self, exc: BaseException) -> bool: ...

    def reconnect(self) -> None: ...

    def describe(self, exc: BaseException) -> str: ...

    def aborted(self) -> bool:
        """Is this thread's open transaction aborted (an error outside a savepoint: everything in it is
        lost at COMMIT, which then rolls back without a word)?"""
        ...

    def transient(self, exc: BaseException) -> bool:
        """Did `exc` fail only because of another transaction (a deadlock, a serialization failure), so
        that the same work run again succeeds?"""
        ...


class DbHealth:
    """What the writer last found of the database: written by the writer thread, read by /healthz."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = False
        self.delay = RETRY_FIRST_S  # the wait before the next try while down
        self._since = iso(utcnow())
        self._retries = 0
        self._failed = 0
        self._last_error: str | None = None

    def lost(self, error: str) -> None:
        """A try failed because the server is gone: the first starts an outage, each next waits longer."""
        with self._lock:
            if self.down:
                self.delay = min(self.delay * 2, RETRY_MOST_S)
            else:  # the wait goes on growing if the server answered again but nothing committed yet
                self.down, self._since = True, iso(utcnow())
                log.warning("database lost, retrying: %s", error)
            self._last_error = error

    def committed(self) -> None:
        """A batch committed: the next outage starts with the shortest wait again."""
        self.delay = RETRY_FIRST_S

    def retried(self) -> None:
        with self._lock:
            self._retries += 1

    def back(self) -> None:
        with self._lock:
            if self.down:
                self.down, self._since = False, iso(utcnow())
                log.warning("database answers again (%d retries so far)", self._retries)

    def gave_up(self, jobs: int) -> str:
        """Count `jobs` answered StoreUnreachable; the last error, to tell them why."""
        with self._lock:
            self._failed += jobs
            return self._last_error or "no answer"

    def snapshot(self) -> dict[str, Any]:
        """state "ok" | "unreachable" since when; retries and jobs given up since the server started."""
        with self._lock:
            return {
                "state": "unreachable" if self.down else "ok",
                "since": self._since,
                "retries": self._retries,
                "failed_jobs": self._failed,
                "last_error": self._last_error,
            }
