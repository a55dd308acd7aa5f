"""bench_natsstore on pytest-benchmark: the NATS store and queue against the Redis and
PostgreSQL stores (openheim's own backends; durability differs, see the script).

put / get / append, one at a time and 64 at once, on NATS against Redis and
against PostgreSQL with ``synchronous_commit=off`` (the like-for-like for
JetStream's acks); take + ack of no-op tasks on the NATS queue against the
Redis queue. The servers are the local ones (skipped when one is down).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from _pb import Pair, params, run_side
from bench_natsstore import NATS_URL, POSTGRES_URL, REDIS_URL, VALUE, WIDTH, _rate

SEP = "&" if "?" in POSTGRES_URL else "?"
PG_ASYNC = f"{POSTGRES_URL}{SEP}options=-c%20synchronous_commit%3Doff"
OPS = {1: 200, WIDTH: 1000}
TASKS = 1000


def _down(url: str) -> str:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return ""
    except OSError:
        return f"{parts.scheme} server at {parts.hostname}:{parts.port} is not reachable"


def _store_side(url: str, op: str, width: int) -> Any:
    async def measure() -> float:
        from openheim.stores import open_store

        store = open_store(url, namespace=f"pb-{uuid.uuid4().hex[:8]}")
        n = OPS[width]
        keys = [f"k{i % WIDTH}" for i in range(n)]
        try:
            for k in set(keys):  # warm up: connections, prepared statements, streams
                await store.put(k, VALUE)
            if op == "put":
                rate = await _rate(n, width, lambda i: store.put(keys[i], VALUE))
            elif op == "get":
                rate = await _rate(n, width, lambda i: store.get(keys[i]))
            else:
                rate = await _rate(n, width, lambda i: store.append(f"log{i % WIDTH}", VALUE))
            for k in await store.list():
                await store.delete(k)
            for log in await store.list_logs():
                await store.delete_log(log)
            return 1.0 / rate
        finally:
            await store.aclose()

    return lambda: asyncio.run(measure())


def _queue_side(url: str) -> Any:
    async def measure() -> float:
        import time

        from openheim.workflow.queues import Task, open_queue

        q = open_queue(url, name=f"pb-{uuid.uuid4().hex[:8]}")
        try:
            tasks = [Task(workflow="wf", run_id="r", task=f"0:n{i}") for i in range(TASKS)]
            for i in range(0, TASKS, 500):
                await q.put(tasks[i : i + 500])
            done = 0
            t0 = time.perf_counter()
            while done < TASKS:
                got = await q.take("bench", 100, timeout=1.0)
                await q.ack_many([d.id for d in got])
                done += len(got)
            elapsed = time.perf_counter() - t0
            await q.purge()
            return elapsed / TASKS
        finally:
            await q.aclose()

    return lambda: asyncio.run(measure())


NATS_DOWN = _down(NATS_URL)
PAIRS: list[Pair] = []
for op in ("put", "get", "append"):
    for width in (1, WIDTH):
        how = "one at a time" if width == 1 else f"{width} at once"
        for base, base_url, base_name in (
            ("redis", REDIS_URL, "Redis store (memory only)"),
            ("pg_async", PG_ASYNC, "PostgreSQL store, synchronous_commit=off"),
        ):
            PAIRS.append(
                Pair(
                    f"natsstore_{op}_{width}_vs_{base}",
                    f"store {op}, {how}",
                    _store_side(NATS_URL, op, width),
                    _store_side(base_url, op, width),
                    base_name,
                    unit="op",
                    rounds=3,
                    skip_base=_down(base_url),
                )
            )
PAIRS.append(
    Pair(
        "natsstore_queue_take_ack",
        "queue take + ack_many, no-op tasks",
        _queue_side(NATS_URL.partition("?")[0]),
        _queue_side(REDIS_URL),
        "Redis queue",
        unit="task",
        rounds=3,
        skip_base=_down(REDIS_URL),
    )
)


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_natsstore(benchmark: Any, pair: Pair, side: str) -> None:
    if NATS_DOWN:
        pytest.skip(NATS_DOWN)
    run_side(benchmark, pair, side)
