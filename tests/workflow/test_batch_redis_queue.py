"""The Redis Streams queue: de-duplication, reclaiming, heartbeats, dead letters, restarts."""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from batchflows import Doc
from batchhelpers import REDIS_URL, private_redis

from openheim.errors import ConfigError, StorageError
from openheim.workflow import Worker, Workflow
from openheim.workflow.queues import Task, TaskQueue, open_queue
from openheim.workflow.queues.redis import RedisQueue

pytestmark = pytest.mark.redis


@pytest.fixture
async def q() -> AsyncIterator[RedisQueue]:
    queue = open_queue(
        REDIS_URL, name=f"t{uuid.uuid4().hex[:10]}", visibility_timeout=0.3, max_deliveries=2
    )
    assert isinstance(queue, RedisQueue)
    assert isinstance(queue, TaskQueue)
    try:
        yield queue
    finally:
        await queue.purge()
        await queue.aclose()


def _task(n: int, **kw: str) -> Task:
    return Task(workflow="wf", run_id=f"r{n}", task="0:a", **kw)


async def test_put_deduplicates_and_take_delivers_once(q: RedisQueue) -> None:
    assert await q.put([_task(1), _task(2), _task(1)]) == 2
    assert await q.put([_task(2)]) == 0  # put before: dropped
    assert await q.put([_task(2, dedup="r2/0:a/again")]) == 1
    got = await q.take("c1", 10, timeout=0.1)
    assert [d.task.run_id for d in got] == ["r1", "r2", "r2"]
    assert all(d.deliveries == 1 for d in got)
    assert await q.take("c2", 10, timeout=0.05) == []
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (0, 3, 0)
    for d in got:
        await q.ack(d)
    stats = await q.stats()
    assert (stats.depth, stats.in_flight) == (0, 0)


async def test_an_unacked_task_is_reclaimed_then_dead_lettered(q: RedisQueue) -> None:
    tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    await q.put([_task(1, traceparent=tp)])
    (first,) = await q.take("dead-worker", 1, timeout=0.1)
    await asyncio.sleep(0.4)  # past the visibility timeout
    q._last_reclaim.clear()
    (again,) = await q.take("c2", 1, timeout=0.1)
    assert again.id == first.id
    assert again.deliveries == 2
    assert again.task.traceparent == tp
    assert (await q.stats()).redeliveries == 1
    await asyncio.sleep(0.4)
    q._last_reclaim.clear()
    assert await q.take("c3", 1, timeout=0.05) == []  # third delivery > max_deliveries
    (dead,) = await q.dead_letters()
    assert dead.task.run_id == "r1"
    assert dead.deliveries == 3
    assert "delivered 3 times" in dead.reason
    assert (await q.stats()).dead_letters == 1
    assert await q.retry_dead_letter(dead.id)
    assert not await q.retry_dead_letter(dead.id)
    assert await q.dead_letters() == []
    (back,) = await q.take("c4", 1, timeout=0.1)
    assert (back.task.run_id, back.deliveries) == ("r1", 1)


async def test_extend_keeps_a_claim_and_only_for_its_owner(q: RedisQueue) -> None:
    await q.put([_task(1)])
    (d,) = await q.take("c1", 1, timeout=0.1)
    for _ in range(4):
        await asyncio.sleep(0.15)
        await q.extend(d)
    q._last_reclaim.clear()
    assert await q.take("c2", 1, timeout=0.05) == []  # heartbeats kept it
    await asyncio.sleep(0.4)
    q._last_reclaim.clear()
    (taken,) = await q.take("c2", 1, timeout=0.1)
    assert await q.extend_many([d]) == 0  # c1 no longer owns it: no steal-back
    assert taken.id == d.id


