"""One behaviour for every TaskQueue backend (Redis Streams, NATS JetStream), on real servers.

Each test gets queues with a name of its own and purges them afterwards.
Nothing here asserts on timings: a redelivery after the visibility timeout is
polled for with a generous deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from openheim.errors import ConfigError
from openheim.testing.servers import PrivateServer
from openheim.workflow.queues import Delivery, QueueStats, Task, TaskQueue, open_queue

REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"

KINDS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]

MakeQueue = Callable[..., TaskQueue]

DEADLINE = 60.0  # seconds a redelivery may take on a loaded machine


def task(i: int | str, **kw: str) -> Task:
    return Task(workflow="wf", run_id="run-1", task=f"0:node{i}", **kw)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_queue(kind: str) -> AsyncIterator[MakeQueue]:
    """``make_queue(**options)``: a queue with a fresh name on the shared server."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    made: list[TaskQueue] = []

    def make(url: str | None = None, **options: float) -> TaskQueue:
        q = open_queue(url or (REDIS_URL if kind == "redis" else NATS_URL), name=name, **options)  # type: ignore[arg-type]
        made.append(q)
        return q

    try:
        yield make
    finally:
        for i, q in enumerate(made):
            try:
                if i == 0:
                    await q.purge()
            finally:
                await q.aclose()


async def take_n(
    q: TaskQueue, n: int, consumer: str = "c1", *, deadline: float = DEADLINE
) -> list[Delivery]:
    """Take until ``n`` deliveries arrived (or the deadline passed)."""
    out: list[Delivery] = []
    end = time.monotonic() + deadline
    while len(out) < n and time.monotonic() < end:
        out += await q.take(consumer, n - len(out), timeout=0.5)
    return out


