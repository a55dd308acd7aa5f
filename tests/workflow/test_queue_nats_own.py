"""A NATS worker's own consumer, on the NATS JetStream on localhost.

The fused backend's settle puts a run's next tasks on the settling worker's own
subject (``ohq.<q>.own.<worker>``, its durable consumer ``own_<worker>``): the
worker takes them before the shared ones, as its views of those runs are
current. These tests take that apart: own tasks first, an idle worker taking
another's untaken ones, a silent worker's tasks (untaken, and held past AckWait)
taken over, a stopping worker giving its own back, a consumer the server
deleted made again, and a queue from before the own subjects upgraded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
import nats
import nats.js.errors
import pytest
from batchhelpers import NATS_URL
from nats.js import api

from openheim.workflow._backends import _Finish
from openheim.workflow._batch import Batch
from openheim.workflow._nats_fused import NatsBackend
from openheim.workflow.queues import Delivery, Task
from openheim.workflow.queues.nats import DURABLE, NatsQueue, Pulled, own_token

pytestmark = pytest.mark.nats


class Env:
    def __init__(self) -> None:
        self.name = f"o{uuid.uuid4().hex[:10]}"
        self.queues: list[NatsQueue] = []
        self.batches: list[Batch] = []
        self.backends: list[NatsBackend] = []

    def queue(self, **kw: float) -> NatsQueue:
        """A worker's queue object, with its own connection (another process, as it were)."""
        q = NatsQueue(NATS_URL, name=self.name, visibility_timeout=1.0, **kw)  # type: ignore[arg-type]
        self.queues.append(q)
        return q

    def backend(self, consumer: str) -> NatsBackend:
        b = Batch(NATS_URL, queue_name=self.name, visibility_timeout=1.0)
        self.batches.append(b)
        backend = NatsBackend(b)
        backend.consumer = consumer
        self.backends.append(backend)
        return backend

    def task(self, run: str, name: str) -> Task:
        return Task(workflow="w", run_id=run, task=name, namespace=self.name)

    async def close(self) -> None:
        for backend in self.backends:
            await backend.aclose()
        for b in self.batches:
            await b.aclose()
        q = NatsQueue(NATS_URL, name=self.name)
        try:
            await q.purge()
        finally:
            await q.aclose()
            for q in self.queues:
                await q.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.close()


def consumer_of(d: Delivery) -> str:
    """The consumer a delivery came from (its ack subject names it)."""
    assert isinstance(d.handle, Pulled)
    return d.handle.reply.split(".")[3]


async def put_own(q: NatsQueue, consumer: str, tasks: list[Task]) -> None:
    """As a worker's settle does: tasks on its own subject, then told to its queue."""
    js = await q._js()
    for t in tasks:
        await js.publish(q.own_subject(consumer), msgspec.json.encode(t))
    q.note_own(consumer, len(tasks))


