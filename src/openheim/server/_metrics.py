"""Prometheus metrics, in a registry of the app's own (several apps can share a process).

``/metrics`` shows them followed by the process-wide ones of
:mod:`openheim.telemetry` (model calls, tokens, runs, steps, tool calls,
errors, actors, checkpoints), which an app turns on when it is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from openheim import telemetry

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
        telemetry.enable_metrics()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry) + telemetry.render_metrics(), CONTENT_TYPE_LATEST
