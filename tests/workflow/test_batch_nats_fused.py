"""The fused NATS backend of batch workers (``_nats_fused``), on the NATS JetStream on localhost.

Claims and commits of a group go to the server together; these tests take the
group apart: one commit of a group refused (its claim taken over) while the
others commit, a first delivery (no claim written) refused by a later
delivery's claim, one item failing without failing its group, settles of
chained steps published together, and the log tail a worker reads other
workers' records from.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from batchhelpers import NATS_URL, close_batches

from openheim.errors import ConfigError
from openheim.workflow._backends import _Batcher, _Claim, _Commit, _Finish, _fused
from openheim.workflow._batch import Batch, decode_ends, encode_end, encode_ends
from openheim.workflow._nats_fused import _CARRY, _TAIL, NatsBackend
from openheim.workflow.queues import Task

pytestmark = pytest.mark.nats


class Env:
    def __init__(self) -> None:
        self.name = f"f{uuid.uuid4().hex[:10]}"
        self.batches: list[Batch] = []
        self.backends: list[NatsBackend] = []

    def backend(self) -> NatsBackend:
        """A worker's backend, with its own connection (another process, as it were)."""
        b = Batch(NATS_URL, queue_name=self.name)
        self.batches.append(b)
        backend = NatsBackend(b)
        self.backends.append(backend)
        return backend

    async def close(self) -> None:
        for backend in self.backends:
            await backend.aclose()
        await close_batches(self.batches, self.name)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.close()


def claim(env: Env, run: str, task: str, who: str, *, first: bool = False) -> _Claim:
    return _Claim(env.name, run, task, -1, who, first=first)


async def log_of(backend: NatsBackend, env: Env, run: str) -> list[tuple[int, bytes]]:
    records: list[tuple[int, bytes]] = await backend.batch.scoped(env.name).read_log("wf/" + run)
    return records


async def test_the_found_backend_for_a_nats_queue_and_store() -> None:
    b = Batch(NATS_URL, queue_name=f"f{uuid.uuid4().hex[:10]}")
    try:
        assert type(_fused(b)).__name__ == "NatsBackend"
    finally:
        await b.aclose()


async def test_one_refused_commit_in_a_group_leaves_the_others_committed(env: Env) -> None:
    a = env.backend()
    other = env.backend()
    run = "r1"
    claims = [claim(env, run, f"0:n{i}", "a") for i in range(3)]
    got = await a.claim_many(claims)
    tokens = [t for t, committed, _ in got]
    assert all(t > 0 for t in tokens)
    assert [committed for _, committed, _ in got] == [None, None, None]
    # Another worker takes task 0:n1 over (its delivery came back to it).
    ((t2, committed, _),) = await other.claim_many([claim(env, run, "0:n1", "b")])
    assert t2 > 0
    assert committed is None
    commits = [
        _Commit(env.name, run, f"0:n{i}", tokens[i], f"rec{i}".encode(), -1) for i in range(3)
    ]
    results = await a.commit_many(commits)
    assert [r[0] for r in results] == [True, False, True]
    assert results[1] == (False, False, [])
    assert [d for _, d in await log_of(a, env, run)] == [b"rec0", b"rec2"]
    # The worker holding the newer claim commits it.
    ((ok, _, _),) = await other.commit_many([_Commit(env.name, run, "0:n1", t2, b"rec1-by-b", -1)])
    assert ok
    assert [d for _, d in await log_of(a, env, run)] == [b"rec0", b"rec2", b"rec1-by-b"]
    # A later delivery of a committed task reads the log up to its mark: the commit is
    # among the records (the worker's view shows the task done). Marks are no records.
    ((t, committed, records),) = await a.claim_many([claim(env, run, "0:n1", "a")])
    assert t > t2
    assert committed is None
    assert [d for _, d in records] == [b"rec0", b"rec2", b"rec1-by-b"]
    assert [n for n, _ in await log_of(a, env, run)] == [1, 2, 3]


