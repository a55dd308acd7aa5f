"""Persistent task queues for batch mode: ``redis://`` and ``nats://`` (see ``_base``).

Backends are imported only when a URL asks for them.
"""

from __future__ import annotations

from openheim.errors import ConfigError
from openheim.workflow.queues._base import DeadLetter, Delivery, QueueStats, Task, TaskQueue

__all__ = ["DeadLetter", "Delivery", "QueueStats", "Task", "TaskQueue", "open_queue"]


def open_queue(
    url: str,
    *,
    name: str = "openheim",
    visibility_timeout: float = 30.0,
    max_deliveries: int = 5,
) -> TaskQueue:
    """The queue at ``url`` (``redis://host:6379/0`` or ``nats://host:4222``).

    ``name`` keeps several queues apart on one server; a task not acked or
    extended within ``visibility_timeout`` seconds is handed to another
    worker; after ``max_deliveries`` deliveries it becomes a dead letter.
    Connections open on first use.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a queue URL is a string, got {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        try:
            from openheim.workflow.queues.redis import RedisQueue
        except ImportError as exc:
            raise ConfigError(
                f"a redis:// queue needs the 'redis' extra ({exc}); "
                "install it with `pip install 'openheim[redis]'`"
            ) from None
        return RedisQueue(
            url, name=name, visibility_timeout=visibility_timeout, max_deliveries=max_deliveries
        )
    if scheme in ("nats", "tls"):
        try:
            from openheim.workflow.queues.nats import NatsQueue
        except ImportError as exc:
            raise ConfigError(
                f"a nats:// queue needs the 'nats' extra ({exc}); "
                "install it with `pip install 'openheim[nats]'`"
            ) from None
        return NatsQueue(
            url, name=name, visibility_timeout=visibility_timeout, max_deliveries=max_deliveries
        )
    raise ConfigError(
        f"unknown queue URL {url!r}: batch mode runs on redis://host:6379/0 or nats://host:4222"
    )