async def test_release_and_dead_letter_by_a_worker(q: RedisQueue) -> None:
    await q.put([_task(1), _task(2)])
    a, b = await q.take("c1", 2, timeout=0.1)
    await q.release(a)
    (again,) = await q.take("c2", 1, timeout=0.1)
    assert again.task == a.task
    await q.dead_letter(b, "no such workflow")
    assert [(x.task.run_id, x.reason) for x in await q.dead_letters()] == [
        ("r2", "no such workflow")
    ]


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="queue URL"):
        open_queue("kafka://x")
    with pytest.raises(ConfigError, match="visibility_timeout"):
        RedisQueue(REDIS_URL, visibility_timeout=0)
    with pytest.raises(ConfigError, match="max_deliveries"):
        RedisQueue(REDIS_URL, max_deliveries=0)


async def test_entries_survive_a_restart_and_the_client_reconnects(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        queue = RedisQueue(server.url, name="restart", visibility_timeout=0.3)
        try:
            await queue.put([_task(1), _task(2)])
            (d,) = await queue.take("c1", 1, timeout=0.1)
            server.stop()
            server.start()
            await queue.wait_until_up(10)
            got = await queue.take("c1", 5, timeout=0.2)
            assert [x.task.run_id for x in got] == ["r2"]  # the one never delivered
            await queue.ack(got[0])
            await asyncio.sleep(0.4)
            queue._last_reclaim.clear()
            (reclaimed,) = await queue.take("c2", 5, timeout=0.1)  # the pending one, kept
            assert reclaimed.id == d.id
        finally:
            await queue.aclose()


async def test_a_stopped_worker_ends_its_blocking_read_and_leaves_no_socket_open() -> None:
    """stop() while the worker waits in XREADGROUP BLOCK: the read ends by itself (short
    blocks, the stop flag checked between them), run() returns, and after aclose() no
    connection of the client is left open for the garbage collector to find."""
    wf = Workflow("b-idle", state=Doc)
    wf.step(lambda s: None, name="a")
    name = f"t{uuid.uuid4().hex[:10]}"
    w = Worker([wf], REDIS_URL, queue_name=name)
    run = asyncio.ensure_future(w.run(drain_timeout=1))
    queue = w.queue
    assert isinstance(queue, RedisQueue)
    pool = queue.client.connection_pool
    for _ in range(100):  # until the worker is inside a blocking read
        if pool._in_use_connections:
            break
        await asyncio.sleep(0.01)
    assert pool._in_use_connections
    w.stop()
    stats = await run  # not cancelled: it ended on its own
    assert not run.cancelled()
    assert stats.taken == 0
    await queue.purge()
    await w.aclose()
    await wf.aclose()
    assert not any(c.is_connected for c in pool._available_connections)
    assert not pool._in_use_connections
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [c for c in caught if issubclass(c.category, ResourceWarning)]
    with pytest.raises(StorageError, match="was closed"):
        await queue.take("c1", 1, timeout=0.1)


async def test_a_worker_takes_tasks_as_many_at_a_time_as_asked() -> None:
    wf = Workflow("b-take", state=Doc)
    wf.step(lambda s: None, name="a")
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError, match="take must be an int >= 1"):
            Worker([wf], REDIS_URL, queue_name="never-used", take=bad)  # type: ignore[arg-type]
    name = f"t{uuid.uuid4().hex[:10]}"
    w = Worker([wf], REDIS_URL, queue_name=name, concurrency=64, take=3)
    sizes: list[int] = []
    queue = w.queue
    take = queue.take

    async def counted(consumer: str, count: int = 1, *, timeout: float = 1.0) -> list[Task]:
        sizes.append(count)
        return await take(consumer, count, timeout=timeout)  # type: ignore[return-value]

    queue.take = counted  # type: ignore[method-assign]
    try:
        handles = [
            await wf.submit(Doc(text=str(i)), queue=REDIS_URL, queue_name=name) for i in range(10)
        ]
        run = asyncio.ensure_future(w.run(drain_timeout=1))
        for h in handles:
            assert (await h.result(timeout=30)).status == "done"
        w.stop()
        await run
        assert sizes
        assert max(sizes) == 3  # never more than asked, though 64 could run
        assert w.stats.committed == 10
    finally:
        await w.queue.purge()
        await w.aclose()
        await wf.aclose()