async def test_a_first_delivery_is_refused_once_a_later_delivery_claimed(env: Env) -> None:
    stale = env.backend()
    fresh = env.backend()
    run = "r2"
    ((t1, _, _),) = await stale.claim_many([claim(env, run, "0:a", "stale", first=True)])
    assert t1 == 1  # nothing written: the commit expects the fencing key empty
    ((t2, _, _),) = await fresh.claim_many([claim(env, run, "0:a", "fresh")])
    assert t2 > 1
    ((ok, _, _),) = await stale.commit_many([_Commit(env.name, run, "0:a", t1, b"late", -1)])
    assert not ok
    ((ok, _, _),) = await fresh.commit_many([_Commit(env.name, run, "0:a", t2, b"won", -1)])
    assert ok
    assert [d for _, d in await log_of(fresh, env, run)] == [b"won"]
    # And the other way round: a first delivery that commits before any other claim
    # wins; a later delivery finds it committed.
    ((t3, _, _),) = await stale.claim_many([claim(env, run, "1:b", "stale", first=True)])
    ((ok, _, _),) = await stale.commit_many([_Commit(env.name, run, "1:b", t3, b"first", 1)])
    assert ok
    ((t4, committed, records),) = await fresh.claim_many([claim(env, run, "1:b", "fresh")])
    assert committed is None
    assert (records[-1][1], t4 > 1) == (b"first", True)  # the view shows 1:b done
    # A mark in the log is no record: the log reads back as its records alone.
    assert [d for _, d in await log_of(fresh, env, run)] == [b"won", b"first"]
    assert [
        d
        for _, d in await env.backend().read_log(
            env.backend().batch.scoped(env.name), "wf/" + run, 0
        )
    ] == [b"won", b"first"]


async def test_an_item_that_fails_fails_alone(env: Env) -> None:
    a = env.backend()
    batcher: _Batcher[_Commit, Any] = _Batcher(a.commit_many)
    ((t, _, _),) = await a.claim_many([claim(env, "r3", "0:a", "a")])
    good = batcher(_Commit(env.name, "r3", "0:a", t, b"ok", -1))
    # Larger than the server takes: that commit raises, the one beside it commits.
    bad = batcher(_Commit(env.name, "r3", "0:b", 1, b"x" * 8_000_000, -1))
    assert (await good)[0] is True
    with pytest.raises(ConfigError, match="max_payload"):
        await bad


async def test_chained_commits_settle_together(env: Env) -> None:
    a = env.backend()
    q = a.batch.queue
    await q.put([Task(workflow="w", run_id=f"r{i}", task="0:a") for i in range(3)])
    deliveries = []
    for _ in range(20):
        deliveries += await q.take("c", 3 - len(deliveries), timeout=0.5)
        if len(deliveries) == 3:
            break
    assert len(deliveries) == 3
    deliveries.sort(key=lambda d: d.task.run_id)
    got = await a.claim_many([claim(env, f"r{i}", "0:a", "a", first=True) for i in range(3)])
    commits = []
    for i, d in enumerate(deliveries):
        nxt = [Task(workflow="w", run_id=f"r{i}", task="1:b")] if i < 2 else []
        ends = [] if i < 2 else [encode_end("r2", "done")]
        commits.append(
            _Commit(
                env.name,
                f"r{i}",
                "0:a",
                got[i][0],
                b"step",
                0 if i != 1 else -1,
                _Finish(tasks=nxt, acks=[d], ends=ends),
            )
        )
    # r1's worker view is stale: a record it has not seen is in its log already.
    await a.batch.scoped(env.name).append("wf/r1", b"someone else's")
    results = await a.commit_many(commits)
    assert [(ok, settled) for ok, settled, _ in results] == [
        (True, True),
        (True, False),  # not the run's next record: the worker settles it itself
        (True, True),
    ]
    assert [d for _, d in results[1][2]] == [b"someone else's", b"step"]
    # The chained successor was put (r0's; r1's is the worker's to put) ...
    taken = await q.take("c", 10, timeout=0.5)
    assert [(d.task.run_id, d.task.task) for d in taken] == [("r0", "1:b")]
    # ... the run end is in the ends log, and the settled deliveries were acked.
    ends = await a.batch.ends_after(env.name, 0)
    assert [(e.run_id, e.status) for _, e in ends] == [("r2", "done")]
    for _ in range(50):
        stats = await q.stats()
        if stats.in_flight == 2:  # r1's delivery and the one just taken
            break
        await asyncio.sleep(0.05)
    assert stats.in_flight == 2


