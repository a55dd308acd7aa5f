"""Durable runs on every store: resume, history, fork, cancel, budgets and approvals."""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any

import msgspec
import pydantic
import pytest
from wfhelpers import Counter, cleanup

import openheim as oh
from openheim.errors import (
    BudgetExceededError,
    ConfigError,
    RunNotFoundError,
    WorkflowApprovalError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowStepError,
)
from openheim.stores import Store
from openheim.workflow import ApprovalRequested, Budget, Decision, RunFinished, Workflow


class Job(msgspec.Struct):
    text: str = ""
    log: Annotated[list[str], oh.reducer(operator.add)] = msgspec.field(default_factory=list)
    legal: Decision | None = None
    finance: Decision | None = None


def chain(
    store: Store, calls: Counter, broken: set[str] | None = None, name: str = "chain", **kw: Any
) -> Workflow:
    """a -> b -> c, where b fails while "b" is in ``broken``."""
    broken = broken if broken is not None else {"b"}
    wf = Workflow(name, state=Job, store=store, **kw)

    @wf.step
    def a(j: Job) -> dict[str, Any]:
        calls.hit("a")
        return {"log": ["a"]}

    @wf.step
    async def b(j: Job) -> dict[str, Any]:
        calls.hit("b")
        if "b" in broken:
            raise RuntimeError("b is broken")
        return {"log": ["b"]}

    @wf.step
    def c(j: Job) -> dict[str, Any]:
        calls.hit("c")
        return {"log": ["c"]}

    wf.edge("a", "b")
    wf.edge("b", "c")
    return wf


async def test_failed_run_resumes_without_rerunning_finished_steps(store: Store) -> None:
    calls = Counter()
    wf = chain(store, calls)
    with pytest.raises(WorkflowStepError, match="b is broken") as err:
        await wf.run()
    run_id = err.value.run_id
    status = await wf.status(run_id)
    assert status.status == "failed"
    assert "b is broken" in (status.error or "")
    assert calls.counts == {"a": 1, "b": 1}

    # Another definition object (as after a restart), with b fixed: a is not run again.
    calls2 = Counter()
    fixed = chain(store, calls2, broken=set())
    res = await fixed.resume(run_id)
    assert res.status == "done"
    assert res.state.log == ["a", "b", "c"]
    assert calls2.counts == {"b": 1, "c": 1}
    # A finished run resumes to its result, running nothing.
    again = await fixed.resume(run_id)
    assert again.state.log == ["a", "b", "c"]
    assert calls2.counts == {"b": 1, "c": 1}
    # The resume is in the history, after the failure (a Retried record).
    kinds = [c.kind for c in await fixed.history(run_id)]
    assert kinds == ["start", "step", "end", "retry", "step", "step"]


def test_a_result_after_a_failure_does_not_resume_the_run() -> None:
    """A result recorded after the run failed (in batch mode, of a node that ran beside
    the one that failed) is kept but does not make the run go on: only a Retried record
    does, once per failure. Runs started before that record existed (format 1) are
    read as before: their next result after a failure resumed them."""
    from openheim.workflow._records import Ended, Retried, Started, StepDone
    from openheim.workflow._view import RunView

    wf = chain(None, Counter())  # type: ignore[arg-type]
    wf.validate()

    def log(v: int) -> list[tuple[int, Any]]:
        start = Started(v=v, run_id="r", workflow="chain", state={}, frontier=["a"])
        return [
            (1, start),
            (2, StepDone(task="0:a", updates={"log": ["a"]})),
            (3, Ended(status="failed", error="b is broken")),
            (4, StepDone(task="1:b", updates={"log": ["b"]})),
        ]

    view = RunView.replay(wf, log(2), typed=False)
    assert (view.status, view.error, view.frontier) == ("failed", "b is broken", ["c"])
    view.apply(Retried(n=2))  # not the next retry: nothing changes
    assert view.status == "failed"
    view.apply(Retried(n=1))
    assert (view.status, view.retries, view.frontier) == ("running", 1, ["c"])
    view.apply(Retried(n=1))  # a second resume of the same failure: nothing changes
    view.apply(Ended(status="failed", error="c is broken"))
    view.apply(Retried(n=1))
    assert (view.status, view.retries) == ("failed", 1)
    view.apply(Retried(n=2))
    assert (view.status, view.retries) == ("running", 2)

    legacy = RunView.replay(wf, log(1), typed=False)
    assert (legacy.status, legacy.frontier) == ("running", ["c"])


