"""Batch runs steered from outside: cancel, fork, budget pauses, sub-workflow approvals,
submit_many's progress, dead letters, traceparent, and the generic (non-fused) backend."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from batchflows import Doc, Inner
from batchhelpers import NATS_URL, REDIS_URL, drop_namespace

import openheim as oh
from openheim.errors import (
    WorkflowApprovalError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowStepError,
)
from openheim.workflow import Budget, StepInfo, Worker, Workflow, current_step
from openheim.workflow._batch import Batch
from openheim.workflow.queues import Delivery, Task, open_queue

pytestmark = pytest.mark.redis

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class Env:
    def __init__(self) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.tasks: list[asyncio.Task[Any]] = []
        self.workers: list[Worker] = []
        self.wfs: list[Workflow] = []
        self.closers: list[Any] = []  # what the workers use: closed after they stopped

    def kw(self) -> dict[str, Any]:
        return {"queue": REDIS_URL, "queue_name": self.name, "namespace": self.name}

    def work(self, *wfs: Workflow, queue: Any = None, **kw: Any) -> Worker:
        w = Worker(
            wfs,
            queue if queue is not None else REDIS_URL,
            queue_name=self.name,
            visibility_timeout=5,
            **kw,
        )
        self.workers.append(w)
        self.wfs += wfs
        self.tasks.append(asyncio.ensure_future(w.run(drain_timeout=2)))
        return w

    async def close(self) -> None:
        for w in self.workers:
            w.stop()
        for t in self.tasks:
            await t
        for w in self.workers:
            await w.aclose()
        for close in self.closers:
            await close()
        b = Batch(REDIS_URL, queue_name=self.name)
        await b.queue.purge()
        await drop_namespace(b.store, self.name)
        await b.aclose()
        for wf in self.wfs:
            await wf.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.close()


async def test_cancel_stops_a_run_between_steps(env: Env) -> None:
    wf = Workflow("b-cancel", state=Doc)
    gate = asyncio.Event()

    @wf.step
    async def first(d: Doc) -> dict[str, Any]:
        await gate.wait()
        return {"log": ["first"]}

    wf.step(lambda d: {"log": ["second"]}, name="second")
    wf.edge("first", "second")
    env.work(wf)
    h = await wf.submit(None, **env.kw())
    await asyncio.sleep(0.2)
    await h.cancel()
    gate.set()
    with pytest.raises(WorkflowCancelled):
        await h.result(timeout=10)
    await asyncio.sleep(0.3)
    res = await h.status()
    assert res.status == "cancelled"
    assert "second" not in res.state.log  # no step after the cancel ran


async def test_fork_of_a_batch_run_runs_on_the_queue(env: Env) -> None:
    wf = Workflow("b-fork", state=Doc)
    for n in ("a", "b", "c"):
        wf.step(lambda d, n=n: {"log": [n]}, name=n)
    wf.edge("a", "b")
    wf.edge("b", "c")
    env.work(wf)
    h = await wf.submit({"text": "x"}, **env.kw())
    assert (await h.result(timeout=10)).state.log == ["a", "b", "c"]
    on = wf._on_batch(REDIS_URL, None, env.name, env.name)
    history = await h.history()
    after_a = next(cp.id for cp in history if cp.node == "a")
    new_id = await on.fork(h.run_id, after_a, {"text": "forked"})
    fork = wf.handle(new_id, **env.kw())
    assert await fork.resume() == 1
    res = await fork.result(timeout=10)
    assert res.state.log == ["a", "b", "c"]
    assert res.state.text == "forked"
    lineage = await on.lineage(new_id)
    assert lineage is not None
    assert lineage.run_id == h.run_id


async def test_a_budget_pause_waits_and_its_approval_requeues(env: Env) -> None:
    wf = Workflow("b-budget-pause", state=Doc, budget=Budget(steps=2, on_exceed="pause"))
    for n in ("a", "b", "c"):
        wf.step(lambda d, n=n: {"log": [n]}, name=n)
    wf.edge("a", "b")
    wf.edge("b", "c")
    env.work(wf)
    h = await wf.submit(None, **env.kw())
    res = await h.result(timeout=10)
    assert res.status == "waiting"
    assert res.state.log == ["a", "b"]
    (pending,) = res.pending
    assert pending.kind == "budget"
    await wf.approve(pending.id, True, **env.kw())
    done = await h.result(timeout=10)
    assert done.status == "done"
    assert done.state.log == ["a", "b", "c"]


async def test_an_approval_inside_a_sub_workflow(env: Env) -> None:
    inner = Workflow("b-inner", state=Inner)
    inner.step(lambda s: {"notes": ["n1"]}, name="search")
    inner.approval("ok")
    inner.step(lambda s: {"notes": [*s.notes, "n2"]}, name="after")
    inner.edge("search", "ok")
    inner.edge("ok", "after")
    wf = Workflow("b-outer-approval", state=Doc)
    wf.step(lambda d: None, name="before")
    wf.subworkflow("sub", inner, input=lambda d: {"topic": "t"}, output=lambda s: {"out": s.notes})
    wf.edge("before", "sub")
    env.work(wf)
    h = await wf.submit(None, **env.kw())
    res = await h.result(timeout=10)
    assert res.status == "waiting"
    (pending,) = res.pending
    assert pending.run_id != h.run_id  # the child run asked
    await wf.approve(pending.id, True, **env.kw())
    done = await h.result(timeout=10)
    assert done.status == "done"
    assert done.state.out == ["n1", "n2"]
    # What the HTTP routes see (the workflow's own status and cancel, on the same store):
    # the parent waits on its child's approval; cancelling the parent cancels that one.
    wf2 = Workflow("b-outer-approval", state=Doc, store=REDIS_URL)
    wf2.step(lambda d: None, name="before")
    wf2.subworkflow("sub", inner, input=lambda d: {"topic": "t"}, output=lambda s: {"out": s.notes})
    wf2.edge("before", "sub")
    env.wfs.append(wf2)
    h2 = await wf.submit(None, **env.kw())
    assert (await h2.result(timeout=10)).status == "waiting"
    scoped = wf2.scoped(env.name)
    seen = await scoped.status(h2.run_id)
    assert seen.status == "waiting"
    (child_pending,) = seen.pending
    assert child_pending.run_id.startswith(h2.run_id + "/")
    assert [a.id for a in await scoped.approvals()] == [child_pending.id]
    await scoped.cancel(h2.run_id)
    assert (await scoped.status(h2.run_id)).status == "cancelled"
    assert [a.id for a in await scoped.approvals()] == []
    with pytest.raises(WorkflowApprovalError, match="was cancelled"):
        await scoped.approve(child_pending.id, True)


async def test_submit_many_shows_progress_and_a_summary(env: Env) -> None:
    wf = Workflow("b-many", state=Doc)

    @wf.step
    def work(d: Doc) -> dict[str, Any]:
        if d.text == "bad":
            raise ValueError("bad input")
        return {"log": [d.text]}

    env.work(wf)
    out = io.StringIO()
    inputs = [{"text": str(i)} for i in range(20)] + [{"text": "bad"}]
    handles = await wf.submit_many(inputs, stream=out, timeout=30, **env.kw())
    assert len(handles) == 21
    text = out.getvalue()
    assert re.search(r"runs 21/21 +done 20 +failed 1 +[\d.]+/s +ETA", text), text
    assert re.search(r"^failed +1$", text, re.M)
    assert re.search(r"^done +20$", text, re.M)
    assert re.search(r"^runs/s +[\d.]+$", text, re.M)
    # The failed run, with its error, and what to do about it.
    bad = handles[-1].run_id
    assert f"failed runs (1):\n  {bad}: node 'work' of run '{bad}' failed" in text, text
    assert "ValueError: bad input" in text
    assert "`openheim workflow resume WORKFLOW RUN_ID`" in text
    assert (await handles[0].result(timeout=5)).state.log == ["0"]


def test_progress_counts_from_when_the_work_began() -> None:
    """Runs can finish while later ones are still being submitted: the rate and the
    seconds count from the first submit, not from when the bar was drawn."""
    from openheim.workflow._batch import Progress

    out = io.StringIO()
    bar = Progress(200, True, out, started=time.monotonic() - 100.0)
    bar.done = 200
    bar.close()
    bar.print_summary()
    text = out.getvalue()
    got = re.search(r"runs 200/200 +done 200 +failed 0 +([\d.]+)/s", text)
    assert got is not None, text
    assert 1.5 < float(got.group(1)) <= 2.0  # 200 runs over 100 s and a little more
    seconds = re.search(r"^seconds +([\d.]+)$", text, re.M)
    assert seconds is not None, text
    assert float(seconds.group(1)) >= 100.0


async def test_a_task_of_an_unknown_workflow_is_a_dead_letter(env: Env) -> None:
    known = Workflow("b-known", state=Doc)
    known.step(lambda d: None, name="a")
    other = Workflow("b-unknown", state=Doc)
    other.step(lambda d: None, name="a")
    w = env.work(known)
    await other.submit(None, **env.kw())
    q = w.queue
    for _ in range(100):
        if await q.dead_letters():
            break
        await asyncio.sleep(0.05)
    (dead,) = await q.dead_letters()
    assert "does not run workflow 'b-unknown'" in dead.reason
    assert w.stats.dead_lettered == 1
    await other.aclose()


class Recording:
    """A TaskQueue wrapper that records what is put (and hides the Redis type, so the
    worker uses the generic backend: plain Store and TaskQueue calls)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.url = inner.url
        self.name = inner.name
        self.visibility_timeout = inner.visibility_timeout
        self.max_deliveries = inner.max_deliveries
        self.put_tasks: list[Task] = []

    async def put(self, tasks: list[Task]) -> int:
        self.put_tasks += tasks
        n: int = await self.inner.put(tasks)
        return n

    async def take(self, consumer: str, count: int = 1, *, timeout: float = 1.0) -> Any:
        return await self.inner.take(consumer, count, timeout=timeout)

    async def extend(self, d: Delivery) -> None:
        await self.inner.extend(d)

    async def ack(self, d: Delivery) -> None:
        await self.inner.ack(d)

    async def release(self, d: Delivery) -> None:
        await self.inner.release(d)

    async def dead_letter(self, d: Delivery, reason: str) -> None:
        await self.inner.dead_letter(d, reason)

    async def dead_letters(self) -> Any:
        return await self.inner.dead_letters()

    async def retry_dead_letter(self, dead_letter_id: str) -> bool:
        ok: bool = await self.inner.retry_dead_letter(dead_letter_id)
        return ok

    async def stats(self) -> Any:
        return await self.inner.stats()

    async def purge(self) -> None:
        await self.inner.purge()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_traceparent_and_idempotency_keys_on_the_generic_backend(env: Env) -> None:
    seen: list[StepInfo] = []
    wf = Workflow("b-trace", state=Doc)
    for n in ("a", "b"):

        @wf.step(name=n)
        def step(d: Doc) -> None:
            seen.append(current_step())

    wf.edge("a", "b")
    inner = open_queue(REDIS_URL, name=env.name)
    rec = Recording(inner)
    batch = Batch(rec, REDIS_URL)
    env.closers += [batch.aclose, inner.aclose]
    w = env.work(wf, queue=batch)
    assert type(w.backend).__name__ == "_Backend"  # not the fused Redis one
    h = await wf.submit(None, **env.kw())
    assert (await h.result(timeout=10)).status == "done"
    for _ in range(200):  # (the run reads done once its last record is in; the worker
        if w.stats.committed == 2:  # counts that commit when its reply is back)
            break
        await asyncio.sleep(0.01)
    # The first task was put by submit (not recorded here); the worker put the second
    # with the same trace.
    (succ,) = rec.put_tasks
    assert succ.task == "1:b"
    assert succ.traceparent is not None
    assert TRACEPARENT.match(succ.traceparent)
    assert [s.idempotency_key for s in seen] == [f"{h.run_id}/0:a/1", f"{h.run_id}/1:b/1"]
    assert w.stats.committed == 2


