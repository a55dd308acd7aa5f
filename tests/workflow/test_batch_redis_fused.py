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
from batchhelpers import REDIS_URL, close_batches

from openheim.errors import ConfigError
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

    def backend(self, consumer: str | None = None) -> RedisBackend:
        """A worker's backend, with its own connection (another process, as it were);
        with a ``consumer``, that worker's (a chain's next tasks go on its own stream)."""
        b = Batch(REDIS_URL, queue_name=self.name, visibility_timeout=0.2)
        self.batches.append(b)
        backend = _fused(b)
        assert isinstance(backend, RedisBackend)
        backend.consumer = consumer
        return backend

    async def close(self) -> None:
        await close_batches(self.batches, self.name)


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
    (d0,) = await q.take(backend.consumer or "w1", 1, timeout=0.5)
    assert (d0.once, backend.first(d0)) == (False, False)  # put by a submit, not a commit
    c = _Claim(env.name, run, "0:a", 1, "w1", first=backend.first(d0))
    ((token, committed, _),) = await backend.claim_many([c])
    assert (token, committed) == (1, None)
    settle = _Finish(tasks=[task(env, run, "1:b")], acks=[d0], ends=[])
    ((ok, settled, _),) = await backend.commit_many(
        [_Commit(env.name, run, "0:a", token, b"a", 1, settle)]
    )
    assert (ok, settled) == (True, True)
    (d1,) = await q.take(backend.consumer or "w1", 1, timeout=0.5)
    assert d1.task.task == "1:b"
    return d1


async def settle_next(
    env: Env, backend: RedisBackend, run: str, acks: list[Delivery] | None = None
) -> None:
    """Start ``run`` and commit its 0:a (claimed), settling its successor 1:b."""
    assert await backend.batch.scoped(env.name).append("wf/" + run, b"s") == 1
    ((token, _, _),) = await backend.claim_many(
        [_Claim(env.name, run, "0:a", 1, backend.consumer or "w1")]
    )
    settle = _Finish(tasks=[task(env, run, "1:b")], acks=acks or [], ends=[])
    ((ok, settled, _),) = await backend.commit_many(
        [_Commit(env.name, run, "0:a", token, b"a", 1, settle)]
    )
    assert (ok, settled) == (True, True)


async def own_entries(q: RedisQueue, consumer: str) -> int:
    n: int = await q.client.xlen(q.own(consumer))
    return n


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


async def test_a_chain_s_next_task_goes_on_its_worker_s_own_stream_and_comes_first(
    env: Env,
) -> None:
    """The worker that committed a step takes the run's next one first (its view of
    the run is current), before older tasks of the shared stream."""
    w = env.backend("w1")
    q = w.q
    run = "own1"
    await q.put([task(env, run, "0:a")])
    (d0,) = await q.take("w1", 1, timeout=0.5)
    await q.put([task(env, "other", "0:a")])  # older than 1:b, on the shared stream
    await settle_next(env, w, run, [d0])
    assert await own_entries(q, "w1") == 1
    assert (await q.stats()).depth == 2  # the shared stream's task and w1's own
    (d1,) = await q.take("w1", 1, timeout=0.5)
    assert (d1.task.task, d1.once, d1.id.endswith("@w1")) == ("1:b", True, True)
    # Its commit acks it on the own stream, which is left empty.
    ((ok, settled, _),) = await w.commit_many(
        [_Commit(env.name, run, "1:b", 0, b"b", 2, _Finish(tasks=[], acks=[d1], ends=[]))]
    )
    assert (ok, settled) == (True, True)
    assert await own_entries(q, "w1") == 0
    (d2,) = await q.take("w1", 1, timeout=0.5)
    assert (d2.task.run_id, d2.id.count("@")) == ("other", 0)
    await q.ack(d2)
    assert (await q.stats()).depth == 0
    with pytest.raises(ConfigError, match="has no '@'"):
        await q.take("w@2", 1)


async def test_another_worker_takes_what_one_has_not_taken_of_its_own(env: Env) -> None:
    w1 = env.backend("w1")
    q = w1.q
    await settle_next(env, w1, "own2")  # 1:b on w1's own stream, not taken yet
    assert await own_entries(q, "w1") == 1
    # An idle w2 (nothing on the shared stream) takes it, as its first delivery.
    q._last_reclaim["w2"] = float("inf")
    (got,) = await q.take("w2", 5, timeout=0.5)
    assert (got.task.run_id, got.once, got.deliveries) == ("own2", True, 1)
    assert got.id.endswith("@w1")  # still w1's stream's entry: acked or given back there
    await q.release(got)  # given back (a draining worker): on the shared stream now
    assert await own_entries(q, "w1") == 0
    (again,) = await q.take("w2", 5, timeout=0.5)
    assert (again.task.run_id, again.id.count("@"), again.once) == ("own2", 0, False)
    await q.ack(again)
    assert (await q.stats()).depth == 0


