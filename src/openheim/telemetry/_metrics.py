"""Prometheus metrics, in one registry per process (``prometheus-client``, imported on enable).

Off until enabled (the server's ``/metrics``, :func:`serve_metrics`, or
``configure(metrics=True)``); while off the hooks skip them. The metrics:

- ``gen_ai_client_token_usage`` (histogram, tokens; labels
  ``gen_ai_operation_name``, ``gen_ai_provider_name``, ``gen_ai_request_model``,
  ``gen_ai_token_type`` = input | output) and
  ``gen_ai_client_operation_duration_seconds`` (histogram; the same labels
  but ``error_type`` instead of the token type, empty on success): the GenAI
  semantic conventions' ``gen_ai.client.token.usage`` and
  ``gen_ai.client.operation.duration``, with their bucket boundaries.
- ``openheim_agent_runs_total{agent,status}``,
  ``openheim_workflow_runs_total{workflow,status}``,
  ``openheim_workflow_steps_total{workflow,outcome}``,
  ``openheim_tool_calls_total{tool,outcome}``,
  ``openheim_errors_total{type,where}`` (where: agent, model, tool, workflow,
  step).
- ``openheim_queue_depth``, ``openheim_queue_in_flight``,
  ``openheim_queue_dead_letters`` and ``openheim_queue_redeliveries``
  (gauges by ``queue``, set by the worker with :func:`record_queue`).
- ``openheim_actor_mailbox_depth``, ``openheim_actors_live``,
  ``openheim_actors_passivated_total``, ``openheim_actor_messages_dropped_total``,
  ``openheim_actor_failures_total`` (by runtime ``namespace``, read from each
  watched runtime's ``stats()`` when scraped).
- ``openheim_checkpoint_bytes`` and ``openheim_checkpoint_seconds``
  (histograms by ``kind``, agent or workflow: size and write latency of each
  checkpoint record, an agent run's or a durable workflow run's).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

__all__ = [
    "current",
    "disable_metrics",
    "enable_metrics",
    "metrics_enabled",
    "record_checkpoint",
    "record_queue",
    "render_metrics",
    "serve_metrics",
    "watch_runtime",
]

# The GenAI semantic conventions' advised bucket boundaries.
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
BYTE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
SECOND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


def _needs_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        from openheim.errors import ConfigError

        raise ConfigError(
            "metrics need 'prometheus-client' (in the 'server' extra): "
            "pip install 'openheim[server]' or pip install prometheus-client"
        ) from None
    return prometheus_client


class Metrics:
    """The instruments, in a registry of their own."""

    def __init__(self) -> None:
        p = _needs_prometheus()
        r = self.registry = p.CollectorRegistry()
        self.tokens = p.Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per model call (gen_ai.client.token.usage)",
            [*_GENAI, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = p.Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of model calls (gen_ai.client.operation.duration)",
            [*_GENAI, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.agent_runs = p.Counter(
            "openheim_agent_runs", "Agent runs by how they ended", ["agent", "status"], registry=r
        )
        self.workflow_runs = p.Counter(
            "openheim_workflow_runs",
            "Workflow run drives by how they ended (done, waiting, failed, cancelled)",
            ["workflow", "status"],
            registry=r,
        )
        self.steps = p.Counter(
            "openheim_workflow_steps",
            "Workflow steps executed, by outcome",
            ["workflow", "outcome"],
            registry=r,
        )
        self.tool_calls = p.Counter(
            "openheim_tool_calls", "Tool calls by outcome", ["tool", "outcome"], registry=r
        )
        self.errors = p.Counter(
            "openheim_errors",
            "Errors by type and where they happened",
            ["type", "where"],
            registry=r,
        )
        q = ["queue"]
        self.queue_depth = p.Gauge(
            "openheim_queue_depth", "Tasks waiting on a batch queue", q, registry=r
        )
        self.queue_in_flight = p.Gauge(
            "openheim_queue_in_flight", "Tasks taken and not yet acked", q, registry=r
        )
        self.queue_dead = p.Gauge(
            "openheim_queue_dead_letters", "Tasks in a queue's dead letters", q, registry=r
        )
        self.queue_redeliveries = p.Gauge(
            "openheim_queue_redeliveries",
            "Deliveries beyond the first since the queue was created",
            q,
            registry=r,
        )
        self.checkpoint_bytes = p.Histogram(
            "openheim_checkpoint_bytes",
            "Size of each checkpoint record written (kind: agent run or workflow run)",
            ["kind"],
            buckets=BYTE_BUCKETS,
            registry=r,
        )
        self.checkpoint_seconds = p.Histogram(
            "openheim_checkpoint_seconds",
            "Latency of each checkpoint write (kind: agent run or workflow run)",
            ["kind"],
            buckets=SECOND_BUCKETS,
            registry=r,
        )
        r.register(_RuntimeCollector(_runtimes))


class _RuntimeCollector:
    """Reads every watched runtime's ``stats()`` at scrape time."""

    def __init__(self, runtimes: weakref.WeakSet[Any]) -> None:
        self.runtimes = runtimes

    def describe(self) -> list[Any]:
        return []  # no description at registration: collect() is cheap and always current

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "queued": GaugeMetricFamily(
                "openheim_actor_mailbox_depth", "Messages queued in actor mailboxes", labels=["ns"]
            ),
            "live": GaugeMetricFamily(
                "openheim_actors_live", "Live (not passivated) actors", labels=["ns"]
            ),
            "passivated": CounterMetricFamily(
                "openheim_actors_passivated", "Actors passivated to the store", labels=["ns"]
            ),
            "dropped": CounterMetricFamily(
                "openheim_actor_messages_dropped", "Actor messages dropped", labels=["ns"]
            ),
            "failures": CounterMetricFamily(
                "openheim_actor_failures", "Actor handler failures", labels=["ns"]
            ),
        }
        totals: dict[str, dict[str, int]] = {}
        for rt in list(self.runtimes):
            try:
                stats = rt.stats()
            except Exception:  # pragma: no cover - a runtime being torn down
                continue
            ns = str(getattr(rt, "_namespace", ""))
            per = totals.setdefault(ns, {})
            for key in families:
                per[key] = per.get(key, 0) + int(stats.get(key, 0))
        for ns, per in totals.items():
            for key, family in families.items():
                family.add_metric([ns], per.get(key, 0))
        yield from families.values()