async def test_current_step_in_real_time_mode_and_outside_a_node() -> None:
    keys: list[str] = []
    wf = Workflow("rt-keys", state=Doc)

    def item(x: str) -> str:
        keys.append(current_step().idempotency_key)
        return x

    wf.map("m", "items", item, output="out")

    wf.step(lambda d: {"total": len(current_step().idempotency_key)}, name="after")
    wf.edge("m", "after")
    res = await wf.run({"items": ["p", "q"]}, run_id="wf-abc-1")
    assert res.state.total == len("wf-abc-1/1:after/1")
    assert res.state.out == ["p", "q"]
    assert keys == ["wf-abc-1/0:m#0/1", "wf-abc-1/0:m#1/1"]
    with pytest.raises(WorkflowError, match="only available inside a workflow node"):
        current_step()
    assert oh.workflow.current_step is current_step


def _review(wf: Workflow) -> Workflow:
    """draft -> review (an approval) -> send."""
    wf.step(lambda d: {"log": ["drafted"]}, name="draft")
    wf.approval("review", output="decision")
    wf.step(lambda d: {"log": ["sent"]}, name="send")
    wf.edge("draft", "review")
    wf.edge("review", "send")
    return wf


async def test_the_workflows_own_methods_see_batch_runs_in_the_same_store(env: Env) -> None:
    """What the HTTP routes call (``wf.scoped(ns).status / cancel / approve``) works on a
    batch run when the workflow's store is the queue's Redis: the routes need no change."""
    wf = _review(Workflow("b-http", state=Doc, store=REDIS_URL))
    env.work(wf)
    h = await wf.submit(None, **env.kw())
    assert (await h.result(timeout=10)).status == "waiting"
    scoped = wf.scoped(env.name)
    res = await scoped.status(h.run_id)
    assert res.status == "waiting"
    (pending,) = await scoped.approvals()
    assert await scoped.approve(pending.id, True, by="http") is None  # re-queued, not run here
    done = await h.result(timeout=10)
    assert done.state.log == ["drafted", "sent"]
    assert (await scoped.status(h.run_id)).status == "done"
    h2 = await wf.submit(None, **env.kw())
    await h2.result(timeout=10)
    await scoped.cancel(h2.run_id)
    assert (await h2.status()).status == "cancelled"


