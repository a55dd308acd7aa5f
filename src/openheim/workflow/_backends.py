"""Where a batch worker's claims, commits and settles go (see ``_worker``).

:class:`_Backend` goes through the :class:`~openheim.stores.Store` and
:class:`~openheim.workflow.queues.TaskQueue` protocols, a few calls each;
``_fused`` picks the Redis backend of ``_redis_fused`` instead when the queue
and the store are the same Redis. :class:`_Batcher` groups the calls of many
deliveries made while one is in flight into the next (group commit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec

from openheim.errors import VersionConflictError
from openheim.workflow._batch import CLAIM, CLAIM_TTL, ENDS, Batch, encode_ends
from openheim.workflow.queues import Delivery, Task

__all__ = ["Records", "_Backend", "_Batcher", "_Claim", "_Commit", "_Finish", "_fused"]

Records = list[tuple[int, bytes]]
In = TypeVar("In")
Out = TypeVar("Out")


class _Batcher(Generic[In, Out]):
    """Group calls made while one is in flight into the next (group commit)."""

    def __init__(self, fn: Callable[[list[In]], Awaitable[list[Out]]], limit: int = 256) -> None:
        self.fn = fn
        self.limit = limit
        self.pending: list[tuple[In, asyncio.Future[Out]]] = []
        self.running = False
        self._task: asyncio.Future[None] | None = None

    def __call__(self, item: In) -> asyncio.Future[Out]:
        fut: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self.pending.append((item, fut))
        if not self.running:
            self.running = True
            self._task = asyncio.ensure_future(self._flush())
        return fut

    async def idle(self) -> None:
        """Wait until the group in flight (and any queued behind it) has gone out."""
        while self.running and self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def _flush(self) -> None:
        try:
            while self.pending:
                group, self.pending = self.pending[: self.limit], self.pending[self.limit :]
                try:
                    results = await self.fn([i for i, _ in group])
                except BaseException as exc:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), r in zip(group, results, strict=True):
                    if not fut.done():
                        if isinstance(r, BaseException):  # that item's own failure
                            fut.set_exception(r)
                        else:
                            fut.set_result(r)
        finally:
            self.running = False


# -- backends: where claims and commits go -------------------------------------------------


class _Finish(msgspec.Struct, array_like=True):
    tasks: list[Task]
    acks: list[Delivery]
    ends: list[bytes]


class _Claim(msgspec.Struct, array_like=True):
    ns: str
    run_id: str
    task: str
    after: int  # the seq of the last record the worker folded (-1: none)
    who: str
    read: bool = True  # False: the worker's view is at the task's superstep already
    # The task's first delivery, and the only one that can be (_Backend.first): a
    # backend may write nothing for its claim (see NatsBackend).
    first: bool = False


class _Commit(msgspec.Struct, array_like=True):
    ns: str
    run_id: str
    task: str
    token: int
    data: bytes
    after: int
    # What to put, ack and note if nothing else was recorded in the run since ``after``
    # (backends that can do it atomically with the commit; None: settle afterwards).
    settle: _Finish | None = None


class _Backend:
    """Claims, commits and settles through the Store and TaskQueue protocols."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.queue = batch.queue
        # The worker whose calls these are (set by it): a backend may keep that worker's
        # runs with it (the Redis and NATS backends put a chain's next task on its own
        # stream or subject).
        self.consumer: str | None = None

    async def claim(self, c: _Claim) -> tuple[int, bytes | None, Records]:
        """(token, committed record or None, the log after ``c.after``); token 0:
        already committed; -1: another delivery claimed it at the same moment."""
        s = self.batch.scoped(c.ns)
        key = f"{CLAIM}{c.run_id}/{c.task}"
        got = await s.get(key)
        committed = None
        token = 0
        if got is not None and got[0][:1] == b"C":
            committed = got[0][1:]
        else:
            try:
                token = await s.put(
                    key,
                    b"W" + c.who.encode(),
                    expect_version=got[1] if got is not None else 0,
                    ttl=CLAIM_TTL,
                )
            except VersionConflictError:
                token = -1
        if not c.read and committed is None:
            return token, committed, []
        return token, committed, await s.read_log("wf/" + c.run_id, max(0, c.after))

    fast_settle = False  # commit() never settles (see _Commit.settle)

    def claim_at_once(self, c: _Claim) -> tuple[int, bytes | None, Records] | None:
        """A claim's result when it needs no round trip (a first delivery whose worker's
        view is current, on a backend that writes nothing for it); else None."""
        return None

    def first(self, d: Delivery) -> bool:
        """Whether a delivery's claim may leave the fencing key unwritten (_Claim.first)."""
        return d.deliveries == 1

    def carried(self, d: Delivery) -> Records | None:
        """The run's last records a delivery brought with it ((number in the run's
        log, record), ascending, the last one its predecessor's); None if none."""
        return None

    async def commit(self, c: _Commit) -> tuple[bool, bool, Records]:
        """(committed?, settled with it?, the log after ``c.after``)."""
        s = self.batch.scoped(c.ns)
        try:
            await s.put(
                f"{CLAIM}{c.run_id}/{c.task}",
                b"C" + c.data,
                expect_version=c.token,
                ttl=CLAIM_TTL,
            )
        except VersionConflictError:
            return False, False, []
        seq = await s.append("wf/" + c.run_id, c.data)
        if seq == c.after + 1:  # nothing else was recorded since the worker's view
            return True, False, [(seq, c.data)]
        return True, False, await s.read_log("wf/" + c.run_id, c.after)

    async def append(self, ns: str, run_id: str, data: bytes, after: int) -> Records:
        s = self.batch.scoped(ns)
        await s.append("wf/" + run_id, data)
        return await s.read_log("wf/" + run_id, after)

    async def finish(self, f: _Finish) -> None:
        # The next tasks and the run ends before the acks: a crash in between redelivers.
        # The run ends of the whole group as one record: one append, not one per run
        # (each append to the one ends log would wait for the one before it).
        work = (
            [self.batch.store.append(ENDS + self.queue.name, encode_ends(f.ends))] if f.ends else []
        )
        if f.tasks:
            work.append(self.queue.put(f.tasks))
        if work:
            await asyncio.gather(*work)
        ack_many = getattr(self.queue, "ack_many", None)
        if ack_many is not None and f.acks:
            await ack_many([d.id for d in f.acks])
        else:
            for d in f.acks:
                await self.queue.ack(d)

    async def aclose(self) -> None:
        return None


def _fused(batch: Batch) -> _Backend:
    """The Redis backend when queue and store are the same Redis, the NATS backend when
    they are NATS JetStream's, else the generic one."""
    nats = _nats(batch)
    if nats is not None:
        return nats
    try:
        from openheim.stores.redis import RedisStore
        from openheim.workflow.queues.redis import RedisQueue
    except ImportError:
        return _Backend(batch)
    q, s = batch.queue, batch.store
    if not isinstance(q, RedisQueue) or not isinstance(s, RedisStore):
        return _Backend(batch)
    a = q.client.connection_pool.connection_kwargs
    b = s._client.connection_pool.connection_kwargs
    same = all(a.get(k) == b.get(k) for k in ("host", "port", "db", "path"))
    if not same:
        return _Backend(batch)
    from openheim.workflow._redis_fused import RedisBackend

    return RedisBackend(batch)


def _nats(batch: Batch) -> _Backend | None:
    try:
        from openheim.stores.nats import NatsStore
        from openheim.workflow.queues.nats import NatsQueue
    except ImportError:
        return None
    if not isinstance(batch.queue, NatsQueue) or not isinstance(batch.store, NatsStore):
        return None
    from openheim.workflow._nats_fused import NatsBackend

    return NatsBackend(batch)
