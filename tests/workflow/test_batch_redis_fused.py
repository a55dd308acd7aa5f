"""The fused Redis backend of batch workers (``_redis_fused``), on the Redis on localhost.

A chain's next task, put by the commit of its predecessor's result, is marked
put once; its first delivery claims without writing the fencing key. These
tests take that apart: which deliveries count as first, a first delivery
refused once a reclaimed delivery claimed, a first delivery that committed
first seen as committed by the later claim, and the fencing key it leaves
expiring like any other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from batchhelpers import REDIS_URL, drop_namespace

from openheim.workflow._backends import _Claim, _Commit, _Finish, _fused
from openheim.workflow._batch import CLAIM, CLAIM_TTL, Batch
from openheim.workflow._redis_fused import RedisBackend
from openheim.workflow.queues import Delivery, Task
from openheim.workflow.queues.redis import RedisQueue

pytestmark = pytest.mark.redis


class Env:
    def __init__(self) -> None:
        self.name = f"f{uuid.uuid4().hex[:10]}"
        self.batches: list[Batch] = []

    def backend(self) -> RedisBackend:
        """A worker's backend, with its own connection (another process, as it were)."""
        b = Batch(REDIS_URL, queue_name=self.name, visibility_timeout=0.2)
        self.batches.append(b)
        backend = _fused(b)
        assert isinstance(backend, RedisBackend)
        return backend

    async def close(self) -> None:
        if self.batches:
            b = self.batches[0]
            await b.queue.purge()
            await drop_namespace(b.store, self.name)
        for b in self.batches:
            await b.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.close()


def task(env: Env, run: str, name: str) -> Task:
    return Task(workflow="w", run_id=run, task=name, namespace=env.name)


async def chained(env: Env, backend: RedisBackend, run: str) -> Delivery:
    """Start ``run`` (record 1), commit 0:a (record 2) settling its successor 1:b;
    1:b's delivery."""
    q = backend.q
    assert await backend.batch.scoped(env.name).append("wf/" + run, b"s") == 1
    await q.put([task(env, run, "0:a")])
    (d0,) = await q.take("w1", 1, timeout=0.5)
    assert (d0.once, backend.first(d0)) == (False, False)  # put by a submit, not a commit
    c = _Claim(env.name, run, "0:a", 1, "w1", first=backend.first(d0))
    ((token, committed, _),) = await backend.claim_many([c])
    assert (token, committed) == (1, None)
    settle = _Finish(tasks=[task(env, run, "1:b")], acks=[d0], ends=[])
    ((ok, settled, _),) = await backend.commit_many(
        [_Commit(env.name, run, "0:a", token, b"a", 1, settle)]
    )
    assert (ok, settled) == (True, True)
    (d1,) = await q.take("w1", 1, timeout=0.5)
    assert d1.task.task == "1:b"
    return d1


async def fence_of(backend: RedisBackend, env: Env, run: str, name: str) -> dict[bytes, bytes]:
    key = f"{backend.prefix}{env.name}:kv:{CLAIM}{run}/{name}"
    got: dict[bytes, bytes] = await backend.client.hgetall(key)
    return got


async def test_a_chain_s_next_task_is_put_once_and_its_first_delivery_writes_nothing(
    env: Env,
) -> None:
    w = env.backend()
    run = "r1"
    d1 = await chained(env, w, run)
    assert (d1.once, d1.deliveries, w.first(d1)) == (True, 1, True)
    c = _Claim(env.name, run, "1:b", 2, "w1", read=False, first=True)
    assert w.claim_at_once(c) == (0, None, [])  # no round trip at all
    # With the view behind, the claim reads the log and still writes no fencing key.
    ((token, committed, records),) = await w.claim_many(
        [_Claim(env.name, run, "1:b", -1, "w1", first=True)]
    )
    assert (token, committed, [r for _, r in records]) == (0, None, [b"s", b"a"])
    assert await fence_of(w, env, run, "1:b") == {}
    ((ok, settled, records),) = await w.commit_many(
        [_Commit(env.name, run, "1:b", 0, b"b", 2, _Finish(tasks=[], acks=[d1], ends=[]))]
    )
    assert (ok, settled, records) == (True, True, [(3, b"b")])
    # The committed key expires like a claimed one.
    assert await fence_of(w, env, run, "1:b") == {b"v": b"C", b"ver": b"1"}
    key = f"{w.prefix}{env.name}:kv:{CLAIM}{run}/1:b"
    assert 0 < await w.client.pttl(key) <= CLAIM_TTL * 1000
    # The delivery was acked with the commit: nothing is left to take or reclaim.
    w.q._last_reclaim.clear()
    assert await w.q.take("w1", 5, timeout=0.1) == []


async def test_a_reclaimed_or_released_delivery_is_not_first(env: Env) -> None:
    w = env.backend()
    q = w.q
    assert isinstance(q, RedisQueue)
    d1 = await chained(env, w, "r2")
    # Not acked: after the visibility timeout it is reclaimed, as its second delivery.
    q._last_reclaim.clear()
    await asyncio.sleep(0.3)
    (again,) = await q.take("w2", 1, timeout=0.1)
    assert (again.id, again.deliveries) == (d1.id, 2)
    assert not w.first(again)
    # Given back by a draining worker, it is a new entry that is not put once.
    await q.release(again)
    (back,) = await q.take("w3", 1, timeout=0.5)
    assert back.task.task == "1:b"
    assert (back.deliveries, back.once, w.first(back)) == (1, False, False)


async def test_a_first_delivery_is_refused_once_a_reclaimed_delivery_claimed(env: Env) -> None:
    stale = env.backend()
    fresh = env.backend()
    run = "r3"
    await chained(env, stale, run)
    first = _Claim(env.name, run, "1:b", 2, "stale", read=False, first=True)
    t1, _, _ = stale.claim_at_once(first) or (None, None, None)
    assert t1 == 0
    # The reclaimed delivery's claim fences the first one out.
    ((t2, committed, _),) = await fresh.claim_many([_Claim(env.name, run, "1:b", 2, "fresh")])
    assert (t2, committed) == (1, None)
    ((ok, settled, _),) = await stale.commit_many([_Commit(env.name, run, "1:b", 0, b"late", 2)])
    assert (ok, settled) == (False, False)
    ((ok, _, _),) = await fresh.commit_many([_Commit(env.name, run, "1:b", t2, b"won", 2)])
    assert ok
    records = await stale.batch.scoped(env.name).read_log("wf/" + run)
    assert [r for _, r in records] == [b"s", b"a", b"won"]


async def test_a_first_delivery_that_committed_is_seen_committed_by_a_later_claim(
    env: Env,
) -> None:
    w = env.backend()
    other = env.backend()
    run = "r4"
    await chained(env, w, run)
    ((ok, _, _),) = await w.commit_many([_Commit(env.name, run, "1:b", 0, b"first", 2)])
    assert ok
    ((token, committed, _),) = await other.claim_many([_Claim(env.name, run, "1:b", 2, "other")])
    assert (token, committed) == (0, b"")  # committed: its record is in the log already
    # A second commit of the first delivery (a repeat whose reply was lost aside) is refused.
    ((ok, _, _),) = await w.commit_many([_Commit(env.name, run, "1:b", 0, b"twice", 2)])
    assert not ok
    records = await w.batch.scoped(env.name).read_log("wf/" + run)
    assert [r for _, r in records] == [b"s", b"a", b"first"]