async def test_resume_puts_a_batch_runs_tasks_back_on_its_queue(env: Env) -> None:
    """``Workflow.resume`` of a batch run runs nothing in the calling process: its ready
    tasks go back on its queue (here: lost with a purged queue) and a worker ends it."""
    wf = Workflow("b-resume", state=Doc, store=REDIS_URL)
    ran: list[str] = []
    wf.step(lambda d: ran.append("a") or {"log": ["a"]}, name="a")
    wf.step(lambda d: ran.append("b") or {"log": ["b"]}, name="b")
    wf.edge("a", "b")
    h = await wf.submit(None, **env.kw())
    b = Batch(REDIS_URL, queue_name=env.name)
    env.closers.append(b.aclose)
    await b.queue.purge()  # its first task is lost
    scoped = wf.scoped(env.name)
    res = await scoped.resume(h.run_id)
    assert res.status == "running"
    assert ran == []  # nothing ran here
    assert (await b.queue.stats()).depth == 1
    env.work(wf)
    done = await h.result(timeout=10)
    assert done.state.log == ["a", "b"]
    assert ran == ["a", "b"]  # (by the worker, once each)


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("redis"),
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("generic"),
    ],
)
async def test_a_failed_batch_run_resumed_runs_its_failed_step_again(env: Env, engine: str) -> None:
    """Resuming a failed batch run runs it again from its failed superstep, as resuming
    a failed real-time run does: the node that failed runs again (with the same
    idempotency key), its parallel sibling that succeeded keeps its result, and the run
    ends. Nothing runs in the resuming process; two resumes at once are one retry."""
    url = NATS_URL if engine == "nats" else REDIS_URL
    kw = {**env.kw(), "queue": url}
    wf = Workflow(f"b-retry-{engine}", state=Doc, store=url)
    ran: list[str] = []
    keys: list[str] = []
    broken = {"pay": True}
    wf.step(lambda d: ran.append("a") or {"log": ["a"]}, name="a")

    mailed = asyncio.Event()

    @wf.step
    async def pay(d: Doc) -> dict[str, Any]:
        ran.append("pay")
        keys.append(current_step().idempotency_key)
        if broken["pay"]:
            await asyncio.wait_for(mailed.wait(), 10)  # its sibling has run
            raise ValueError("the payment service is down")
        return {"log": ["pay"]}

    @wf.step
    def mail(d: Doc) -> dict[str, Any]:
        ran.append("mail")
        mailed.set()
        return {"log": ["mail"]}

    wf.step(lambda d: ran.append("z") or {"log": ["z"]}, name="z")
    wf.edge("a", "pay")
    wf.edge("a", "mail")
    wf.edge(("pay", "mail"), "z")
    b = Batch(url, queue_name=env.name)
    env.closers += [b.queue.purge, lambda: drop_namespace(b.store, env.name), b.aclose]
    if engine == "generic":
        inner = open_queue(REDIS_URL, name=env.name)
        gb = Batch(Recording(inner), REDIS_URL)
        env.closers += [gb.aclose, inner.aclose]
        w = env.work(wf, queue=gb)
        assert type(w.backend).__name__ == "_Backend"
    else:
        env.work(wf, queue=url)
    h = await wf.submit(None, **kw)
    with pytest.raises(WorkflowStepError, match="the payment service is down"):
        await h.result(timeout=10)
    assert sorted(ran) == ["a", "mail", "pay"]
    scoped = wf.scoped(env.name)
    assert (await scoped.status(h.run_id)).status == "failed"

    broken["pay"] = False
    first, second = await asyncio.gather(scoped.resume(h.run_id), scoped.resume(h.run_id))
    assert {first.status, second.status} <= {"running", "done"}  # (a worker may be quick)
    done = await h.result(timeout=10)
    assert done.status == "done"
    assert sorted(done.state.log) == ["a", "mail", "pay", "z"]
    # Only what had no result ran again: pay (maybe twice: the two resumes put a task
    # each, and the second delivery can take over the first's claim), then z.
    assert [ran.count(n) for n in ("a", "mail", "z")] == [1, 1, 1]
    assert ran.count("pay") >= 2
    assert set(keys) == {f"{h.run_id}/1:pay/1"}  # the same key every time
    history = await scoped.history(h.run_id)
    kinds = [c.kind for c in history]
    # (the two resumes' records: the second changes nothing)
    assert kinds[kinds.index("end") :].count("retry") in (1, 2)
    assert [c.node for c in history if c.kind == "step"][-1] == "z"
    assert (await scoped.resume(h.run_id)).status == "done"  # nothing left to run

    # Failing again after a retry, and resumed again (through the handle this time).
    h2 = await wf.submit(None, **kw)
    broken["pay"] = True
    with pytest.raises(WorkflowStepError):
        await h2.result(timeout=10)
    await scoped.resume(h2.run_id)
    with pytest.raises(WorkflowStepError):
        await h2.result(timeout=10)
    broken["pay"] = False
    assert await h2.resume() >= 1  # its failed task (and its sibling, if it had not run)
    assert (await h2.result(timeout=10)).status == "done"
    retries = [c.detail for c in await scoped.history(h2.run_id) if c.kind == "retry"]
    assert retries == ["failed run resumed (retry 1)", "failed run resumed (retry 2)"]


