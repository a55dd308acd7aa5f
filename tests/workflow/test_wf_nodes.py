"""Every node kind in real-time mode, streaming, retries and timeouts."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import msgspec
import pytest
from wfhelpers import Counter

import openheim as oh
from openheim.errors import WorkflowError, WorkflowStepError
from openheim.models import ScriptedModel
from openheim.stores import Store
from openheim.workflow import (
    END,
    ApprovalRequested,
    NodeFinished,
    NodeRetrying,
    NodeStarted,
    RunFinished,
    RunStarted,
    TokenDelta,
    Workflow,
)


class Doc(msgspec.Struct):
    text: str = ""
    kind: str = ""
    log: Annotated[list[str], oh.reducer(operator.add)] = msgspec.field(default_factory=list)
    items: list[str] = msgspec.field(default_factory=list)
    summaries: list[str] = msgspec.field(default_factory=list)
    total: int = 0
    answer: str = ""
    looked_up: str = ""
    rounds: int = 0


async def test_sync_and_async_steps_in_a_chain() -> None:
    wf = Workflow("chain", state=Doc)

    @wf.step
    def first(d: Doc) -> dict[str, Any]:
        return {"log": ["first"], "text": d.text + "!"}

    @wf.step
    async def second(d: Doc) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": [f"second saw {d.text}"]}

    @wf.step(thread=True)
    def third(d: Doc) -> None:
        return None

    wf.edge("first", "second")
    wf.edge("second", "third")
    res = await wf.run({"text": "hi"})
    assert res.status == "done"
    assert res.state.log == ["first", "second saw hi!"]
    assert res.usage.steps == 3
    assert res.run_id.startswith("wf-")
    assert wf.run_sync is not None


def test_run_sync() -> None:
    wf = Workflow("sync", state=Doc)
    wf.step(lambda d: {"answer": d.text * 2}, name="double")
    assert wf.run_sync({"text": "ab"}).state.answer == "abab"


async def test_branch_and_conditional_edge() -> None:
    wf = Workflow("triage", state=Doc)

    @wf.step
    def classify(d: Doc) -> dict[str, Any]:
        return {"kind": "bug" if "crash" in d.text else "question"}

    wf.branch("route", lambda d: d.kind, targets={"bug": "fix", "question": "reply"})
    wf.step(lambda d: {"log": ["fix"]}, name="fix")
    wf.step(lambda d: {"log": ["reply"]}, name="reply")
    wf.edge("classify", "route")
    assert (await wf.run({"text": "it crashes"})).state.log == ["fix"]
    assert (await wf.run({"text": "why?"})).state.log == ["reply"]

    # A conditional edge on a step sees the step's own updates.
    wf2 = Workflow("cond", state=Doc)
    wf2.step(lambda d: {"total": 5}, name="count")
    wf2.step(lambda d: {"log": ["big"]}, name="big")
    wf2.edge("count", lambda d: "big" if d.total > 3 else END, targets=["big", END])
    assert (await wf2.run()).state.log == ["big"]


async def test_parallel_branches_run_concurrently_and_join() -> None:
    wf = Workflow("fan", state=Doc)
    left_started = asyncio.Event()
    right_started = asyncio.Event()

    wf.step(lambda d: None, name="start")

    @wf.step
    async def left(d: Doc) -> dict[str, Any]:
        left_started.set()
        await right_started.wait()  # deadlocks unless both run at once
        return {"log": ["left"]}

    @wf.step
    async def right(d: Doc) -> dict[str, Any]:
        right_started.set()
        await left_started.wait()
        return {"log": ["right"]}

    @wf.step
    def after_left(d: Doc) -> dict[str, Any]:
        return {"log": ["after_left"]}

    @wf.step
    def join(d: Doc) -> dict[str, Any]:
        return {"log": [f"join saw {len(d.log)}"]}

    wf.edge("start", "left")
    wf.edge("start", "right")
    wf.edge("left", "after_left")
    wf.edge(("after_left", "right"), "join")
    res = await asyncio.wait_for(wf.run(), 10)
    # Updates merge in frontier order; the join ran once, after both of its sources.
    assert res.state.log == ["left", "right", "after_left", "join saw 3"]


async def test_map_fans_out_and_joins_with_a_reducer() -> None:
    wf = Workflow("map", state=Doc)
    running = 0
    peak = 0

    async def summarize(item: str, d: Doc) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return f"{d.kind}:{item.upper()}"

    wf.step(lambda d: {"kind": "doc"}, name="prep")
    wf.map("summaries", "items", summarize, output="summaries")
    wf.map("lengths", lambda d: d.summaries, len, output="total", reduce=sum)
    wf.edge("prep", "summaries")
    wf.edge("summaries", "lengths")
    res = await wf.run({"items": ["a", "bb", "ccc"]})
    assert res.state.summaries == ["doc:A", "doc:BB", "doc:CCC"]  # item order, not finish order
    assert res.state.total == 5 + 6 + 7
    assert peak == 3


async def test_agent_node_writes_output_counts_tokens_and_streams_deltas() -> None:
    agent = oh.Agent(ScriptedModel(lambda req: "The answer is forty two."), name="writer")
    wf = Workflow("draft", state=Doc)
    wf.agent("draft", agent, prompt=lambda d: f"Answer: {d.text}", output="answer")
    res = await wf.run({"text": "meaning of life"})
    assert res.state.answer == "The answer is forty two."
    assert res.usage.tokens > 0

    events = [ev async for ev in wf.stream({"text": "again"})]
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[1], NodeStarted)
    deltas = [ev.text for ev in events if isinstance(ev, TokenDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "The answer is forty two."
    assert isinstance(events[-2], NodeFinished)
    assert events[-2].updates == {"answer": "The answer is forty two."}
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result.state.answer == "The answer is forty two."


async def test_agent_map_over_items() -> None:
    agent = oh.Agent(ScriptedModel(lambda req: f"summary of {req.messages[-1].content}"))
    wf = Workflow("agents", state=Doc)
    wf.map("summaries", "items", agent, output="summaries")
    res = await wf.run({"items": ["x", "y"]})
    assert res.state.summaries == ["summary of x", "summary of y"]
    assert res.usage.tokens > 0


async def test_tool_node_validates_arguments() -> None:
    @oh.tool
    def lookup(key: str, times: int = 1) -> str:
        """Look a key up."""
        return f"{key}={key * times}"

    wf = Workflow("tool", state=Doc)
    wf.tool("lookup", lookup, args=lambda d: {"key": d.text, "times": "2"}, output="looked_up")
    res = await wf.run({"text": "ab"})
    assert res.state.looked_up == "ab=abab"

    wf2 = Workflow("tool2", state=Doc)
    wf2.tool("lookup", lookup, args=lambda d: {"times": 2}, output="looked_up")
    with pytest.raises(WorkflowStepError, match="node 'lookup'"):
        await wf2.run()


async def test_cycle_under_a_step_limit() -> None:
    wf = Workflow("loop", state=Doc, max_steps=50)
    wf.step(lambda d: {"rounds": d.rounds + 1}, name="work")
    wf.edge("work", lambda d: "work" if d.rounds < 5 else END, targets=["work", END])
    assert (await wf.run()).state.rounds == 5

    forever = Workflow("forever", state=Doc, max_steps=10)
    forever.step(lambda d: {"rounds": d.rounds + 1}, name="work")
    forever.edge("work", "work")
    with pytest.raises(WorkflowError, match="step limit of workflow 'forever' \\(10 supersteps"):
        await forever.run()


async def test_retry_policy_retries_only_the_given_errors() -> None:
    calls = Counter()
    wf = Workflow("retry", state=Doc)

    @wf.step(retry=oh.Retry(attempts=3, backoff=0.0, on=(ConnectionError,)))
    async def flaky(d: Doc) -> dict[str, Any]:
        calls.hit("flaky")
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return {"answer": "ok"}

    events = [ev async for ev in wf.stream()]
    assert calls["flaky"] == 3
    assert [ev.attempt for ev in events if isinstance(ev, NodeRetrying)] == [1, 2]
    assert events[-1].result.state.answer == "ok"

    wf2 = Workflow("noretry", state=Doc)

    @wf2.step(retry=oh.Retry(attempts=5, backoff=0.0, on=(ConnectionError,)))
    def broken(d: Doc) -> None:
        calls.hit("broken")
        raise ValueError("a bug, not a hiccup")

    with pytest.raises(WorkflowStepError, match="failed after 1 attempt") as err:
        await wf2.run()
    assert isinstance(err.value.__cause__, ValueError)
    assert calls["broken"] == 1


async def test_node_timeout_and_run_timeout() -> None:
    wf = Workflow("slow", state=Doc)

    @wf.step(timeout=0.05, retry=oh.Retry(attempts=2, backoff=0.0))
    async def slow(d: Doc) -> None:
        await asyncio.sleep(10)

    with pytest.raises(WorkflowStepError, match=r"failed after 2 attempt.*longer than 0\.05s"):
        await wf.run()

    wf2 = Workflow("slowrun", state=Doc, timeout=0.05)

    @wf2.step
    async def sleepy(d: Doc) -> None:
        await asyncio.sleep(10)

    with pytest.raises(oh.errors.WorkflowTimeout, match=r"longer than its timeout of 0\.05s"):
        await wf2.run()


async def test_approval_without_a_store_waits_in_process() -> None:
    calls = Counter()
    wf = Workflow("approve", state=Doc)
    wf.step(lambda d: calls.hit("before") or {"text": "draft"}, name="before")
    wf.approval("review", payload=lambda d: {"draft": d.text}, on_reject="redo")
    wf.step(lambda d: calls.hit("publish") or {"log": ["published"]}, name="publish")
    wf.step(lambda d: {"log": ["redo"]}, name="redo")
    wf.edge("before", "review")
    wf.edge("review", "publish")
    events = [ev async for ev in wf.stream()]
    asked = [ev for ev in events if isinstance(ev, ApprovalRequested)]
    assert len(asked) == 1
    assert asked[0].approval.payload == {"draft": "draft"}
    res = events[-1].result
    assert res.status == "waiting"
    assert [p.id for p in await wf.approvals()] == [asked[0].approval.id]
    done = await wf.approve(asked[0].approval.id, True, by="ann")
    assert done is not None
    assert done.status == "done"
    assert done.state.log == ["published"]
    assert calls.counts == {"before": 1, "publish": 1}
    assert await wf.approvals() == []


class Inner(msgspec.Struct):
    topic: str = ""
    notes: list[str] = msgspec.field(default_factory=list)


async def test_subworkflow() -> None:
    research = Workflow("research", state=Inner)
    research.step(lambda s: {"notes": [f"fact about {s.topic}"]}, name="search")
    research.step(lambda s: {"notes": [*s.notes, "checked"]}, name="check")
    research.edge("search", "check")

    wf = Workflow("outer", state=Doc)
    wf.subworkflow(
        "research",
        research,
        input=lambda d: {"topic": d.text},
        output=lambda inner: {"summaries": inner.notes},
    )
    wf.step(lambda d: {"total": len(d.summaries)}, name="count")
    wf.edge("research", "count")
    res = await wf.run({"text": "owls"})
    assert res.state.summaries == ["fact about owls", "checked"]
    assert res.state.total == 2


async def test_subworkflow_with_an_approval_in_a_store(store: Store) -> None:
    calls = Counter()
    inner = Workflow("inner", state=Inner)
    inner.step(lambda s: calls.hit("inner-search") or {"notes": ["n1"]}, name="search")
    inner.approval("ok")
    inner.step(lambda s: calls.hit("inner-after") or {"notes": [*s.notes, "n2"]}, name="after")
    inner.edge("search", "ok")
    inner.edge("ok", "after")

    wf = Workflow("outer", state=Doc, store=store)
    wf.step(lambda d: calls.hit("outer-before") or None, name="before")
    wf.subworkflow(
        "sub", inner, input=lambda d: {"topic": "t"}, output=lambda s: {"summaries": s.notes}
    )
    wf.edge("before", "sub")
    res = await wf.run()
    assert res.status == "waiting"
    pending = await wf.approvals()
    assert len(pending) == 1
    assert pending[0].root == res.run_id
    assert pending[0].run_id != res.run_id  # the child run asked
    done = await wf.approve(pending[0].id, True)
    assert done is not None
    assert done.status == "done"
    assert done.state.summaries == ["n1", "n2"]
    assert calls.counts == {"outer-before": 1, "inner-search": 1, "inner-after": 1}


async def test_stream_early_exit_cancels_the_run() -> None:
    wf = Workflow("s", state=Doc)
    finished = Counter()

    @wf.step
    async def a(d: Doc) -> None:
        await asyncio.sleep(0)

    @wf.step
    async def b(d: Doc) -> None:
        await asyncio.sleep(5)
        finished.hit("b")

    wf.edge("a", "b")
    async for ev in wf.stream():
        if isinstance(ev, NodeStarted) and ev.node == "b":
            break
    await asyncio.sleep(0.01)
    assert finished["b"] == 0
    assert wf._live == {}


async def test_condition_returning_an_unknown_node_fails_clearly() -> None:
    wf = Workflow("free", state=Doc)
    wf.step(lambda d: None, name="a")
    wf.edge("a", lambda d: "nowhere")
    with pytest.raises(oh.errors.WorkflowStateError, match="'nowhere', which is not a node"):
        await wf.run()


async def test_map_items_retry_by_themselves() -> None:
    calls = Counter()

    def flaky(item: str) -> str:
        calls.hit(item)
        if item == "b" and calls["b"] < 2:
            raise ConnectionError("hiccup")
        return item * 2

    wf = Workflow("mapretry", state=Doc)
    wf.map("m", "items", flaky, output="summaries", retry=oh.Retry(attempts=2, backoff=0))
    res = await wf.run({"items": ["a", "b", "c"]})
    assert res.state.summaries == ["aa", "bb", "cc"]
    assert calls.counts == {"a": 1, "b": 2, "c": 1}


def test_run_sync_twice_with_a_store_url(tmp_path: Any) -> None:
    wf = Workflow("twice", state=Doc, store=f"sqlite://{tmp_path}/s.db")
    wf.step(lambda d: {"total": d.total + 1}, name="inc")
    first = wf.run_sync({"total": 1})
    second = wf.run_sync({"total": 5})
    assert (first.state.total, second.state.total) == (2, 6)
    assert asyncio.run(wf.history(first.run_id))[1].changed == {"total": 2}


class Opaque:
    """Not data."""


async def test_values_that_cannot_be_stored_fail_the_run_clearly(store: Store) -> None:
    class Loose(msgspec.Struct):
        blob: Any = None

    wf = Workflow("loose", state=Loose, store=store)
    wf.step(lambda s: {"blob": Opaque()}, name="a")
    with pytest.raises(oh.errors.WorkflowStateError, match="cannot be stored"):
        await wf.run()