async def test_history_lists_what_each_step_changed(store: Store) -> None:
    calls = Counter()
    wf = chain(store, calls)
    res = await chain(store, calls, broken=set()).run({"text": "x"})
    history = await wf.history(res.run_id)
    assert [(c.kind, c.node) for c in history] == [
        ("start", None),
        ("step", "a"),
        ("step", "b"),
        ("step", "c"),
    ]  # the run is done because nothing follows c: no record says so
    assert history[0].changed["text"] == "x"
    assert [c.changed for c in history[1:4]] == [{"log": ["a"]}, {"log": ["b"]}, {"log": ["c"]}]
    assert [c.id for c in history] == sorted(c.id for c in history)
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        await wf.history("nope")


async def test_fork_leaves_the_original_intact_and_records_lineage(store: Store) -> None:
    calls = Counter()
    wf = chain(store, calls, broken=set())
    res = await wf.run({"text": "original"})
    before = await wf.history(res.run_id)
    after_a = before[1]
    assert after_a.node == "a"

    forked = await wf.fork(res.run_id, after_a.id, {"text": "edited"})
    assert forked != res.run_id
    assert await wf.lineage(forked) == oh.workflow.Lineage(run_id=res.run_id, checkpoint=after_a.id)
    out = await wf.resume(forked)
    assert out.state.text == "edited"
    assert out.state.log == ["a", "b", "c"]  # a's result carried over, b and c ran again
    assert calls.counts == {"a": 1, "b": 2, "c": 2}
    # The original's records and state are untouched.
    assert await wf.history(res.run_id) == before
    assert (await wf.status(res.run_id)).state.text == "original"
    assert await wf.lineage(res.run_id) is None
    with pytest.raises(RunNotFoundError, match="no checkpoint 999"):
        await wf.fork(res.run_id, 999)
    # Forked from its end: nothing is left to run, so the fork is done as it stands.
    at_end = await wf.fork(res.run_id, None, {"text": "at the end"})
    status = await wf.status(at_end)
    assert (status.status, status.state.text, status.state.log) == (
        "done",
        "at the end",
        ["a", "b", "c"],
    )
    assert (await wf.resume(at_end)).status == "done"
    assert calls.counts == {"a": 1, "b": 2, "c": 2}


