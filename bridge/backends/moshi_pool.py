"""The pool of Moshi-protocol servers behind the `moshi-server` backend: which URLs, how many sessions
each, and what we last saw of each.

`MOSHI_SERVER_URLS` lists one or more `ws://` / `wss://` URLs separated by commas or whitespace, each
optionally suffixed `*N` for N concurrent sessions (default 1: moshi_mlx `local_web` and the PyTorch
`moshi.server` hold a lock and serve one client at a time; the Rust `moshi-server` serves its batch
size). A URL without a path gets `/api/chat`, where every Kyutai server listens.

A call takes a session on the least loaded server that has one free; servers whose last attempt failed
are tried after the others (still tried, so a server that comes back is used again). Claiming happens
before any await, so two concurrent calls can never both take the last slot.

No I/O and no clock of its own here: the backend passes the times in. This module is imported by the
settings (to validate the variable), so it must stay free of heavy imports (numpy, sphn, websockets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PATH = "/api/chat"
MAX_SESSIONS_PER_URL = 4096
_SEPARATORS = re.compile(r"[,\s]+")
_EXPECTED = "expected ws://host:port[/path][*sessions], e.g. ws://127.0.0.1:8998*1"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One configured server: its WebSocket URL and how many sessions it may serve at once."""

    url: str
    capacity: int = 1

    @property
    def display(self) -> str:
        """The URL without credentials or query (either may carry a secret): for logs and reasons."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_server_urls(text: str) -> tuple[ServerSpec, ...]:
    """Parse `MOSHI_SERVER_URLS`. Raises ValueError with one line naming the bad entry."""
    entries = [e for e in _SEPARATORS.split(text or "") if e]
    if not entries:
        raise ValueError(f"MOSHI_SERVER_URLS is empty; {_EXPECTED}")
    specs: list[ServerSpec] = []
    seen: set[str] = set()
    for entry in entries:
        spec = _parse_entry(entry)
        if spec.url in seen:
            raise ValueError(
                f"MOSHI_SERVER_URLS entry {_shown(entry)} lists {spec.display} twice; "
                "give one entry with *N sessions instead"
            )
        seen.add(spec.url)
        specs.append(spec)
    return tuple(specs)


def _shown(entry: str) -> str:
    return repr(entry if len(entry) <= 80 else entry[:80] + "…")


def _parse_entry(entry: str) -> ServerSpec:
    url, star, count = entry.rpartition("*")
    if not star:
        url, count = entry, "1"
    if not count.isdigit() or not 1 <= int(count) <= MAX_SESSIONS_PER_URL:
        raise ValueError(
            f"MOSHI_SERVER_URLS entry {_shown(entry)}: sessions after '*' must be a whole number "
            f"1-{MAX_SESSIONS_PER_URL}; {_EXPECTED}"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as err:
        raise ValueError(f"MOSHI_SERVER_URLS entry {_shown(entry)}: {err}; {_EXPECTED}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(
            f"MOSHI_SERVER_URLS entry {_shown(entry)}: the scheme must be ws:// or wss://; {_EXPECTED}"
        )
    if not parts.hostname:
        raise ValueError(f"MOSHI_SERVER_URLS entry {_shown(entry)}: no host; {_EXPECTED}")
    if parts.fragment:
        raise ValueError(f"MOSHI_SERVER_URLS entry {_shown(entry)}: a URL fragment is meaningless here")
    path = parts.path if parts.path not in ("", "/") else DEFAULT_PATH
    normalized = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return ServerSpec(url=normalized, capacity=int(count))


@dataclass(slots=True)
class ServerState:
    """What the pool knows of one server. Mutated only by `ServerPool` and the backend."""

    spec: ServerSpec
    in_use: int = 0
    reachable: bool | None = None  # None: not tried yet
    last_error: str | None = None
    last_error_at: float | None = None  # wall-clock seconds (time.time()), for doctor and /metrics
    sessions_opened: int = 0
    sessions_failed: int = 0  # could not be opened (connect, refusal, no handshake)

    @property
    def free(self) -> int:
        return self.spec.capacity - self.in_use

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.spec.display,
            "capacity": self.spec.capacity,
            "in_use": self.in_use,
            "reachable": self.reachable,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "sessions_opened": self.sessions_opened,
            "sessions_failed": self.sessions_failed,
        }


class ServerPool:
    """Session slots over the configured servers: `take()` a slot, `release()` it when the call ends."""

    def __init__(self, specs: tuple[ServerSpec, ...]) -> None:
        if not specs:
            raise ValueError("a Moshi server pool needs at least one server")
        self.states = [ServerState(spec) for spec in specs]

    @property
    def capacity(self) -> int:
        return sum(s.spec.capacity for s in self.states)

    @property
    def in_use(self) -> int:
        return sum(s.in_use for s in self.states)

    @property
    def busy(self) -> bool:
        return all(s.free <= 0 for s in self.states)

    def take(self, exclude: tuple[ServerState, ...] = ()) -> ServerState | None:
        """Claim a slot on the least loaded server with one free (not in `exclude`), or None.

        Order: servers not known to be failing first, then the lowest share of slots in use, then
        the fewest in use, then the order listed (so one server fills evenly with its peers)."""
        candidates = [
            (s.reachable is False, s.in_use / s.spec.capacity, s.in_use, i)
            for i, s in enumerate(self.states)
            if s.free > 0 and s not in exclude
        ]
        if not candidates:
            return None
        state = self.states[min(candidates)[3]]
        state.in_use += 1
        return state

    def release(self, state: ServerState) -> None:
        if state.in_use <= 0:
            raise RuntimeError(f"moshi server pool: {state.spec.display} released more often than taken")
        state.in_use -= 1

    def describe_busy(self) -> str:
        """The busy answer: every slot taken, and where."""
        where = ", ".join(f"{s.spec.display} {s.in_use}/{s.spec.capacity}" for s in self.states)
        return f"every moshi server session is in use ({where})"