@pytest.mark.parametrize(
    "engine", [pytest.param("redis"), pytest.param("nats", marks=pytest.mark.nats)]
)
async def test_a_result_committed_after_the_run_failed_does_not_resume_it(
    env: Env, engine: str
) -> None:
    """Two nodes run at once; one fails, and the other's result is committed after the
    failure. The run stays failed (it read as running before, with nothing left to run
    its failed node); resumed, only the failed node runs again."""
    url = NATS_URL if engine == "nats" else REDIS_URL
    kw = {**env.kw(), "queue": url}
    wf = Workflow(f"b-late-{engine}", state=Doc, store=url)
    ran: list[str] = []
    failed_seen = asyncio.Event()
    broken = {"pay"}
    wf.step(lambda d: {"log": ["a"]}, name="a")

    @wf.step
    def pay(d: Doc) -> dict[str, Any]:
        ran.append("pay")
        if "pay" in broken:
            raise ValueError("pay is broken")
        return {"log": ["pay"]}

    @wf.step
    async def mail(d: Doc) -> dict[str, Any]:
        ran.append("mail")
        await asyncio.wait_for(failed_seen.wait(), 10)  # the failure is recorded first
        return {"log": ["mail"]}

    wf.step(lambda d: {"log": ["z"]}, name="z")
    wf.edge("a", "pay")
    wf.edge("a", "mail")
    wf.edge(("pay", "mail"), "z")
    b = Batch(url, queue_name=env.name)
    env.closers += [b.queue.purge, lambda: drop_namespace(b.store, env.name), b.aclose]
    env.work(wf, queue=url)
    h = await wf.submit(None, **kw)
    with pytest.raises(WorkflowStepError, match="pay is broken"):
        await h.result(timeout=10)
    failed_seen.set()
    scoped = wf.scoped(env.name)
    for _ in range(200):  # until mail's result is in the run's log
        if any(c.node == "mail" for c in await scoped.history(h.run_id)):
            break
        await asyncio.sleep(0.05)
    kinds = [(c.kind, c.node) for c in await scoped.history(h.run_id)]
    assert kinds.index(("step", "mail")) > kinds.index(("end", None))
    assert (await scoped.status(h.run_id)).status == "failed"
    broken.clear()
    await scoped.resume(h.run_id)
    done = await h.result(timeout=10)
    assert sorted(done.state.log) == ["a", "mail", "pay", "z"]
    assert ran.count("mail") == 1
    assert ran.count("pay") == 2