async def test_cancel(store: Store) -> None:
    wf = Workflow("cancel", state=Job, store=store)
    started = asyncio.Event()
    ran_after = Counter()

    @wf.step
    async def slow(j: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    wf.step(lambda j: ran_after.hit("after"), name="after")
    wf.edge("slow", "after")
    task = asyncio.ensure_future(wf.run())
    await started.wait()
    (run_id,) = list(wf._live)
    await wf.cancel(run_id)
    with pytest.raises(WorkflowCancelled):
        await task
    assert (await wf.status(run_id)).status == "cancelled"
    with pytest.raises(WorkflowCancelled, match="fork it"):
        await wf.resume(run_id)
    assert ran_after["after"] == 0


def approvals_flow(store: Store, calls: Counter, **kw: Any) -> Workflow:
    """prepare -> (legal, finance) in parallel -> each its own follow-up -> report."""
    wf = Workflow("review", state=Job, store=store, **kw)
    wf.step(lambda j: calls.hit("prepare") or {"log": ["prepared"]}, name="prepare")
    wf.approval("legal", payload=lambda j: {"doc": j.text}, output="legal", **kw.pop("_legal", {}))
    wf.approval("finance", output="finance", on_reject="refund")
    wf.step(lambda j: calls.hit("sign") or {"log": ["signed"]}, name="sign")
    wf.step(lambda j: calls.hit("pay") or {"log": ["paid"]}, name="pay")
    wf.step(lambda j: calls.hit("refund") or {"log": ["refunded"]}, name="refund")
    wf.edge("prepare", "legal")
    wf.edge("prepare", "finance")
    wf.edge("legal", "sign")
    wf.edge("finance", "pay")
    return wf


async def test_parallel_approvals_are_independent(store: Store) -> None:
    calls = Counter()
    wf = approvals_flow(store, calls)
    res = await wf.run({"text": "contract"})
    assert res.status == "waiting"
    by_node = {p.node: p for p in res.pending}
    assert set(by_node) == {"legal", "finance"}
    assert by_node["legal"].payload == {"doc": "contract"}
    assert by_node["legal"].deadline is None

    partial = await wf.approve(by_node["legal"].id, True, by="lee", edits={"text": "v2"})
    assert partial is not None
    assert partial.status == "waiting"
    assert [p.node for p in partial.pending] == ["finance"]
    with pytest.raises(WorkflowApprovalError, match="already approved by lee"):
        await wf.approve(by_node["legal"].id, False)

    done = await wf.approve(by_node["finance"].id, False, by="fin", reason="too dear")
    assert done is not None
    assert done.status == "done"
    assert done.state.text == "v2"
    assert done.state.legal is not None
    assert done.state.legal.approved
    assert done.state.finance is not None
    assert not done.state.finance.approved
    assert done.state.finance.reason == "too dear"
    assert sorted(done.state.log) == ["prepared", "refunded", "signed"]
    assert calls.counts == {"prepare": 1, "sign": 1, "refund": 1}
    with pytest.raises(RunNotFoundError, match="no approval 'nope'"):
        await wf.approve("nope")


async def test_cancelling_a_waiting_run_cancels_its_approvals(store: Store) -> None:
    calls = Counter()
    wf = approvals_flow(store, calls)
    res = await wf.run({"text": "contract"})
    assert res.status == "waiting"
    ids = sorted(p.id for p in res.pending)
    await wf.cancel(res.run_id)
    assert await wf.approvals() == []
    assert (await wf.status(res.run_id)).pending == []
    gone = await wf.approvals(pending=False)
    assert sorted((a.id, a.status) for a in gone) == [(i, "cancelled") for i in ids]
    with pytest.raises(WorkflowApprovalError, match="can no longer be decided: its run"):
        await wf.approve(ids[0], True)
    assert (await wf.status(res.run_id)).status == "cancelled"
    assert calls.counts == {"prepare": 1}


async def test_without_a_store_a_cancelled_runs_approvals_are_gone() -> None:
    calls = Counter()
    wf = approvals_flow(None, calls)  # type: ignore[arg-type]
    res = await wf.run({"text": "contract"})
    await wf.cancel(res.run_id)
    assert await wf.approvals() == []
    with pytest.raises(RunNotFoundError):
        await wf.approve(res.pending[0].id, True)


async def test_approval_decided_through_a_second_workflow_object(store: Store) -> None:
    """As another process would: a new definition object on the same store."""
    calls = Counter()
    wf = approvals_flow(store, calls)
    res = await wf.run({"text": "c"})
    other = approvals_flow(store, calls)
    pending = await other.approvals()
    assert {p.node for p in pending} == {"legal", "finance"}
    for p in pending:
        await other.approve(p.id, True, resume=False)
    # Decided, not resumed yet: ready to continue, nothing ran.
    assert (await other.status(res.run_id)).status == "running"
    assert calls.counts == {"prepare": 1}
    done = await other.resume(res.run_id)
    assert done.status == "done"
    assert sorted(done.state.log) == ["paid", "prepared", "signed"]
    assert calls.counts == {"prepare": 1, "sign": 1, "pay": 1}


async def test_deadline_rejects_or_escalates(store: Store) -> None:
    calls = Counter()
    wf = Workflow("deadline", state=Job, store=store)
    wf.step(lambda j: calls.hit("start"), name="start")
    wf.approval("quick", output="legal", deadline=60, on_reject="rejected")
    wf.approval(
        "boss", output="finance", deadline=60, on_deadline="escalate", escalate_to="escalated"
    )
    wf.step(lambda j: calls.hit("rejected") or {"log": ["rejected"]}, name="rejected")
    wf.step(lambda j: calls.hit("escalated") or {"log": ["escalated"]}, name="escalated")
    wf.edge("start", "quick")
    wf.edge("start", "boss")
    res = await wf.run()
    assert res.status == "waiting"
    assert all(p.deadline is not None for p in res.pending)
    assert await wf.expire() == []  # nothing is due yet
    expired = await wf.expire(now=res.pending[0].requested_at + 61)
    assert len(expired) == 2
    final = await wf.status(res.run_id)
    assert final.status == "done"
    assert sorted(final.state.log) == ["escalated", "rejected"]
    assert final.state.legal is not None
    assert final.state.legal.by == "deadline"
    assert final.state.finance is not None
    assert final.state.finance.escalated
    decided = await wf.approvals(pending=False)
    assert sorted(a.status for a in decided) == ["escalated", "rejected"]
    await wf.aclose()


async def test_deadline_timer_fires_in_process(store: Store) -> None:
    wf = Workflow("timer", state=Job, store=store)
    wf.approval("quick", output="legal", deadline=0.05)
    wf.step(lambda j: {"log": ["after"]}, name="after")
    wf.edge("quick", "after")
    res = await wf.run()
    assert res.status == "waiting"
    for _ in range(3000):  # a bound for a loaded machine, not a timing
        status = await wf.status(res.run_id)
        if status.status == "done":
            break
        await asyncio.sleep(0.01)
    assert status.status == "done"
    assert status.state.legal is not None
    assert not status.state.legal.approved
    await wf.aclose()


async def test_step_budget_fails_and_survives_resume_and_fork(store: Store) -> None:
    calls = Counter()
    broken = {"b"}
    wf = chain(store, calls, broken, budget=Budget(steps=2))
    with pytest.raises(WorkflowStepError) as err:
        await wf.run()  # a ran (1 step), b failed
    run_id = err.value.run_id
    assert (await wf.status(run_id)).usage.steps == 1
    broken.clear()
    with pytest.raises(BudgetExceededError, match=r"steps \(2 of 2\)"):
        await wf.resume(run_id)  # b ran: 2 steps used, c would be the third
    assert calls.counts == {"a": 1, "b": 2}
    # A fork inherits both the budget and what was used: it cannot run c either.
    history = await wf.history(run_id)
    forked = await wf.fork(run_id, history[-2].id)
    with pytest.raises(BudgetExceededError):
        await wf.resume(forked)
    assert calls["c"] == 0


async def test_token_budget_pauses_for_approval(store: Store) -> None:
    from openheim.models import ScriptedModel

    agent = oh.Agent(ScriptedModel(lambda req: "a fairly long answer " * 10))
    wf = Workflow("tokens", state=Job, store=store, budget=Budget(tokens=10, on_exceed="pause"))
    wf.agent("first", agent, prompt=lambda j: "go", output="text")
    wf.agent("second", agent, prompt=lambda j: "again", output="text")
    wf.edge("first", "second")
    res = await wf.run()
    assert res.status == "waiting"
    (pending,) = res.pending
    assert pending.kind == "budget"
    assert "tokens" in pending.payload["exceeded"]
    used = res.usage.tokens
    assert used >= 10
    done = await wf.approve(pending.id, True, edits={"tokens": 10_000})
    assert done is not None
    assert done.status == "done"
    assert done.usage.tokens > used
    # The raised budget is part of the run: a fork from the end keeps it.
    status = await wf.status(res.run_id)
    assert status.usage.tokens == done.usage.tokens


async def test_map_items_are_checkpointed_one_by_one(store: Store) -> None:
    calls = Counter()
    broken = {3}

    class Nums(msgspec.Struct):
        items: list[int] = msgspec.field(default_factory=list)
        squares: list[int] = msgspec.field(default_factory=list)

    async def square(i: int) -> int:
        calls.hit(str(i))
        if i in broken:
            raise RuntimeError(f"item {i} failed")
        return i * i

    wf = Workflow("squares", state=Nums, store=store)
    wf.map("square", "items", square, output="squares")
    with pytest.raises(WorkflowStepError, match="item 3 failed") as err:
        await wf.run({"items": [0, 1, 2, 3, 4]})
    assert calls.counts == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 1}
    items = [c for c in await wf.history(err.value.run_id) if c.kind == "item"]
    assert sorted(c.detail or "" for c in items) == [f"item {i}" for i in (0, 1, 2, 4)]
    broken.clear()
    res = await wf.resume(err.value.run_id)
    assert res.state.squares == [0, 1, 4, 9, 16]
    assert calls.counts == {"0": 1, "1": 1, "2": 1, "3": 2, "4": 1}


