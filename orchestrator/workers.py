"""Several orchestrator workers over one database: who is alive, which worker takes a call, and what
happens to the calls of a worker that died.

`orchestrator serve --worker NAME` registers the server in the `workers` table (name, public URL,
backend, sessions) and says it is alive every WORKER_HEARTBEAT_S. A worker is *up* while it has spoken
within WORKER_STALE_S and has not stopped; *stopped* after a clean shutdown; *dead* otherwise.

- A call takes a session on a worker before anything is dialled or answered (`claim`): the up worker
  with the most free sessions, this worker on a tie. The claim and the call row are one transaction,
  and the store counts a worker's sessions as its calls that are not over, so two calls never get the
  last one and a crash leaves no slot taken. `orchestrator call` puts the claimed worker's public URL
  in the TwiML; the voice webhook on any worker answers with a `<Stream>` to the worker it claimed, or a
  spoken busy when every worker is full.
- Status callbacks may land on any worker: the database's dedupe claims apply each once.
- Every heartbeat, a worker adopts the unfinished calls of dead and stopped workers (atomically: each
  goes to one adopter), records `reconcile/worker_lost` on each and reconciles it at once from the
  carrier (orchestrator.reconcile): a call the carrier says is over is settled, a live one whose stream
  died with its worker is marked `stream_lost`. So a killed worker's calls settle within
  WORKER_STALE_S + WORKER_HEARTBEAT_S plus one REST fetch.

The rules here (liveness, capacity, the busy message) are pure, and the claims run on a `CallService`
inside the caller's transaction; the server's shell is `orchestrator.web.worker_loop.WorkerLoop`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.errors import SettingsError
from orchestrator.store import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from orchestrator.service import CallService
    from orchestrator.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WORKER_CAPACITY",
    "adopt",
    "alive_since",
    "beat",
    "busy_reason",
    "claim",
    "move_claim",
    "others_up",
    "register",
    "stop",
    "take_inbound",
    "worker_capacity",
    "worker_status",
    "workers_summary",
]

#: sessions of a worker whose backend has no limit of its own (the echo backend) and no --capacity
DEFAULT_WORKER_CAPACITY = 4


def alive_since(now: datetime, stale_s: float) -> str:
    """The oldest heartbeat (ISO) of a worker that still counts as alive at `now`."""
    return iso(now - timedelta(seconds=stale_s))


def worker_status(row: Mapping[str, Any], *, now: datetime, stale_s: float) -> str:
    """`up`, `stopped` (shut down cleanly) or `dead` (no heartbeat for `stale_s`)."""
    if row.get("stopped_at"):
        return "stopped"
    return "up" if str(row["heartbeat_at"]) >= alive_since(now, stale_s) else "dead"


def heartbeat_age_s(row: Mapping[str, Any], now: datetime) -> float:
    return max(0.0, (now - parse_iso(str(row["heartbeat_at"]))).total_seconds())


def worker_capacity(settings: Settings, backend_capacity: int | None) -> int:
    """Sessions this worker offers: WORKER_CAPACITY / --capacity, else the backend's own limit (moshi 1,
    moshi-server the sum of its servers'), else DEFAULT_WORKER_CAPACITY."""
    if settings.worker_capacity is not None:
        return settings.worker_capacity
    return backend_capacity if backend_capacity is not None else DEFAULT_WORKER_CAPACITY


def busy_reason(workers: Sequence[Mapping[str, Any]], *, now: datetime, stale_s: float) -> str:
    """Why no worker could take a call, in one line."""
    if not workers:
        return "no worker is registered in this database (start `orchestrator serve --worker NAME`)"
    up = [w for w in workers if worker_status(w, now=now, stale_s=stale_s) == "up"]
    if not up:
        last = max(workers, key=lambda w: str(w["heartbeat_at"]))
        return (
            f"no worker is up: the last heartbeat was {last['name']}'s, {heartbeat_age_s(last, now):.0f} s "
            "ago (`orchestrator workers` lists them)"
        )
    used = sum(min(int(w["claimed"]), int(w["capacity"])) for w in up)
    total = sum(int(w["capacity"]) for w in up)
    return f"every worker is busy: {used} of {total} sessions in use on {len(up)} worker(s)"


def workers_summary(workers: Sequence[Mapping[str, Any]], *, now: datetime, stale_s: float) -> str:
    """One line about the workers of a database (doctor): how many are up with their sessions, and
    which are dead; empty when there are none."""
    if not workers:
        return ""
    by: dict[str, list[Mapping[str, Any]]] = {"up": [], "dead": [], "stopped": []}
    for w in workers:
        by[worker_status(w, now=now, stale_s=stale_s)].append(w)
    used = sum(int(w["claimed"]) for w in by["up"])
    parts = [f"{len(by['up'])} up ({used}/{sum(int(w['capacity']) for w in by['up'])} sessions)"]
    if by["dead"]:
        dead = ", ".join(f"{w['name']} {heartbeat_age_s(w, now):.0f} s" for w in by["dead"])
        parts.append(f"{len(by['dead'])} dead ({dead} without a heartbeat; the others adopt their calls)")
    if by["stopped"]:
        parts.append(f"{len(by['stopped'])} stopped")
    return "workers: " + ", ".join(parts)


