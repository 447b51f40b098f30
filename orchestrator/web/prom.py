"""Live Prometheus metrics for `GET /metrics` (prometheus-client), one registry per app."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orchestrator.lifecycle import TERMINAL_STATES

_LATENCY_BUCKETS = (50, 100, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 5000, 10000)
_STEP_BUCKETS = (5, 10, 20, 40, 60, 80, 100, 150, 250, 500)


class Prom:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_by_state = Gauge(
            "orchestrator_calls_by_state", "Calls seen by this server per state", ["state"], registry=r
        )
        self.active_streams = Gauge("orchestrator_active_streams", "Open media streams", registry=r)
        self.callbacks = Counter(
            "orchestrator_callbacks_total", "Twilio callbacks received", ["endpoint", "outcome"], registry=r
        )
        self.media_errors = Counter(
            "orchestrator_media_protocol_errors_total", "Malformed media stream frames", registry=r
        )
        self.first_audio = Histogram(
            "orchestrator_first_audio_heard_ms",
            "First audio heard (ms)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.response_latency = Histogram(
            "orchestrator_response_latency_ms",
            "Response latency per turn (ms)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.step_ms = Histogram(
            "orchestrator_model_step_ms", "Model step time (ms)", buckets=_STEP_BUCKETS, registry=r
        )
        self.connections = Gauge(
            "orchestrator_connections",
            "Open connections by phase (reading, busy, idle)",
            ["phase"],
            registry=r,
        )
        self.connection_limit = Gauge("orchestrator_connection_limit", "Connections admitted now", registry=r)
        self.connections_closed = Gauge(
            "orchestrator_connections_closed_total",
            "Connections closed or refused by the limits, by why",
            ["why"],
            registry=r,
        )
        self.server_sessions = Gauge(
            "orchestrator_model_server_sessions",
            "Sessions of each model server (moshi-server backend), by kind (capacity, in_use)",
            ["server", "kind"],
            registry=r,
        )
        self.server_reachable = Gauge(
            "orchestrator_model_server_reachable",
            "1 when the model server's last connection worked, 0 when it failed (absent: not tried yet)",
            ["server"],
            registry=r,
        )
        self._states: dict[str, str] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    def call_state(self, call_id: str, state: str) -> None:
        old = self._states.get(call_id)
        if old == state or call_id in self._ended:
            return
        if old is not None:
            self.calls_by_state.labels(old).dec()
        self.calls_by_state.labels(state).inc()
        if state in TERMINAL_STATES:
            # its last state stays counted; only a bounded memory of ended calls is kept
            self._states.pop(call_id, None)
            self._ended[call_id] = None
            if len(self._ended) > 10_000:
                self._ended.popitem(last=False)
        else:
            self._states[call_id] = state

    def render(
        self, *, active_streams: int, guard: Any = None, servers: list[dict[str, Any]] | None = None
    ) -> tuple[bytes, str]:
        self.active_streams.set(active_streams)
        for server in servers or ():  # the backend's pool, read at scrape time
            url = str(server.get("url"))
            self.server_sessions.labels(url, "capacity").set(float(server.get("capacity") or 0))
            self.server_sessions.labels(url, "in_use").set(float(server.get("in_use") or 0))
            if server.get("reachable") is not None:
                self.server_reachable.labels(url).set(1.0 if server["reachable"] else 0.0)
        if guard is not None:  # orchestrator.web.limits.ConnectionGuard: read at scrape time
            for phase, n in guard.phases().items():
                self.connections.labels(phase).set(n)
            self.connection_limit.set(guard.limit)
            for why, n in guard.counts.items():
                self.connections_closed.labels(why).set(n)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