class Draft(msgspec.Struct):
    text: str = ""


async def test_recover_finishes_runs_interrupted_in_this_process(store: Store) -> None:
    calls = Counter()
    gate = asyncio.Event()
    wf = Workflow("recover", state=Job, store=store)
    wf.step(lambda j: calls.hit("a") or {"log": ["a"]}, name="a")

    in_b = asyncio.Event()

    @wf.step
    async def b(j: Job) -> dict[str, Any]:
        calls.hit("b")
        in_b.set()
        await gate.wait()
        return {"log": ["b"]}

    wf.edge("a", "b")
    task = asyncio.ensure_future(wf.run())
    await in_b.wait()
    task.cancel()  # as if the process died: nothing records the end
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    other = Workflow("recover", state=Job, store=store)
    other.step(lambda j: calls.hit("a") or {"log": ["a"]}, name="a")
    other.step(b)
    other.edge("a", "b")
    unrelated = Workflow("unrelated", state=Draft, store=store)
    unrelated.step(lambda d: None, name="x")
    await unrelated.run()
    (res,) = await other.recover()
    assert res.status == "done"
    assert res.state.log == ["a", "b"]
    assert calls.counts == {"a": 1, "b": 2}
    assert await other.recover() == []
    with pytest.raises(RunNotFoundError, match="is a run of workflow 'recover'"):
        await unrelated.resume(res.run_id)