@pytest.mark.parametrize(
    "engine", [pytest.param("redis"), pytest.param("nats", marks=pytest.mark.nats)]
)
async def test_a_failed_map_item_runs_again_when_its_batch_run_is_resumed(
    env: Env, engine: str
) -> None:
    """A map whose item failed: resumed, only the items without a result run again (on
    new claims: the failed item's claim holds its failure), then the join."""
    url = NATS_URL if engine == "nats" else REDIS_URL
    kw = {**env.kw(), "queue": url}
    wf = Workflow(f"b-retry-map-{engine}", state=Doc, store=url)
    ran: list[str] = []
    broken = {"c"}

    def item(x: str) -> str:
        ran.append(x)
        if x in broken:
            raise ValueError(f"item {x} is broken")
        return x.upper()

    wf.map("m", "items", item, output="out")
    b = Batch(url, queue_name=env.name)
    env.closers += [b.queue.purge, lambda: drop_namespace(b.store, env.name), b.aclose]
    env.work(wf, queue=url)
    h = await wf.submit({"items": ["a", "b", "c", "d"]}, **kw)
    with pytest.raises(WorkflowStepError, match="item c is broken"):
        await h.result(timeout=10)
    before = {x: ran.count(x) for x in "abcd"}
    assert before["c"] == 1
    broken.clear()
    res = await wf.scoped(env.name).resume(h.run_id)
    assert res.status == "running"
    done = await h.result(timeout=10)
    assert done.state.out == ["A", "B", "C", "D"]
    assert ran.count("c") == 2
    for x in "abd":  # an item with a result before the failure did not run again
        assert ran.count(x) == max(1, before[x])