def claim(
    service: CallService, call: Mapping[str, Any], *, stale_s: float, prefer: str | None = None
) -> dict[str, Any] | None:
    """A session for `call` on an up worker (its row, with `claimed` counting this call), recorded as the
    call's `local/worker_claimed` note; None when every worker is full. A call that already holds one
    on an up worker (a retried voice webhook) keeps it. Runs inside the caller's transaction."""
    store = service.store
    since = alive_since(utcnow(), stale_s)
    held = call.get("worker")
    if held:
        row = store.get_worker(str(held))
        if row is not None and worker_status(row, now=utcnow(), stale_s=stale_s) == "up":
            return row
    row = store.claim_worker(str(call["id"]), alive_since=since, prefer=prefer)
    if row is not None:
        service.record(
            source="local",
            type="worker_claimed",
            call_id=str(call["id"]),
            payload={
                "worker": row["name"],
                "public_url": row["public_url"],
                "in_use": int(row["claimed"]),
                "capacity": int(row["capacity"]),
            },
        )
    return row


def take_inbound(
    service: CallService, me: str, *, stale_s: float, **call: Any
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """The voice webhook on worker `me`: the inbound call (made once per CallSid, as without workers)
    with a session claimed on some up worker, this one on a tie. Returns (call, worker row, None), or
    (call, None, why) when every worker is full: the caller then hears the spoken busy, and the
    `local/refused_busy` note says why."""
    row = service.create_inbound_call(**call)
    worker = claim(service, row, stale_s=stale_s, prefer=me)
    if worker is not None:
        return service.store.get_call(str(row["id"])), worker, None
    why = busy_reason(service.store.list_workers(), now=utcnow(), stale_s=stale_s)
    service.store.update_call(str(row["id"]), say_text=None)
    service.record(source="local", type="refused_busy", call_id=str(row["id"]), payload={"reason": why})
    return service.store.get_call(str(row["id"])), None, why


def register(
    service: CallService,
    name: str,
    *,
    public_url: str | None,
    backend: str,
    capacity: int,
    stale_s: float,
    host: str | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """Make this process worker `name`; SettingsError when a worker of that name is up elsewhere.

    A row left by a process that died (no heartbeat for `stale_s`, or a pid gone on this host) is taken
    over: that is a restart, and its unfinished calls are this worker's to reconcile."""
    store = service.store
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else pid
    now = utcnow()
    with store.transaction():
        old = store.get_worker(name)
        if (
            old is not None
            and worker_status(old, now=now, stale_s=stale_s) == "up"
            and (old["host"], old["pid"]) != (host, pid)
            and not (old["host"] == host and not _pid_alive(old["pid"]))
        ):
            raise SettingsError(
                f"worker {name!r} is already running on {old['host']} (pid {old['pid']}, heartbeat "
                f"{heartbeat_age_s(old, now):.0f} s ago): give this one another --worker name, or stop that one"
            )
        twins = [
            w["name"]
            for w in store.list_workers()
            if w["name"] != name
            and public_url
            and w["public_url"] == public_url
            and worker_status(w, now=now, stale_s=stale_s) == "up"
        ]
        if twins:
            log.warning(
                "worker %s: public URL %s is also worker %s's: calls claimed on one may stream to the "
                "other (each worker needs its own public URL)",
                name,
                public_url,
                ", ".join(twins),
            )
        stamp = iso(now)
        store.put_worker(
            name,
            public_url=public_url,
            backend=backend,
            capacity=capacity,
            host=host,
            pid=pid,
            started_at=stamp,
            heartbeat_at=stamp,
        )
        row = store.get_worker(name)
    assert row is not None
    return row


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# -- the server's store work as a worker (run on the writer thread; the handlers name these) -------------


def beat(service: CallService, name: str, *, in_use: int) -> bool:
    """Worker `name` is alive now with `in_use` streams; False when its row is gone or stopped."""
    return service.store.heartbeat_worker(name, at=iso(utcnow()), in_use=in_use)


def stop(service: CallService, name: str) -> None:
    service.store.stop_worker(name, at=iso(utcnow()))


def move_claim(service: CallService, call_id: str, worker: str) -> None:
    """The call streams on `worker`: the session it holds is that worker's."""
    service.store.update_call(call_id, worker=worker)


def others_up(service: CallService, me: str, *, stale_s: float) -> set[str]:
    """The names of the workers other than `me` that are up."""
    now = utcnow()
    return {
        str(w["name"])
        for w in service.store.list_workers()
        if w["name"] != me and worker_status(w, now=now, stale_s=stale_s) == "up"
    }


def adopt(service: CallService, me: str, *, stale_s: float) -> list[dict[str, Any]]:
    """Take over the unfinished calls of dead and stopped workers; each gets a `reconcile/worker_lost`
    note saying whose it was and why. Returns them as they were (their old `worker`)."""
    now = utcnow()
    calls = service.store.adopt_calls(me, alive_since=alive_since(now, stale_s))
    for call in calls:
        old = service.store.get_worker(str(call["worker"]))
        if old is None:
            why = "its row is gone"
        elif old["stopped_at"]:
            why = "it stopped"
        else:
            why = f"no heartbeat for {heartbeat_age_s(old, now):.0f} s"
        service.record(
            source="reconcile",
            type="worker_lost",
            call_id=str(call["id"]),
            call_sid=call.get("call_sid"),
            payload={"worker": call["worker"], "adopted_by": me, "why": why},
        )
        log.warning(
            "call %s (%s): worker %s lost (%s); adopted by %s",
            call["id"],
            call["state"],
            call["worker"],
            why,
            me,
        )
    return calls
