"""Prometheus metrics, in a registry of the app's own (several apps can share a process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from openheim.server._state import ServerState


class Metrics:
    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "openheim_http_requests",
            "HTTP requests by method, endpoint and status",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.active = Gauge(
            "openheim_active_runs",
            "Agent runs and model calls in flight",
            registry=self.registry,
        )
        self.active.set_function(lambda: float(sum(state.active.values())))
        self.buffered = Gauge(
            "openheim_buffered_runs",
            "Runs whose events are kept for Last-Event-ID replay",
            registry=self.registry,
        )
        self.buffered.set_function(lambda: float(len(state.runs)))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
