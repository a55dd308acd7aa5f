"""Spans of a workflow run (invoke_workflow > step > invoke_agent) and of actor messages."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from telhelpers import Spans

import openheim as oh
from openheim import telemetry
from openheim.errors import WorkflowStepError
from openheim.models import ScriptedModel
from openheim.runtime import ActorContext, Runtime
from openheim.workflow import Workflow


class Doc(msgspec.Struct):
    text: str = ""
    answer: str = ""
    done: bool = False


def pipeline() -> Workflow:
    wf = Workflow("pipeline", state=Doc)

    @wf.step
    def prepare(d: Doc) -> dict[str, Any]:
        return {"text": d.text.upper()}

    agent = oh.Agent(ScriptedModel(["ANSWERED"], name="wf-model"), name="writer")
    wf.agent("draft", agent, prompt=lambda d: d.text, output="answer")

    @wf.step
    async def finish(d: Doc) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"done": True}

    wf.edge("prepare", "draft")
    wf.edge("draft", "finish")
    return wf


async def test_workflow_run_tree(spans: Spans) -> None:
    res = await pipeline().run({"text": "hi"})
    assert res.state.answer == "ANSWERED"
    run = spans.one("invoke_workflow pipeline")
    a = dict(run.attributes or {})
    assert a["gen_ai.operation.name"] == "invoke_workflow"
    assert a["gen_ai.workflow.name"] == "pipeline"
    assert a["openheim.run.id"] == res.run_id
    assert a["openheim.run.status"] == "done"
    steps = {name: spans.one(f"step {name}") for name in ("prepare", "draft", "finish")}
    for span in steps.values():
        assert spans.is_child(span, run)
    draft = dict(steps["draft"].attributes or {})
    assert draft["openheim.step.kind"] == "agent"
    assert draft["openheim.workflow.name"] == "pipeline"
    assert steps["prepare"].end_time <= steps["draft"].start_time
    assert steps["draft"].end_time <= steps["finish"].start_time
    agent = spans.one("invoke_agent writer")
    assert spans.is_child(agent, steps["draft"])
    assert spans.is_child(spans.one("chat wf-model"), agent)


async def test_a_failing_step_fails_its_span_and_the_run(spans: Spans) -> None:
    wf = Workflow("fragile", state=Doc)

    @wf.step
    def explode(d: Doc) -> None:
        raise ValueError("boom")

    with pytest.raises(WorkflowStepError):
        await wf.run({})
    step = spans.one("step explode")
    run = spans.one("invoke_workflow fragile")
    assert (step.attributes or {})["error.type"] == "WorkflowStepError"
    assert not run.status.is_ok
    assert (run.attributes or {})["openheim.run.status"] == "failed"


async def test_use_traceparent_joins_a_remote_trace(spans: Spans) -> None:
    with spans.tracer().start_as_current_span("producer"):
        tp = telemetry.inject()
    assert tp is not None
    assert telemetry.inject() is None  # outside any span
    with telemetry.use_traceparent(tp):
        await pipeline().run({"text": "x"})
    run = spans.one("invoke_workflow pipeline")
    assert spans.is_child(run, spans.one("producer"))
    # Malformed or missing context is ignored (a new trace starts).
    assert telemetry.extract("not-a-traceparent") is None
    assert telemetry.extract(None) is None
    with telemetry.use_traceparent("00-zz-yy-01"):
        pass


async def test_actor_messages_carry_the_senders_trace(spans: Spans) -> None:
    async def double(msg: int, ctx: ActorContext) -> int:
        await asyncio.sleep(0)
        return msg * 2

    def remember(msg: str, ctx: ActorContext) -> None:
        ctx.state = msg

    async with Runtime() as rt:
        ref = rt.spawn(double, id="math/double")
        sync = rt.spawn(remember, id="memo")
        with spans.tracer().start_as_current_span("caller"):
            assert await ref.ask(21) == 42
            sync.send("note")
            await rt.wait_idle()
        assert await ref.ask(2) == 4  # outside any span: a trace of its own
    caller = spans.one("caller")
    processed = spans.named("process actor")
    assert len(processed) == 3
    first, memo, second = sorted(processed, key=lambda s: s.start_time or 0)
    assert spans.is_child(first, caller)
    assert spans.is_child(memo, caller)
    assert first.kind.name == "CONSUMER"
    a = dict(first.attributes or {})
    assert a["openheim.actor.id"] == "math/double"
    assert a["openheim.actor.ask"] is True
    assert a["openheim.message.type"] == "int"
    assert (memo.attributes or {})["openheim.actor.ask"] is False
    assert second.parent is None


async def test_an_agent_actor_nests_its_run_under_the_message(spans: Spans) -> None:
    agent = oh.Agent(ScriptedModel(["hello"], name="actor-model"), name="greeter")
    async with Runtime() as rt:
        rt.register("greeter", lambda _id: agent)
        ref = rt.ref("greeter/alice")
        result = await ref.ask("hi")
    assert result.output == "hello"
    message = spans.one("process greeter")
    run = spans.one("invoke_agent greeter")
    assert spans.is_child(run, message)
    assert (message.attributes or {})["messaging.destination.name"] == "greeter"


async def test_a_runtime_started_without_tracing_sends_plain_messages() -> None:
    seen: list[Any] = []

    async def keep(msg: Any, ctx: ActorContext) -> None:
        seen.append(msg)

    async with Runtime() as rt:
        assert rt._traced is False
        ref = rt.spawn(keep)
        ref.send("plain")
        await rt.wait_idle()
    assert seen == ["plain"]


async def test_traced_mailboxes_keep_their_overflow_rules(spans: Spans) -> None:
    from openheim.errors import MessageDropped

    gate = asyncio.Event()
    handled: list[Any] = []

    async def slow(msg: Any, ctx: ActorContext) -> Any:
        if msg == 1:
            await gate.wait()
        handled.append(msg)
        return msg

    async with Runtime() as rt:
        assert rt._traced is True
        ref = rt.spawn(slow, mailbox_size=2, overflow="drop_oldest")
        ref.send(1)
        await asyncio.sleep(0.01)  # 1 is being handled (blocked); the mailbox is empty
        ref.send(2)
        ref.send(3)  # the mailbox is full
        asked = asyncio.ensure_future(ref.ask(4))  # spilled
        await asyncio.sleep(0)
        ref.send(5)
        ref.send(6)  # every queued message is to be skipped: the spilled ask is dropped
        with pytest.raises(MessageDropped, match="overflowed"):
            await asyncio.wait_for(asked, 5)
        gate.set()
        await rt.wait_idle()
        assert handled == [1, 5, 6]
    assert len(spans.named("process actor")) >= 3