async def poll(check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


def zero(stats: QueueStats) -> bool:
    return stats == QueueStats(depth=0, in_flight=0, redeliveries=0, dead_letters=0)


# -- the basics ---------------------------------------------------------------------------


async def test_put_take_ack(make_queue: MakeQueue) -> None:
    q = make_queue()
    assert isinstance(q, TaskQueue)
    tasks = [task(i, traceparent=f"00-{i:032x}-{i:016x}-01") for i in range(3)]
    assert await q.put(tasks) == 3
    assert (await q.stats()).depth == 3
    got = await take_n(q, 3)
    assert sorted(d.task.task for d in got) == ["0:node0", "0:node1", "0:node2"]
    assert {d.task for d in got} == set(tasks)  # every field survives, traceparent too
    assert all(d.deliveries == 1 for d in got)
    assert len({d.id for d in got}) == 3
    stats = await q.stats()
    assert (stats.depth, stats.in_flight) == (0, 3)
    for d in got:
        await q.ack(d)
    assert await poll(lambda: _stats_are(q, depth=0, in_flight=0))
    assert await q.take("c1", 5, timeout=0.3) == []
    assert await q.put([]) == 0


async def _stats_are(q: TaskQueue, **want: int) -> bool:
    stats = await q.stats()
    return all(getattr(stats, k) == v for k, v in want.items())


async def test_put_deduplicates(make_queue: MakeQueue) -> None:
    q = make_queue()
    a, b = task("a"), task("b")
    assert await q.put([a, a, b]) == 2
    assert await q.put([a]) == 0  # the same run/task again: a racing worker's successor
    assert await q.put([task("a", dedup="another-id")]) == 1  # an explicit id decides
    got = await take_n(q, 3)
    assert sorted(d.task.dedup_id() for d in got) == [
        "another-id",
        "run-1/0:nodea",
        "run-1/0:nodeb",
    ]
    assert await q.take("c1", 5, timeout=0.3) == []
    for d in got:
        await q.ack(d)
    assert await q.put([a]) == 0  # still known after it was acked


async def test_bad_arguments(kind: str, make_queue: MakeQueue) -> None:
    with pytest.raises(ConfigError):
        make_queue(visibility_timeout=0)
    with pytest.raises(ConfigError):
        make_queue(max_deliveries=0)
    url = REDIS_URL if kind == "redis" else NATS_URL
    with pytest.raises(ConfigError):
        open_queue(url, name="has space")


# -- claims -------------------------------------------------------------------------------


async def test_unacked_task_is_reclaimed_by_another_consumer(make_queue: MakeQueue) -> None:
    q = make_queue(visibility_timeout=1.0)
    other = make_queue(visibility_timeout=1.0)  # another worker process
    await q.put([task(1)])
    (first,) = await take_n(q, 1, "dead-worker")
    assert first.deliveries == 1
    # The first consumer never acks: after the visibility timeout another one gets it.
    (again,) = await take_n(other, 1, "live-worker")
    assert again.task == first.task
    assert again.deliveries == 2
    assert (await other.stats()).redeliveries >= 1
    await other.ack(again)
    assert await poll(lambda: _stats_are(other, depth=0, in_flight=0))


async def test_extend_keeps_the_claim(make_queue: MakeQueue) -> None:
    vt = 2.0
    q = make_queue(visibility_timeout=vt)
    other = make_queue(visibility_timeout=vt)
    await q.put([task(1)])
    (mine,) = await take_n(q, 1, "busy-worker")
    start = last = time.monotonic()
    stolen: list[Delivery] = []
    longest_gap = 0.0
    # Heartbeat for three visibility timeouts while another worker keeps asking.
    while time.monotonic() - start < 3 * vt:
        await q.extend(mine)
        now = time.monotonic()
        longest_gap, last = max(longest_gap, now - last), now
        stolen += await other.take("thief", 1, timeout=0.2)
    if longest_gap >= vt / 2:
        pytest.skip(f"the machine stalled {longest_gap:.1f} s between heartbeats")
    assert stolen == []
    # Once the heartbeats stop, the claim lapses and the other worker gets the task.
    (taken,) = await take_n(other, 1, "thief")
    assert taken.task == mine.task
    assert taken.deliveries == 2
    await other.ack(taken)


async def test_release_makes_it_available_at_once(make_queue: MakeQueue) -> None:
    q = make_queue(visibility_timeout=300.0)  # a redelivery cannot explain what follows
    other = make_queue(visibility_timeout=300.0)
    await q.put([task(1), task(2)])
    got = await take_n(q, 2, "draining")
    for d in got:
        await q.release(d)
    back = await take_n(other, 2, "fresh", deadline=30.0)
    assert sorted(d.task.task for d in back) == sorted(d.task.task for d in got)
    for d in back:
        await other.ack(d)
    assert await poll(lambda: _stats_are(other, depth=0, in_flight=0))


async def test_batch_heartbeats_and_acks(make_queue: MakeQueue) -> None:
    """``extend_many`` / ``ack_many`` (ids), which ``openheim worker`` uses when a backend has them."""
    q = make_queue()
    await q.put([task(i) for i in range(3)])
    got = await take_n(q, 3)
    extend_many = getattr(q, "extend_many", None)
    ack_many = getattr(q, "ack_many", None)
    if extend_many is None or ack_many is None:
        pytest.skip(f"{type(q).__name__} has no extend_many / ack_many")
    assert await extend_many(got) == 3
    await ack_many([d.id for d in got[:2]])
    assert await extend_many(got) == 1  # only the one still claimed
    await ack_many([got[2].id])
    assert await poll(lambda: _stats_are(q, depth=0, in_flight=0))
    assert await q.take("c1", 3, timeout=0.3) == []


# -- dead letters -------------------------------------------------------------------------


async def test_over_delivered_task_becomes_a_dead_letter(make_queue: MakeQueue) -> None:
    q = make_queue(visibility_timeout=1.0, max_deliveries=2)
    await q.put([task("poison"), task("fine")])
    seen: list[int] = []
    fine = None

    async def dead_yet() -> bool:
        nonlocal fine
        for d in await q.take("c1", 2, timeout=0.3):
            if d.task.task == "0:nodefine":
                fine = d
                await q.ack(d)
            else:
                seen.append(d.deliveries)  # never acked: it crashes its worker
        return (await q.stats()).dead_letters == 1

    assert await poll(dead_yet)
    assert fine is not None
    assert seen == [1, 2]  # handed out max_deliveries times, then moved
    (dead,) = await q.dead_letters()
    assert dead.task == task("poison")
    assert dead.deliveries == 3
    assert "delivered" in dead.reason
    assert dead.at > 0
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (0, 0, 1)
    assert stats.redeliveries >= 1
    # retry puts it back as new: deliveries start again at 1.
    assert await q.retry_dead_letter(dead.id) is True
    assert await q.dead_letters() == []
    assert await q.retry_dead_letter(dead.id) is False
    assert await q.retry_dead_letter("no-such-id") is False
    (back,) = await take_n(q, 1)
    assert back.task == task("poison")
    assert back.deliveries == 1
    await q.ack(back)


async def test_worker_gives_up_on_a_task(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.put([task(1), task(2)])
    got = await take_n(q, 2)
    bad = next(d for d in got if d.task.task == "0:node1")
    await q.dead_letter(bad, "bad input: no such tool")
    await q.ack(next(d for d in got if d is not bad))
    (dead,) = await q.dead_letters()
    assert (dead.task, dead.deliveries, dead.reason) == (bad.task, 1, "bad input: no such tool")
    assert await poll(lambda: _stats_are(q, depth=0, in_flight=0, dead_letters=1))
    assert await q.take("c1", 1, timeout=0.3) == []


async def test_purge(make_queue: MakeQueue) -> None:
    q = make_queue()
    await q.put([task(i) for i in range(4)])
    got = await take_n(q, 2)
    await q.dead_letter(got[0], "gave up")
    await q.purge()
    assert zero(await q.stats())
    assert await q.dead_letters() == []
    assert await q.take("c1", 5, timeout=0.3) == []
    assert await q.put([task(0)]) == 1  # purged tasks are forgotten by de-duplication too
    assert len(await take_n(q, 1)) == 1


async def test_many_tasks_in_batches(make_queue: MakeQueue) -> None:
    q = make_queue()
    tasks = [task(i) for i in range(500)]
    assert await q.put(tasks) == 500
    seen: set[str] = set()

    async def drain() -> bool:
        for d in await q.take("c1", 100, timeout=0.5):
            seen.add(d.task.task)
            await q.ack(d)
        return len(seen) == 500

    assert await poll(drain)
    assert seen == {t.task for t in tasks}
    assert await poll(lambda: _stats_are(q, depth=0, in_flight=0, redeliveries=0))


# -- a server restart ---------------------------------------------------------------------


async def test_survives_a_server_restart(kind: str, tmp_path: Path) -> None:
    server = PrivateServer(kind, tmp_path)
    server.start()
    try:
        await _restart_run(server)
    finally:
        server.stop()


async def _restart_run(server: PrivateServer) -> None:
    q = open_queue(server.url, name="restart", visibility_timeout=2.0)
    try:
        assert await q.put([task(i) for i in range(5)]) == 5
        taken = await take_n(q, 2, "before")  # claimed, never acked: the worker dies too
        assert len(taken) == 2
        server.restart()
        # The same queue object carries on: nothing was lost, the claims come back.
        assert await q.put([task(5)]) == 1
        seen: dict[str, int] = {}

        async def drain() -> bool:
            try:
                got = await q.take("after", 10, timeout=0.5)
            except Exception:  # the client may still be reconnecting
                return False
            for d in got:
                seen[d.task.task] = d.deliveries
                await q.ack(d)
            return len(seen) == 6

        assert await poll(drain)
        assert set(seen) == {f"0:node{i}" for i in range(6)}
        assert sorted(seen[d.task.task] for d in taken) == [2, 2]
        assert await poll(lambda: _stats_are(q, depth=0, in_flight=0))
    finally:
        await q.aclose()