async def test_seconds_budget_counts_active_time_only(store: Store) -> None:
    import time

    wf = Workflow("slow", state=Job, store=store, budget=Budget(seconds=3600))

    @wf.step
    async def nap(j: Job) -> None:
        await asyncio.sleep(0.05)

    wf.approval("wait")
    wf.step(lambda j: {"log": ["after"]}, name="after")
    wf.edge("nap", "wait")
    wf.edge("wait", "after")
    t0 = time.monotonic()
    res = await wf.run()
    assert res.status == "waiting"
    assert res.usage.seconds >= 0.05  # the nap was active time
    idle = 0.5
    await asyncio.sleep(idle)  # waiting for an approval is not
    done = await wf.approve(res.pending[0].id, True)
    wall = time.monotonic() - t0
    assert done is not None
    assert done.status == "done"
    # Active time leaves out the idle wait, however slow the machine is.
    assert done.usage.seconds <= wall - idle

    strict = Workflow("strict", state=Job, store=store, budget=Budget(seconds=0.01))
    strict.step(nap)
    strict.step(lambda j: {"log": ["never"]}, name="after")
    strict.edge("nap", "after")
    with pytest.raises(BudgetExceededError, match=r"used up its budget: seconds \("):
        await strict.run()


@pytest.mark.parametrize("durable", [False, True])
async def test_approval_decided_while_a_sibling_branch_still_runs(
    store: Store, durable: bool
) -> None:
    release = asyncio.Event()
    wf = Workflow("siblings", state=Job, store=store if durable else None)
    wf.step(lambda j: None, name="start")
    wf.approval("ok", output="legal")

    @wf.step
    async def slow(j: Job) -> dict[str, Any]:
        await release.wait()
        return {"log": ["slow"]}

    wf.step(lambda j: {"log": ["after"]}, name="after")
    wf.edge("start", "ok")
    wf.edge("start", "slow")
    wf.edge(("ok", "slow"), "after")
    res = None
    async for ev in wf.stream():
        if isinstance(ev, ApprovalRequested):
            # The live run carries on by itself: approve() does not resume it.
            assert await wf.approve(ev.approval.id, True) is None
            release.set()
        elif isinstance(ev, RunFinished):
            res = ev.result
    assert res is not None
    assert res.status == "done"
    assert res.state.log == ["slow", "after"]
    assert res.state.legal is not None
    assert res.state.legal.approved