async def test_resume_of_a_cancelled_batch_run_says_what_to_do(env: Env) -> None:
    wf = Workflow("b-resume-cancelled", state=Doc, store=REDIS_URL)
    wf.step(lambda d: None, name="a")
    env.wfs.append(wf)
    scoped = wf.scoped(env.name)
    h2 = await wf.submit(None, **env.kw())
    await scoped.cancel(h2.run_id)
    with pytest.raises(WorkflowCancelled, match="fork it to run it again"):
        await scoped.resume(h2.run_id)


async def test_a_cancelled_runs_approvals_can_no_longer_be_decided(env: Env) -> None:
    wf = _review(Workflow("b-cancel-approval", state=Doc, store=REDIS_URL))
    env.work(wf)
    scoped = wf.scoped(env.name)
    h = await wf.submit(None, **env.kw())
    assert (await h.result(timeout=10)).status == "waiting"
    (pending,) = await scoped.approvals()
    await h.cancel()  # the handle's cancel (RunHandle)
    assert await scoped.approvals() == []
    (gone,) = await scoped.approvals(pending=False)
    assert (gone.id, gone.status) == (pending.id, "cancelled")
    with pytest.raises(WorkflowApprovalError, match=r"its run .* was cancelled"):
        await scoped.approve(pending.id, True)
    h2 = await wf.submit(None, **env.kw())
    assert (await h2.result(timeout=10)).status == "waiting"
    (pending2,) = await scoped.approvals()
    await scoped.cancel(h2.run_id)  # the workflow's cancel (what the HTTP route calls)
    with pytest.raises(WorkflowApprovalError, match="was cancelled"):
        await scoped.approve(pending2.id, False)
    assert (await h2.status()).status == "cancelled"