async def test_a_stopped_worker_gives_its_own_tasks_back_and_a_gone_one_is_taken_over(
    env: Env,
) -> None:
    w1 = env.backend("w1")
    q = w1.q
    for run in ("g1", "g2"):
        await settle_next(env, w1, run)
    assert await own_entries(q, "w1") == 2
    assert await q.client.zscore(q.workers, "w1") == 0  # listed by its commit
    # w1 takes one (then dies with it) and leaves the other untaken.
    await q._ensure_own("w1")
    q._last_reclaim["w1"] = float("inf")
    (held,) = await q.take("w1", 1, timeout=0.5)
    # Another worker, once w1 is silent long enough, takes the untaken one over and,
    # after the visibility timeout, the one w1 held (a redelivery).
    q.gone_after = 0.05
    await asyncio.sleep(0.3)
    q._last_reclaim.pop("w2", None)
    got = await q.take("w2", 5, timeout=0.1)
    assert sorted((d.task.run_id, d.deliveries) for d in got) == [
        (held.task.run_id, 2),
        ("g2" if held.task.run_id == "g1" else "g1", 1),
    ]
    assert all(d.id.endswith("@w1") for d in got)
    await q.ack_many([d.id for d in got])
    q._last_reclaim.pop("w2", None)
    assert await q.take("w2", 5, timeout=0.1) == []
    # w1's emptied stream and its place among the workers are gone.
    assert (await q.client.exists(q.own("w1")), await q.client.zscore(q.workers, "w1")) == (
        0,
        None,
    )
    # A worker that stops puts its own untaken tasks back on the shared stream.
    w3 = env.backend("w3")
    await settle_next(env, w3, "g3")
    assert await q.leave("w3") == 1
    assert await q.client.exists(q.own("w3")) == 0
    q._last_reclaim["w2"] = float("inf")
    (back,) = await q.take("w2", 5, timeout=0.5)
    assert (back.task.run_id, back.id.count("@"), back.once) == ("g3", 0, True)
    await q.ack(back)


async def test_a_take_never_gives_more_than_asked_when_both_streams_fill_meanwhile(
    env: Env,
) -> None:
    """Tasks arriving on the shared stream and on the worker's own between its take's
    first look and its wait: the wait returns what each stream has, so one task asked
    could bring two; the extra one goes back to the shared stream at once."""
    w1 = env.backend("w1")
    q = w1.q
    await q._ensure_own("w1")
    await settle_next(env, w1, "both")  # on w1's own stream
    await q.put([task(env, "other", "0:a")])  # on the shared stream
    first_look = q._take

    async def came_too_late(**kw: object) -> list[object]:
        return []  # (the first look found nothing: both arrived just after it)

    q._take = came_too_late  # type: ignore[method-assign]
    q._last_reclaim["w1"] = float("inf")
    got = await q.take("w1", 1, timeout=0.5)
    q._take = first_look  # type: ignore[method-assign]
    assert [(d.task.run_id, d.id.endswith("@w1")) for d in got] == [("both", True)]
    (back,) = await q.take("w2", 5, timeout=0.5)  # the other one, given back as new
    assert (back.task.run_id, back.deliveries) == ("other", 1)
    await q.ack_many([got[0].id, back.id])
    assert (await q.stats()).depth == 0


async def test_a_take_waiting_on_an_own_stream_that_is_dropped_goes_on(env: Env) -> None:
    """A worker silent too long (a long pause) has its emptied own stream dropped by the
    others while its take waits on it: the take does not fail, and the stream with its
    group is there again for the worker's next tasks."""
    w1 = env.backend("w1")
    q = w1.q
    q._last_reclaim["w1"] = float("inf")
    waiting = asyncio.ensure_future(q.take("w1", 4, timeout=1.0))
    await asyncio.sleep(0.3)
    assert await q.client.delete(q.own("w1")) == 1  # (what a gone worker's stream gets)
    assert await waiting == []
    await settle_next(env, w1, "back")
    (d,) = await q.take("w1", 4, timeout=0.5)
    assert (d.task.run_id, d.id.endswith("@w1")) == ("back", True)
    await q.ack(d)


async def test_whether_a_worker_is_gone_is_judged_by_the_server_s_clock(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker on a host whose clock is an hour behind is not taken for gone: when it
    last took is the Redis server's time, not its own."""
    import time as real

    from openheim.workflow.queues import redis as queue_module

    class HourBehind:
        monotonic = staticmethod(real.monotonic)

        @staticmethod
        def time() -> float:
            return real.time() - 3600

    w1 = env.backend("w1")
    q = w1.q
    await settle_next(env, w1, "clock1")
    await settle_next(env, w1, "clock2")  # two of w1's own, not taken yet
    monkeypatch.setattr(queue_module, "time", HourBehind)
    q._last_reclaim["w1"] = float("inf")
    (mine,) = await q.take("w1", 1, timeout=0.5)  # w1 takes one: it is alive
    monkeypatch.undo()
    # w2 reclaims (every stream, and the own streams of workers silent for 10 s) and
    # takes: only what w1 has not taken, as work an idle worker takes over; w1's own
    # stream stays, with w1 among the workers.
    q.gone_after = 10.0
    q._last_reclaim.pop("w2", None)
    (other,) = await q.take("w2", 5, timeout=0.1)
    assert {mine.task.run_id, other.task.run_id} == {"clock1", "clock2"}
    assert other.once  # taken over by an idle worker (a gone one's would count as claimed)
    assert await q.client.zscore(q.workers, "w1") is not None
    assert await q.client.exists(q.own("w1")) == 1
    await q.ack_many([mine.id, other.id])