async def test_a_worker_with_little_room_for_views_reads_dropped_ones_back() -> None:
    """Views beyond the worker's cache are dropped, least recently used first, and
    read back from the run's log when the run comes round again: the runs end the
    same, and the cache never holds more than its room (but always the newest view)."""
    wf = Workflow("b-views", state=Doc)
    for i in range(4):
        wf.step(lambda s, i=i: {"text": s.text + str(i)}, name=f"s{i}")
        if i:
            wf.edge(f"s{i - 1}", f"s{i}")
    for bad in ({"cache_mb": 0}, {"cache_views": 0}):
        with pytest.raises(ConfigError, match="cache_mb must be positive"):
            Worker([wf], REDIS_URL, queue_name="never-used", **bad)  # type: ignore[arg-type]
    name = f"t{uuid.uuid4().hex[:10]}"
    # About 1 KB: room for a few of these runs' views at a time, of the 12 in flight.
    w = Worker([wf], REDIS_URL, queue_name=name, concurrency=4, cache_mb=1 / 1024)
    views = w._views
    most = 0
    put = views.put

    def watched(*a: object, **kw: object) -> None:
        nonlocal most
        put(*a, **kw)  # type: ignore[arg-type]
        assert views.size <= views.limit or len(views) == 1
        most = max(most, len(views))

    views.put = watched  # type: ignore[method-assign]
    try:
        handles = [
            await wf.submit(Doc(text=f"r{i}-"), queue=REDIS_URL, queue_name=name) for i in range(12)
        ]
        run = asyncio.ensure_future(w.run(drain_timeout=1))
        for i, h in enumerate(handles):
            result = await h.result(timeout=30)
            assert (result.status, result.state.text) == ("done", f"r{i}-0123")
        w.stop()
        await run
        assert 1 < most < 12  # some views were kept, not all of them
        assert w.stats.committed == 12 * 4
    finally:
        await w.queue.purge()
        await w.aclose()
        await wf.aclose()


def test_the_view_cache_drops_the_least_recently_used_by_count_and_by_bytes() -> None:
    from openheim.workflow._worker import _Views

    v = _Views(count=3, limit=100)
    a, b, c, d = (object() for _ in range(4))
    v.put(("n", "a"), a, 30, fresh=True)  # type: ignore[arg-type]
    v.put(("n", "b"), b, 30, fresh=True)  # type: ignore[arg-type]
    v.put(("n", "c"), c, 30, fresh=True)  # type: ignore[arg-type]
    assert (len(v), v.size) == (3, 90)
    v.put(("n", "a"), a, 0, fresh=False)  # a used again: b is now the oldest
    v.grew(("n", "a"), 20)  # 110 bytes: over the limit, b goes
    assert (v.get(("n", "b")), v.size) == (None, 80)
    v.put(("n", "d"), d, 10, fresh=True)  # c, a, d: three
    assert [v.get(("n", k)) for k in "cad"] == [c, a, d]
    v.put(("n", "e"), e := object(), 1, fresh=True)  # type: ignore[arg-type]
    assert [v.get(("n", k)) for k in "cade"] == [None, a, d, e]  # over the count: c goes
    assert v.size == 61
    v.put(("n", "a"), a, 5, fresh=True)  # a rebuilt from its log: its size starts again
    assert v.size == 16
    v.pop(("n", "a"))
    v.pop(("n", "gone"))  # (nothing kept: nothing happens)
    assert (len(v), v.size) == (2, 11)
    v.put(("n", "f"), f := object(), 500, fresh=True)  # type: ignore[arg-type]
    assert [v.get(("n", k)) for k in "def"] == [None, None, f]  # the newest stays, too large
    assert v.size == 500