async def test_recover_leaves_batch_runs_to_their_workers(env: Env) -> None:
    """``Workflow.recover`` (a service restarting on the same store) resumes its own
    real-time runs, not the batch runs of that store: their tasks are on their queue."""
    wf = Workflow("b-recover", state=Doc, store=REDIS_URL)
    ran: list[str] = []
    wf.step(lambda d: ran.append("a") or {"log": ["a"]}, name="a")
    h = await wf.submit(None, **env.kw())
    scoped = wf.scoped(env.name)
    assert await scoped.recover() == []
    assert ran == []
    b = Batch(REDIS_URL, queue_name=env.name)
    env.closers.append(b.aclose)
    assert (await b.queue.stats()).depth == 1  # its task, once
    env.work(wf)
    assert (await h.result(timeout=10)).state.log == ["a"]
    assert ran == ["a"]


@pytest.mark.parametrize(
    "engine", [pytest.param("redis"), pytest.param("nats", marks=pytest.mark.nats)]
)
async def test_an_approval_deadline_passes_while_no_process_waits_for_it(
    env: Env, engine: str
) -> None:
    """A batch run's approval with a deadline: a worker (any of the queue's) rejects it
    once it passes, as a real-time run's timer would, and the run goes on."""
    url = REDIS_URL if engine == "redis" else NATS_URL
    kw = {**env.kw(), "queue": url}
    wf = Workflow("b-deadline", state=Doc)
    wf.step(lambda d: {"log": ["drafted"]}, name="draft")
    wf.approval("review", output="decision", deadline=0.5)
    wf.step(lambda d: {"log": ["sent"]}, name="send")
    wf.edge("draft", "review")
    wf.edge("review", "send")
    h = await wf.submit(None, **kw)
    b = Batch(url, queue_name=env.name)
    env.closers += [b.queue.purge, lambda: drop_namespace(b.store, env.name), b.aclose]
    env.work(wf, queue=url, deadline_every=0.1)
    waiting = await h.result(timeout=10)
    assert waiting.status == "waiting"
    (pending,) = waiting.pending
    assert pending.deadline is not None
    for _ in range(200):
        res = await h.status()
        if res.status != "waiting":
            break
        await asyncio.sleep(0.05)
    done = await h.result(timeout=10)
    assert done.status == "done"
    assert done.state.log == ["drafted", "sent"]
    decision = done.state.decision
    assert (decision["approved"], decision["by"]) == (False, "deadline")
    for key in await b.store.list(f"wfdeadline/{env.name}/"):  # the index entry is gone
        got = await b.store.get(key)
        assert got is not None
        assert pending.id.encode() not in got[0]