active: Metrics | None = None  # the hooks read this attribute directly: no call when off
_lock = threading.Lock()
_runtimes: weakref.WeakSet[Any] = weakref.WeakSet()  # every started Runtime


def current() -> Metrics | None:
    """The metrics, or None while they are off."""
    return active


def metrics_enabled() -> bool:
    return active is not None


def enable_metrics() -> Metrics:
    """Turn metrics on (idempotent); returns the instruments."""
    global active
    with _lock:
        if active is None:
            active = Metrics()
        return active


def disable_metrics() -> None:
    """Turn metrics off and forget their values (tests)."""
    global active
    with _lock:
        active = None


def render_metrics() -> bytes:
    """The metrics in the Prometheus text format (empty while off)."""
    m = active
    if m is None:
        return b""
    from prometheus_client import generate_latest

    out: bytes = generate_latest(m.registry)
    return out


class MetricsServer:
    """A running metrics endpoint (:func:`serve_metrics`); ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (``port=0``: any free one).

    Turns metrics on. For processes without the HTTP server: ``openheim
    worker --metrics-port``.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        from openheim.errors import ConfigError

        raise ConfigError(f"metrics port must be an integer from 0 to 65535, got {port!r}")
    m = enable_metrics()
    from prometheus_client.exposition import start_http_server

    try:
        started = start_http_server(port, addr, registry=m.registry)
    except OSError as exc:
        from openheim.errors import ConfigError

        raise ConfigError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}; "
            "choose another --metrics-port"
        ) from exc
    if not isinstance(started, tuple):  # pragma: no cover - prometheus-client < 0.17
        raise ConfigError("serve_metrics needs prometheus-client >= 0.17")
    server, thread = started
    return MetricsServer(server, thread)


def watch_runtime(runtime: Any) -> None:
    """Report ``runtime.stats()`` (mailbox depth, live and passivated actors) when scraped."""
    _runtimes.add(runtime)


def record_queue(queue: str, stats: Any) -> None:
    """Set the gauges of batch queue ``queue`` from its ``QueueStats`` (the worker calls this)."""
    m = active
    if m is None:
        return
    m.queue_depth.labels(queue).set(stats.depth)
    m.queue_in_flight.labels(queue).set(stats.in_flight)
    m.queue_dead.labels(queue).set(stats.dead_letters)
    m.queue_redeliveries.labels(queue).set(stats.redeliveries)


def record_checkpoint(nbytes: int, seconds: float, kind: str = "agent") -> None:
    """One checkpoint record of ``nbytes`` written in ``seconds`` (``kind``: agent, workflow)."""
    m = active
    if m is None:
        return
    m.checkpoint_bytes.labels(kind).observe(nbytes)
    m.checkpoint_seconds.labels(kind).observe(seconds)
