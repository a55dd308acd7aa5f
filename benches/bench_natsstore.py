"""The NATS store and queue against Redis and PostgreSQL, in one run, on the local servers.

(a) Store operations per second: ``put`` (blind writes, each key its own
version counter), ``get`` and log ``append``, one at a time (latency-bound)
and 64 at once (64 keys / logs, one connection per store, as one process
uses it). The same operations on the Redis store and the PostgreSQL store,
same keys, same concurrency, same value size (200 bytes).

(b) The task queue: take + ack of no-op tasks (takes of 100, acked with one
``ack_many`` per batch, as ``openheim worker`` does), one consumer, on NATS
against the Redis queue when that module is there.

Durability differs, and the rows say so: the shared Redis keeps everything in
memory only (no AOF, no snapshots); JetStream (2.9) writes each message to
its file store before acking but fsyncs only periodically; PostgreSQL
fsyncs every commit. So PostgreSQL runs twice: as configured, and with
``synchronous_commit=off`` (commits acked before the WAL is flushed), the
like-for-like baseline for JetStream's acks.

Medians of REPEAT runs; ratio = NATS / baseline (higher is better).
Needs nats-server -js on 127.0.0.1:4222, Redis on 6379 and PostgreSQL on 5432.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from _util import Row

NATS_URL = os.environ.get("OPENHEIM_BENCH_NATS_URL", "nats://127.0.0.1:4222?bucket=ohbench")
REDIS_URL = os.environ.get("OPENHEIM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OPENHEIM_BENCH_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)
REPEAT = 5
OPS = 2000  # per measurement
WIDTH = 64  # concurrent operations in the concurrent rows
VALUE = b"v" * 200
TASKS = 5000


async def _rate(n: int, width: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second of ``op(i)`` for i < n, ``width`` at a time."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await op(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return n / (time.perf_counter() - t0)


async def _store_rates(urls: dict[str, str]) -> dict[str, dict[str, float]]:
    """{backend: {"op/width": median ops/s}}; the backends take turns inside each repetition,
    so a noisy moment on the shared machine hits all of them alike."""
    from openheim.stores import open_store

    ns = f"bench-{uuid.uuid4().hex[:8]}"
    stores = {name: open_store(url, namespace=ns) for name, url in urls.items()}
    out: dict[str, dict[str, list[float]]] = {name: {} for name in urls}
    keys = [f"k{i % WIDTH}" for i in range(OPS)]
    logs = [f"log{i % WIDTH}" for i in range(OPS)]
    try:
        for store in stores.values():
            for k in set(keys):  # warm up: connections, prepared statements, streams
                await store.put(k, VALUE)
        for _ in range(REPEAT):
            for width in (1, WIDTH):
                n = OPS if width > 1 else OPS // 4
                for name, store in stores.items():
                    rates = out[name]
                    rates.setdefault(f"put/{width}", []).append(
                        await _rate(n, width, lambda i, s=store: s.put(keys[i], VALUE))
                    )
                    rates.setdefault(f"get/{width}", []).append(
                        await _rate(n, width, lambda i, s=store: s.get(keys[i]))
                    )
                    rates.setdefault(f"append/{width}", []).append(
                        await _rate(n, width, lambda i, s=store: s.append(logs[i], VALUE))
                    )
        for store in stores.values():
            for k in await store.list():
                await store.delete(k)
            for log in await store.list_logs():
                await store.delete_log(log)
    finally:
        for store in stores.values():
            await store.aclose()
    return {
        name: {k: statistics.median(v) for k, v in rates.items()} for name, rates in out.items()
    }


async def _queue_rate(url: str) -> float:
    """take + ack of no-op tasks per second (one consumer, batches of 100)."""
    from openheim.workflow.queues import Task, open_queue

    q = open_queue(url, name=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        rates = []
        for rep in range(REPEAT):
            tasks = [Task(workflow="wf", run_id=f"r{rep}", task=f"0:n{i}") for i in range(TASKS)]
            for i in range(0, TASKS, 500):
                await q.put(tasks[i : i + 500])
            done = 0
            t0 = time.perf_counter()
            while done < TASKS:
                got = await q.take("bench", 100, timeout=1.0)
                ack_many = getattr(q, "ack_many", None)
                if ack_many is not None:  # both queues have it: one call per batch
                    await ack_many([d.id for d in got])
                else:
                    for d in got:
                        await q.ack(d)
                done += len(got)
            rates.append(TASKS / (time.perf_counter() - t0))
        await q.purge()
        return statistics.median(rates)
    finally:
        await q.aclose()


def _redis_queue_available() -> bool:
    try:
        import openheim.workflow.queues.redis  # noqa: F401
    except ImportError:
        return False
    return True


def run() -> list[Row]:
    sep = "&" if "?" in POSTGRES_URL else "?"
    got = asyncio.run(
        _store_rates(
            {
                "nats": NATS_URL,
                "redis": REDIS_URL,
                "pg": POSTGRES_URL,
                "pg_async": f"{POSTGRES_URL}{sep}options=-c%20synchronous_commit%3Doff",
            }
        )
    )
    nats, redis, pg, pg_async = got["nats"], got["redis"], got["pg"], got["pg_async"]
    rows = []
    for op in ("put", "get", "append"):
        for width in (1, WIDTH):
            key = f"{op}/{width}"
            label = f"store {op}, {'one at a time' if width == 1 else f'{width} at once'}"
            rows.append(Row(label, nats[key], redis[key], "op/s", "Redis store"))
            rows.append(Row(label, nats[key], pg[key], "op/s", "PostgreSQL store"))
            rows.append(
                Row(label, nats[key], pg_async[key], "op/s", "PostgreSQL, synchronous_commit=off")
            )
    nq = asyncio.run(_queue_rate(NATS_URL.partition("?")[0]))
    if _redis_queue_available():
        rq = asyncio.run(_queue_rate(REDIS_URL))
        rows.append(Row("queue take+ack, no-op tasks", nq, rq, "t/s", "Redis queue"))
    else:
        rows.append(Row("queue take+ack, no-op tasks", nq, nq, "t/s", "(no Redis queue here)"))
    return rows


if __name__ == "__main__":
    from _util import print_table

    print_table("NATS store and queue vs Redis and PostgreSQL (ops/s, higher is better)", run())