async def take_until(q: NatsQueue, consumer: str, n: int, deadline: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    end = time.monotonic() + deadline
    while len(got) < n and time.monotonic() < end:
        got += await q.take(consumer, n - len(got), timeout=0.2)
    return got


async def own_count(q: NatsQueue, consumer: str) -> int:
    js = await q._js()
    info = await js.stream_info(q.stream, subjects_filter=q.own_subject(consumer))
    return int((info.state.subjects or {}).get(q.own_subject(consumer), 0))


def test_a_worker_name_becomes_a_subject_token() -> None:
    assert own_token("w1") == "w1"
    dotted = own_token("host.example-1")
    assert "." not in dotted
    assert dotted.startswith("host_example-1_")
    assert dotted != own_token("host_example-1")  # (still one worker's alone)
    assert own_token("a b*c>") != own_token("a_b_c_")


async def test_a_settle_puts_the_next_tasks_on_the_worker_s_own_subject_and_they_come_first(
    env: Env,
) -> None:
    w = env.backend("w1")
    q = w.q
    await q.put([env.task("r1", "0:a")])
    (d0,) = await take_until(q, "w1", 1)
    assert consumer_of(d0) == DURABLE
    await q.put([env.task("other", "0:a")])  # older than 1:b, on the shared subject
    await w.finish(_Finish(tasks=[env.task("r1", "1:b")], acks=[d0], ends=[]))
    assert await own_count(q, "w1") == 1
    assert (await q.stats()).depth == 2  # the shared task and w1's own
    (d1,) = await q.take("w1", 1, timeout=0.5)
    assert (d1.task.task, consumer_of(d1), d1.deliveries) == ("1:b", "own_w1", 1)
    await q.ack(d1)
    (d2,) = await q.take("w1", 1, timeout=0.5)
    assert (d2.task.run_id, consumer_of(d2)) == ("other", DURABLE)
    await q.ack(d2)
    assert await settled(q)
    assert (await q.stats()).redeliveries == 0


async def test_a_waiting_take_wakes_for_a_task_its_own_worker_puts(env: Env) -> None:
    w = env.backend("w1")
    q = w.q
    assert await q.take("w1", 1, timeout=0.1) == []  # (its own consumer is made)
    waiting = asyncio.ensure_future(q.take("w1", 1, timeout=30.0))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await w.finish(_Finish(tasks=[env.task("r", "1:b")], acks=[], ends=[]))
    got = await asyncio.wait_for(waiting, 5.0)
    if not got:  # (it woke; the task comes with the next take)
        got = await q.take("w1", 1, timeout=0.5)
    assert [(d.task.task, consumer_of(d)) for d in got] == [("1:b", "own_w1")]


async def test_an_idle_worker_takes_another_s_untaken_own_tasks(env: Env) -> None:
    w1, w2 = env.queue(), env.queue()
    await w1.take("w1", 1, timeout=0.1)
    await put_own(w1, "w1", [env.task("r", "1:b")])
    (got,) = await take_until(w2, "w2", 1)  # nothing shared: w2 is idle
    assert (got.task.task, consumer_of(got), got.deliveries) == ("1:b", "own_w1", 1)
    await w2.ack(got)
    assert await settled(w1)
    assert await own_count(w1, "w1") == 0


async def settled(q: NatsQueue) -> bool:
    for _ in range(50):
        stats = await q.stats()
        if (stats.depth, stats.in_flight) == (0, 0):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_an_idle_worker_takes_half_of_a_busy_one_s_untaken_tasks(env: Env) -> None:
    w1, w2 = env.queue(), env.queue()
    await w1.take("w1", 1, timeout=0.1)
    await put_own(w1, "w1", [env.task(f"r{i}", "1:b") for i in range(6)])
    got = await w2.take("w2", 10, timeout=0.2)  # idle: its first look
    assert len(got) == 3  # half of them; w1 keeps the rest, whose views it holds
    assert {consumer_of(d) for d in got} == {"own_w1"}
    assert await own_count(w1, "w1") == 6  # (3 taken, not yet acked)
    mine = await w1.take("w1", 10, timeout=0.5)
    assert sorted(d.task.run_id for d in mine + got) == sorted(f"r{i}" for i in range(6))


async def test_a_silent_worker_s_held_and_untaken_tasks_are_taken_over(env: Env) -> None:
    dead, live = env.queue(), env.queue()
    live.gone_after = 1.0
    await dead.take("dead", 1, timeout=0.1)
    await put_own(dead, "dead", [env.task("r1", "1:b"), env.task("r2", "1:b")])
    (held,) = await dead.take("dead", 1, timeout=0.5)  # then it dies holding it
    assert consumer_of(held) == "own_dead"
    # The live worker is kept busy with shared tasks the while, so only its look for
    # silent workers finds the dead one's: the untaken task, and the held one once its
    # AckWait ran out (a second delivery).
    stolen: list[Delivery] = []
    end = time.monotonic() + 20
    while len(stolen) < 2 and time.monotonic() < end:
        await live.put([env.task(f"s{uuid.uuid4().hex[:6]}", "0:a")])
        for d in await live.take("live", 5, timeout=0.2):
            if consumer_of(d) == "own_dead":
                stolen.append(d)
            await live.ack(d)
    assert sorted((d.task.run_id, d.deliveries) for d in stolen) == [
        ("r1", 2) if held.task.run_id == "r1" else ("r1", 1),
        ("r2", 2) if held.task.run_id == "r2" else ("r2", 1),
    ]
    stats = await live.stats()
    assert stats.redeliveries >= 1  # counted though it came from another worker's consumer
    js = await live._js()
    count = await js.get_last_msg(live.dead_stream, live.redelivered_subject)
    assert await live.retry_dead_letter(str(count.seq)) is False  # a count, no dead letter
    assert stats.dead_letters == 0


async def test_a_stopping_worker_gives_its_own_tasks_back(env: Env) -> None:
    w1, w2 = env.queue(), env.queue()
    await w1.take("w1", 1, timeout=0.1)
    await put_own(w1, "w1", [env.task("r1", "1:b"), env.task("r2", "1:b")])
    assert await w1.leave("w1") == 2
    js = await w1._js()
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.consumer_info(w1.stream, "own_w1")  # gone with its worker
    got = await take_until(w2, "w2", 2)
    assert sorted((d.task.run_id, consumer_of(d), d.deliveries) for d in got) == [
        ("r1", DURABLE, 1),
        ("r2", DURABLE, 1),
    ]


async def test_tasks_whose_consumer_the_server_deleted_are_taken(env: Env) -> None:
    w1, w2 = env.queue(), env.queue()
    w2.gone_after = 1.0
    await w1.take("w1", 1, timeout=0.1)
    await put_own(w1, "w1", [env.task("r1", "1:b")])
    js = await w1._js()
    await js.delete_consumer(w1.stream, "own_w1")  # (its inactive threshold ran out)
    (got,) = await take_until(w2, "w2", 1)
    assert (got.task.run_id, consumer_of(got)) == ("r1", "own_w1")  # made again


async def test_a_queue_from_before_the_own_subjects_gets_them() -> None:
    name = f"o{uuid.uuid4().hex[:10]}"
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    q = NatsQueue(NATS_URL, name=name, visibility_timeout=1.0)
    try:
        await js.add_stream(
            api.StreamConfig(
                name=q.stream,
                subjects=[q.subject],
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=5.0,
            )
        )
        await js.add_stream(api.StreamConfig(name=q.dead_stream, subjects=[q.dead_subject]))
        await q.put([Task(workflow="w", run_id="r", task="0:a")])
        (d,) = await take_until(q, "w1", 1)
        await q.ack(d)
        info = await js.stream_info(q.stream)
        assert info.config.subjects == [q.subject, q.own_prefix + "*"]
        assert info.config.duplicate_window == 5.0  # the rest kept as it was
        dead = await js.stream_info(q.dead_stream)
        assert dead.config.subjects == [q.dead_subject, q.redelivered_subject]
    finally:
        await q.purge()
        await q.aclose()
        await nc.close()


async def test_stats_count_the_tasks_of_every_worker_past_a_page_of_consumers(env: Env) -> None:
    q = env.queue()
    js = await q._js()
    n = 260  # (the server lists 256 consumers a page)
    for i in range(n):
        await js.add_consumer(
            q.stream,
            api.ConsumerConfig(
                durable_name=f"own_x{i}",
                filter_subject=q.own_prefix + f"x{i}",
                ack_policy=api.AckPolicy.EXPLICIT,
            ),
        )
        await js.publish(q.own_prefix + f"x{i}", msgspec.json.encode(env.task(f"r{i}", "1:b")))
    assert (await q.stats()).depth == n


async def test_a_worker_whose_own_consumer_was_deleted_makes_it_again(env: Env) -> None:
    w1 = env.queue()
    await w1.take("w1", 1, timeout=0.1)
    js = await w1._js()
    await js.delete_consumer(w1.stream, "own_w1")
    assert await w1.leave("w1") == 0  # nothing to give back, and no error
    await put_own(w1, "w1", [env.task("r1", "1:b")])
    (got,) = await take_until(w1, "w1", 1)
    assert (got.task.run_id, consumer_of(got), got.deliveries) == ("r1", "own_w1", 1)