class Note(pydantic.BaseModel):
    title: str = ""
    tags: Annotated[list[str], oh.reducer(operator.add)] = []
    ok: dict[str, Any] | None = None


async def test_pydantic_state_is_durable(store: Store) -> None:
    wf = Workflow("pyd", state=Note, store=store)
    wf.step(lambda n: {"tags": ["a"], "title": n.title.title()}, name="a")
    wf.approval("check", output="ok")
    wf.step(lambda n: {"tags": ["b"]}, name="b")
    wf.edge("a", "check")
    wf.edge("check", "b")
    res = await wf.run({"title": "hello world"})
    other = Workflow("pyd", state=Note, store=store)
    other.step(lambda n: {"tags": ["a"], "title": n.title.title()}, name="a")
    other.approval("check", output="ok")
    other.step(lambda n: {"tags": ["b"]}, name="b")
    other.edge("a", "check")
    other.edge("check", "b")
    done = await other.approve(res.pending[0].id, True, edits={"title": "Edited"})
    assert done is not None
    assert done.state.title == "Edited"
    assert done.state.tags == ["a", "b"]
    assert done.state.ok is not None
    assert done.state.ok["approved"] is True


async def test_scoped_workflows_keep_tenants_apart(store: Store) -> None:
    calls = Counter()
    wf = approvals_flow(store, calls)
    acme, globex = wf.scoped("acme"), wf.scoped("globex")
    res = await acme.run({"text": "acme deal"})
    assert {p.node for p in await acme.approvals()} == {"legal", "finance"}
    assert await globex.approvals() == []
    with pytest.raises(RunNotFoundError):
        await globex.status(res.run_id)
    with pytest.raises(RunNotFoundError):
        await globex.approve(res.pending[0].id)
    assert (await acme.status(res.run_id)).status == "waiting"
    for ns in ("acme", "globex"):
        await cleanup(store.namespace(ns))
    with pytest.raises(oh.errors.WorkflowError, match="no store"):
        Workflow("local", state=Job).scoped("x")