async def test_a_view_records_behind_reads_them_back_from_the_last_message(env: Env) -> None:
    a = env.backend()
    b = env.backend()
    run = "r5"
    store = a.batch.scoped(env.name)
    # Another worker runs the run's steps, interleaved with other runs' records.
    for i in range(6):
        ((t, _, _),) = await b.claim_many([claim(env, run, f"{i}:a", "b", first=True)])
        ((ok, _, _),) = await b.commit_many([_Commit(env.name, run, f"{i}:a", t, b"x%d" % i, i)])
        assert ok
        await b.batch.scoped(env.name).append("wf/other", b"noise%d" % i)
    want = [(i + 1, b"x%d" % i) for i in range(6)]

    async def no_scan(*_: Any) -> Any:
        raise AssertionError("read back from the last message, not by the store's scan")

    store.read_log = no_scan  # type: ignore[method-assign]
    assert await a.read_log(store, "wf/" + run, 0) == want  # a first look at the run
    assert await a.read_log(store, "wf/" + run, 3) == want[3:]
    assert await a.read_log(store, "wf/" + run, 5) == want[5:]
    assert await a.read_log(store, "wf/" + run, 6) == []
    # A claim a few records behind gets them with its token.
    ((t, committed, records),) = await a.claim_many([_Claim(env.name, run, "6:a", 2, "a")])
    assert t > 0
    assert committed is None
    assert records == want[2:]
    del store.read_log  # the store's own again
    # A log trimmed, deleted and written again: what is read is what the server holds.
    await store.trim_log("wf/" + run, 6)
    assert await a.read_log(store, "wf/" + run, 0) == []
    await store.delete_log("wf/" + run)
    for i in range(3):
        await store.append("wf/" + run, b"y%d" % i)
    assert await a.read_log(store, "wf/" + run, 0) == [(i + 1, b"y%d" % i) for i in range(3)]


def test_run_ends_of_a_group_are_one_record() -> None:
    one = encode_end("a", "done")
    assert decode_ends(encode_ends([one]))[0].run_id == "a"
    both = decode_ends(encode_ends([one, encode_end("b", "failed")]))
    assert [(e.run_id, e.status) for e in both] == [("a", "done"), ("b", "failed")]


async def test_a_write_whose_answer_is_lost_is_made_again_as_a_duplicate(env: Env) -> None:
    a = env.backend()
    real = a.replies.request
    lost: list[str] = []

    async def answer_lost(subject: str, payload: bytes, headers: Any, sent: Any = None) -> Any:
        await real(subject, payload, headers, sent)  # the server stores the write...
        lost.append(subject)
        raise TimeoutError("the answer got lost")  # ...and its answer never comes

    a.replies.request = answer_lost  # type: ignore[method-assign]
    ((t, committed, _),) = await a.claim_many([claim(env, "r7", "0:a", "a")])
    assert t > 0
    assert committed is None
    # The claim's mark and the commit's append are made again with the same
    # Nats-Msg-Id: the server takes them as duplicates of the writes it stored, so the
    # commit is not refused and the record is in the log once.
    ((ok, _, records),) = await a.commit_many([_Commit(env.name, "r7", "0:a", t, b"once", -1)])
    assert ok
    assert records == [(1, b"once")]
    assert len(lost) >= 2  # the mark, the append (and the log reads)
    del a.replies.request
    assert await log_of(a, env, "r7") == [(1, b"once")]
    ((t2, committed, records),) = await a.claim_many([claim(env, "r7", "0:a", "a")])
    assert (t2 > t, committed, records) == (True, None, [(1, b"once")])


async def _take_one(q: Any) -> Any:
    for _ in range(40):
        got = await q.take("c", 1, timeout=0.5)
        if got:
            return got[0]
    raise AssertionError("nothing to take")


async def test_a_successor_carries_its_predecessor_record(env: Env) -> None:
    a = env.backend()
    b = env.backend()  # the worker that takes the successor
    run = "r8"
    await a.batch.queue.put([Task(workflow="w", run_id=run, task="0:a", namespace=env.name)])
    d = await _take_one(a.batch.queue)
    ((t, _, _),) = await a.claim_many([claim(env, run, "0:a", "a", first=True)])
    nxt = Task(workflow="w", run_id=run, task="1:b", namespace=env.name)
    ((ok, settled, records),) = await a.commit_many(
        [_Commit(env.name, run, "0:a", t, b"step 0", 0, _Finish(tasks=[nxt], acks=[d], ends=[]))]
    )
    assert (ok, settled, records) == (True, True, [(1, b"step 0")])
    d2 = await _take_one(b.batch.queue)
    assert d2.task == nxt
    assert b.carried(d2) == [(1, b"step 0")]  # the record it was put after rides along
    assert a.carried(d) is None  # (a submitted task carries none)

    # The worker that took it knows the log's last message now: its commit (after a
    # claim that read nothing, its view being current) is appended without a read.
    async def no_read(*_: Any) -> Any:
        raise AssertionError("the log's last message was carried: no read")

    b._last = no_read  # type: ignore[method-assign]
    ((t2, _, recs),) = await b.claim_many(
        [_Claim(env.name, run, "1:b", 1, "b", read=False, first=True)]
    )
    assert (t2, recs) == (1, [])
    nxt2 = Task(workflow="w", run_id=run, task="2:c", namespace=env.name)
    ((ok, settled, records),) = await b.commit_many(
        [_Commit(env.name, run, "1:b", t2, b"step 1", 1, _Finish(tasks=[nxt2], acks=[d2], ends=[]))]
    )
    assert (ok, settled, records) == (True, True, [(2, b"step 1")])
    del b._last
    assert await log_of(b, env, run) == [(1, b"step 0"), (2, b"step 1")]
    # The next successor carries the log's last records: the one b committed and the
    # one b was brought; a worker whose view has neither folds both in.
    c = env.backend()
    d3 = await _take_one(c.batch.queue)
    assert d3.task == nxt2
    assert c.carried(d3) == [(1, b"step 0"), (2, b"step 1")]
    await c.batch.queue.ack(d3)


