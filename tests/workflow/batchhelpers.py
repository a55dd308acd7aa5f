"""Helpers of the batch-mode tests: server URLs, cleaning a namespace, a private Redis."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openheim.testing.servers import PrivateServer, private_server

REDIS_URL = os.environ.get("OPENHEIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("OPENHEIM_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def drop_namespace(store: Any, ns: str) -> None:
    """Remove every key and log of namespace ``ns`` of ``store``, and the run-ends log
    of the queue of the same name (in the store's own namespace)."""
    await store.delete_log("wfend/" + ns)
    s = store.namespace(ns)
    for key in await s.list():
        await s.delete(key)
    for log in await s.list_logs():
        await s.delete_log(log)


async def close_batches(batches: list[Any], ns: str) -> None:
    """The end of a test's ``Batch`` objects on one queue and namespace ``ns``: the queue
    purged, the namespace dropped (through the first), then each closed."""
    if batches:
        b = batches[0]
        await b.queue.purge()
        await drop_namespace(b.store, ns)
    for b in batches:
        await b.aclose()


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[PrivateServer]:
    """A redis-server of our own (AOF on, fsync always) on a free port, in ``folder``."""
    with private_server("redis", folder) as server:
        yield server