async def test_two_processes_cannot_resume_one_run_at_once(store: Store) -> None:
    calls = Counter()
    entered = asyncio.Event()
    release = asyncio.Event()

    def build() -> Workflow:
        wf = Workflow("leased", state=Job, store=store)
        wf.approval("go")

        @wf.step
        async def work(j: Job) -> dict[str, Any]:
            calls.hit("work")
            entered.set()
            await release.wait()
            return {"log": ["work"]}

        wf.edge("go", "work")
        return wf

    first, second = build(), build()  # as two processes would hold them
    res = await first.run()
    await first.approve(res.pending[0].id, True, resume=False)
    task = asyncio.ensure_future(first.resume(res.run_id))
    await entered.wait()
    with pytest.raises(oh.errors.WorkflowBusyError, match="being resumed by another process"):
        await second.resume(res.run_id)
    assert await second.recover() == []  # skipped: someone is on it
    release.set()
    assert (await task).status == "done"
    assert calls["work"] == 1
    assert (await second.resume(res.run_id)).status == "done"  # the lease was released


async def test_delete_drops_a_finished_run_with_its_sub_runs_and_approvals(store: Store) -> None:
    """``delete``: a finished run goes with its sub-workflow run and the approvals they
    recorded; a waiting run is refused (cancel it first), then deleted once cancelled."""
    inner = Workflow("inner", state=Job, store=store)
    inner.approval("legal", output="legal")
    outer = Workflow("outer", state=Job, store=store)
    outer.step(lambda j: {"log": ["a"]}, name="a")
    outer.subworkflow("child", inner, output=lambda s: {"legal": s.legal})
    outer.edge("a", "child")
    waiting = await outer.run()
    assert waiting.status == "waiting"
    (pending,) = waiting.pending
    child_id = f"{waiting.run_id}/1:child"
    assert [c.kind for c in await inner.history(child_id)][-1] == "approval"
    with pytest.raises(WorkflowError, match="is waiting: cancel it first"):
        await outer.delete(waiting.run_id)
    assert (await outer.status(waiting.run_id)).status == "waiting"  # nothing was dropped

    await outer.approve(pending.id, True, by="ann")
    assert (await outer.status(waiting.run_id)).status == "done"
    assert [a.id for a in await outer.approvals(pending=False)] == [pending.id]
    await outer.delete(waiting.run_id)
    for run_id in (waiting.run_id, child_id):
        with pytest.raises(RunNotFoundError):
            await outer.history(run_id)
    assert await outer.approvals(pending=False) == []
    assert not [k for k in await store.list() if pending.id in k]
    with pytest.raises(RunNotFoundError):
        await outer.delete(waiting.run_id)

    again = await outer.run()
    assert len(await outer.approvals()) == 1  # its child's
    await outer.cancel(again.run_id)
    assert await outer.approvals() == []  # the child's approval was cancelled with it
    await outer.delete(again.run_id)  # a cancelled run is finished too
    assert await store.list_logs() == []


async def test_prune_drops_the_finished_runs_older_than_the_cutoff(store: Store) -> None:
    calls = Counter()
    wf = chain(store, calls, broken=set())
    other = chain(store, calls, broken=set(), name="other")  # (another workflow, same store)
    old = [(await wf.run()).run_id for _ in range(2)]
    failed = chain(store, calls)  # the same workflow, with b broken
    with pytest.raises(WorkflowStepError) as err:
        await failed.run()
    old.append(err.value.run_id)
    theirs = (await other.run()).run_id
    await asyncio.sleep(0.05)
    middle = time.time()
    await asyncio.sleep(0.05)
    new = (await wf.run()).run_id
    review = Workflow("chain", state=Job, store=store)
    review.approval("legal", output="legal")
    stuck = (await review.run()).run_id  # waiting, however old
    age = time.time() - middle

    assert sorted(await wf.prune(age, dry_run=True)) == sorted(old)
    assert len(await store.list_logs()) == 6  # (a dry run deletes nothing)
    assert sorted(await wf.prune(age)) == sorted(old)
    left = sorted(name.rpartition("/")[2] for name in await store.list_logs())
    assert left == sorted([theirs, new, stuck])
    assert await wf.prune(age) == []
    assert await wf.prune(0) == [new]  # the waiting run stays
    assert (await review.status(stuck)).status == "waiting"
    with pytest.raises(ConfigError, match="older_than is seconds"):
        await wf.prune(-1)