async def test_a_log_s_last_records_are_kept_in_order(env: Env) -> None:
    a = env.backend()
    a._saw("x", [(1, b"a")])
    a._saw("x", [(2, b"b")])
    a._saw("x", [(3, b"c")])
    assert a._tail["x"] == [(1, b"a"), (2, b"b"), (3, b"c")]
    a._saw("x", [(2, b"b"), (3, b"c"), (4, b"d"), (5, b"e"), (6, b"f")])
    assert a._tail["x"] == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e"), (6, b"f")]
    # Kept: the last ones within _CARRY bytes (and _TAIL records).
    big = b"x" * (_CARRY // 2)
    a._saw("x", [(7, big), (8, big)])
    assert a._tail["x"] == [(7, big), (8, big)]
    a._saw("x", [(9, b"i")])
    assert a._tail["x"] == [(8, big), (9, b"i")]
    a._saw("y", [(n, b"r") for n in range(1, _TAIL + 10)])
    assert a._tail["y"] == [(n, b"r") for n in range(10, _TAIL + 10)]
    a._saw("y", [(_TAIL + 10, b"x" * (_CARRY + 1))])  # too large to ride along: none kept
    assert "y" not in a._tail
    a._saw("x", [(8, b"h")])  # a gap: what came between is unknown
    assert a._tail["x"] == [(8, b"h")]
    a._saw("x", [(1, b"new")])  # the log was deleted and written again
    assert a._tail["x"] == [(1, b"new")]
    a._saw("x", [(2, b"n2")])
    assert a._tail["x"] == [(1, b"new"), (2, b"n2")]
    a._saw("x", [(1, b"other"), (2, b"n2")])  # what the server holds wins
    assert a._tail["x"] == [(1, b"other"), (2, b"n2")]


async def test_two_workers_run_chains_each_step_once(env: Env) -> None:
    """Two workers (connections of their own) on one queue: steps alternate between
    them, so views fall behind and catch up from carried records and reads."""
    import msgspec

    from openheim.workflow import Worker, Workflow

    class S(msgspec.Struct):
        n: int = 0
        seen: list[int] = []

    env.backend()  # (so the queue and the namespace are dropped afterwards)
    wf = Workflow("chain", state=S)
    for i in range(8):
        wf.step(lambda s, i=i: {"n": s.n + 1, "seen": [*s.seen, i]}, name=f"s{i}")
        if i:
            wf.edge(f"s{i - 1}", f"s{i}")
    handles = [
        await wf.submit({"n": 0}, queue=NATS_URL, queue_name=env.name, namespace=env.name)
        for _ in range(12)
    ]
    workers = [Worker([wf], NATS_URL, queue_name=env.name, concurrency=8) for _ in range(2)]
    reads: list[str] = []
    for w in workers:
        read_log = w.backend.read_log  # type: ignore[attr-defined]

        async def counted(store: Any, name: str, after: int, sent: Any = None, f: Any = read_log):
            reads.append(name)
            return await f(store, name, after, sent)

        w.backend.read_log = counted  # type: ignore[attr-defined]
    runs = [asyncio.ensure_future(w.run(max_idle=1.0, drain_timeout=5)) for w in workers]
    try:
        results = [await h.result(timeout=60) for h in handles]
        histories = [await h.history() for h in handles]
    finally:
        stats = [await r for r in runs]
        for w in workers:
            await w.aclose()
        await wf.aclose()
    for res in results:
        assert res.status == "done"
        assert res.state.n == 8
        assert res.state.seen == list(range(8))
    for history in histories:
        assert [cp.node for cp in history if cp.kind == "step"] == [f"s{i}" for i in range(8)]
    assert sum(s.committed for s in stats) == 12 * 8
    assert all(s.committed > 0 for s in stats)  # both took part
    assert sum(s.refused + s.errors + s.dead_lettered for s in stats) == 0
    # A run's log is read once, by the worker that takes its first step (a submitted
    # task carries no records); every later step brings all of this short log along,
    # so a worker with no view of the run, or one records behind, reads nothing.
    assert len(reads) <= len(handles)


async def test_a_mark_fences_a_stale_claim_through_later_appends(env: Env) -> None:
    """A claim's mark in the run's log refuses an older claim's commit, however many
    records came after it and whether or not the stale worker saw them."""
    stale = env.backend()
    later = env.backend()
    run = "r9"
    store = later.batch.scoped(env.name)
    await store.append("wf/" + run, b"start")
    ((t1, _, _),) = await stale.claim_many([claim(env, run, "1:a", "stale", first=True)])
    assert t1 == 1
    ((t2, _, recs),) = await later.claim_many([claim(env, run, "1:a", "later")])
    assert t2 > 1
    assert recs == [(1, b"start")]
    # A sibling's delivery marks its own task; other writers append records (the
    # store's own append, as a submit or a cancel would) after both marks.
    ((t3, _, _),) = await later.claim_many([claim(env, run, "1:b", "later")])
    for i in range(3):
        await env.backend().batch.scoped(env.name).append("wf/" + run, f"other{i}".encode())
    # The stale first delivery's view is where it was: its append expects an older
    # position, so it reads the last message and walks the marks back from it.
    ((ok, _, _),) = await stale.commit_many([_Commit(env.name, run, "1:a", t1, b"stale", 1)])
    assert not ok
    # A worker that knows nothing of this log yet (no cache) is refused the same way.
    ((ok, _, _),) = await env.backend().commit_many(
        [_Commit(env.name, run, "1:a", t1, b"stale", 4)]
    )
    assert not ok
    # The marks of other tasks fence nothing: a first delivery of 1:c commits.
    ((ok, _, _),) = await stale.commit_many([_Commit(env.name, run, "1:c", 1, b"c", 4)])
    assert ok
    # The newest claims commit, after the records that came since their marks.
    ((ok, _, got),) = await later.commit_many([_Commit(env.name, run, "1:a", t2, b"a", 1)])
    assert ok
    assert [d for _, d in got] == [b"other0", b"other1", b"other2", b"c", b"a"]
    ((ok, _, _),) = await later.commit_many([_Commit(env.name, run, "1:b", t3, b"b", 6)])
    assert ok
    # An older claim of 1:b (token below the mark) is refused, a newer one is not.
    ((ok, _, _),) = await stale.commit_many([_Commit(env.name, run, "1:b", t3 - 1, b"x", 7)])
    assert not ok
    log = await log_of(later, env, run)
    assert log == [
        (1, b"start"),
        (2, b"other0"),
        (3, b"other1"),
        (4, b"other2"),
        (5, b"c"),
        (6, b"a"),
        (7, b"b"),
    ]


async def test_a_chain_marks_only_its_submitted_first_step(env: Env) -> None:
    """A run of chained steps on one worker: the first step (put by submit, which may
    put a task twice) is claimed with a mark; every later step was put once, by its
    predecessor's chained settle, and its claim writes nothing."""
    import msgspec

    from openheim.stores.nats import H_MARK
    from openheim.workflow import Worker, Workflow

    class S(msgspec.Struct):
        n: int = 0

    env.backend()
    wf = Workflow("marks", state=S)
    for i in range(5):
        wf.step(lambda s: {"n": s.n + 1}, name=f"s{i}")
        if i:
            wf.edge(f"s{i - 1}", f"s{i}")
    h = await wf.submit({"n": 0}, queue=NATS_URL, queue_name=env.name, namespace=env.name)
    w = Worker([wf], NATS_URL, queue_name=env.name, concurrency=4)
    run = asyncio.ensure_future(w.run(max_idle=1.0, drain_timeout=5))
    try:
        res = await h.result(timeout=30)
        history = await h.history()
        store: Any = env.backend().batch.scoped(env.name)
        s = store._s
        subject = store._log_subject("wf/" + h.run_id)
        found = await s.scan(s.log_stream, subject, last_per_subject=False, headers_only=False)
    finally:
        stats = await run
        await w.aclose()
        await wf.aclose()
    assert (res.status, res.state.n, stats.committed) == ("done", 5, 5)
    marks = [msg.data for _, msg in found if msg.headers.get(H_MARK)]
    assert marks == [b"0:s0"]
    assert [cp.node for cp in history if cp.kind == "step"] == [f"s{i}" for i in range(5)]
