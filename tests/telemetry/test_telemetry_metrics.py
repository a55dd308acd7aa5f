"""Prometheus metrics in-process: serve_metrics on a port, queues, actors, checkpoints, workflows."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

import openheim as oh
from openheim import telemetry
from openheim.errors import ConfigError, WorkflowStepError
from openheim.messages import ToolCall
from openheim.models import ScriptedModel
from openheim.runtime import ActorContext, Runtime
from openheim.stores.checkpoint import Checkpointer
from openheim.stores.memory import MemoryStore
from openheim.telemetry._metrics import Metrics
from openheim.workflow import Workflow
from openheim.workflow.queues import QueueStats


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(name: str, **labels: str) -> float:
    return samples(telemetry.render_metrics().decode()).get(
        (name, tuple(sorted(labels.items()))), 0.0
    )


@oh.tool
def add(a: int, b: int) -> int:
    """Add."""
    return a + b


async def test_serve_metrics_on_a_port_of_its_own(metrics: Metrics) -> None:
    server = telemetry.serve_metrics(0, "127.0.0.1")
    try:
        agent = oh.Agent(
            ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"], name="m"), tools=[add]
        )
        await agent.run("1+2")
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{server.port}/metrics")
        assert r.status_code == 200
        got = samples(r.text)
        labels = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "scripted",
            "gen_ai_request_model": "m",
        }
        key = tuple(sorted({**labels, "gen_ai_token_type": "input"}.items()))
        assert got[("gen_ai_client_token_usage_count", key)] == 2
        assert got[("openheim_tool_calls_total", (("outcome", "ok"), ("tool", "add")))] == 1
        assert got[("openheim_agent_runs_total", (("agent", "agent"), ("status", "final")))] == 1
    finally:
        server.close()
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


def test_serve_metrics_rejects_a_bad_port(metrics: Metrics) -> None:
    with pytest.raises(ConfigError, match="metrics port must be an integer"):
        telemetry.serve_metrics(70000)
    first = telemetry.serve_metrics(0, "127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="choose another --metrics-port"):
            telemetry.serve_metrics(first.port, "127.0.0.1")
    finally:
        first.close()


def test_queue_gauges(metrics: Metrics) -> None:
    telemetry.record_queue("jobs", QueueStats(depth=7, in_flight=2, redeliveries=3, dead_letters=1))
    assert get("openheim_queue_depth", queue="jobs") == 7
    assert get("openheim_queue_in_flight", queue="jobs") == 2
    assert get("openheim_queue_redeliveries", queue="jobs") == 3
    assert get("openheim_queue_dead_letters", queue="jobs") == 1
    telemetry.record_queue("jobs", QueueStats(depth=0, in_flight=0, redeliveries=3, dead_letters=1))
    assert get("openheim_queue_depth", queue="jobs") == 0


def test_everything_is_off_until_enabled() -> None:
    from openheim.telemetry import _metrics

    _metrics.disable_metrics()
    telemetry.record_queue("jobs", QueueStats(depth=7, in_flight=0, redeliveries=0, dead_letters=0))
    telemetry.record_checkpoint(10, 0.1)
    assert telemetry.render_metrics() == b""
    assert not telemetry.metrics_enabled()


async def test_actor_gauges_are_read_when_scraped(metrics: Metrics) -> None:
    gate = asyncio.Event()

    async def slow(msg: Any, ctx: ActorContext) -> None:
        await gate.wait()

    async with Runtime(namespace="metrics-rt", max_live_actors=2) as rt:

        def make(_id: str) -> Any:
            async def noop(msg: Any, ctx: ActorContext) -> None:
                ctx.state = {"seen": msg}

            return noop

        rt.register("v", make)
        ref = rt.spawn(slow, id="blocked")
        for i in range(4):
            ref.send(i)
        await asyncio.sleep(0)
        assert get("openheim_actor_mailbox_depth", ns="metrics-rt") >= 3
        for i in range(4):
            await rt.ref(f"v/{i}").ask(i)
        assert get("openheim_actors_live", ns="metrics-rt") == len(rt.live())
        assert get("openheim_actors_passivated_total", ns="metrics-rt") >= 2
        gate.set()
        await rt.wait_idle()
        assert get("openheim_actor_mailbox_depth", ns="metrics-rt") == 0


async def test_checkpoint_size_and_latency(metrics: Metrics) -> None:
    agent = oh.Agent(
        ScriptedModel([ToolCall("add", {"a": 1, "b": 2}), "3"]),
        tools=[add],
        checkpointer=Checkpointer(MemoryStore()),
    )
    await agent.run("1+2")
    writes = get("openheim_checkpoint_bytes_count", kind="agent")
    assert writes >= 3  # start, after the model's tool call, after the tool result
    assert get("openheim_checkpoint_bytes_sum", kind="agent") > 0
    assert get("openheim_checkpoint_seconds_count", kind="agent") == writes


class S(msgspec.Struct):
    n: int = 0


async def test_workflow_runs_steps_and_errors(metrics: Metrics) -> None:
    wf = Workflow("counted", state=S)

    @wf.step
    def one(s: S) -> dict[str, Any]:
        return {"n": s.n + 1}

    @wf.step
    def two(s: S) -> dict[str, Any]:
        return {"n": s.n + 1}

    wf.edge("one", "two")
    await wf.run({})
    await wf.run({})
    assert get("openheim_checkpoint_bytes_count", kind="workflow") == 0  # no store: no records
    durable = Workflow("durable", state=S, store=MemoryStore())

    @durable.step
    def only(s: S) -> dict[str, Any]:
        return {"n": 1}

    await durable.run({})
    assert get("openheim_checkpoint_bytes_count", kind="workflow") >= 2  # started, the step, ended
    assert get("openheim_checkpoint_seconds_count", kind="workflow") >= 2
    assert get("openheim_workflow_runs_total", workflow="counted", status="done") == 2
    assert get("openheim_workflow_steps_total", workflow="counted", outcome="ok") == 4

    bad = Workflow("bad", state=S)

    @bad.step
    def fail(s: S) -> None:
        raise KeyError("x")

    with pytest.raises(WorkflowStepError):
        await bad.run({})
    assert get("openheim_workflow_runs_total", workflow="bad", status="failed") == 1
    assert get("openheim_workflow_steps_total", workflow="bad", outcome="error") == 1
    assert get("openheim_errors_total", type="WorkflowStepError", where="step") == 1


async def test_model_errors_are_counted_by_type(metrics: Metrics) -> None:
    with pytest.raises(oh.errors.ModelError):
        await oh.Agent(ScriptedModel([], name="empty")).run("hi")
    assert get("openheim_errors_total", type="ModelError", where="model") == 1
    assert get("openheim_errors_total", type="ModelError", where="agent") == 1
    assert get("openheim_agent_runs_total", agent="agent", status="error") == 1
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "scripted",
        "gen_ai_request_model": "empty",
        "error_type": "ModelError",
    }
    assert get("gen_ai_client_operation_duration_seconds_count", **labels) == 1
