"""A client's trace continues into the server (W3C ``traceparent`` over HTTP and gRPC), and
a workflow's tool nodes and map items each get an ``execute_tool`` span.

The server is real: uvicorn on a loopback port and a grpc.aio server, both on the
test's event loop, so their spans reach the test's in-memory exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from telhelpers import Spans
from teltools import Order, lookup, shout

from openheim import telemetry
from openheim.config import load_config
from openheim.errors import WorkflowStepError
from openheim.server import openheim_pb2 as pb
from openheim.server import openheim_pb2_grpc as pb_grpc
from openheim.server._app import create_app
from openheim.server._grpc import start_grpc
from openheim.testing.serve import free_port
from openheim.workflow import Worker, Workflow
from openheim.workflow._batch import Batch

REDIS_URL = os.environ.get("OPENHEIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

CONFIG = """\
[agents.tel]
model = "teltools:model"
tools = ["teltools:lookup"]

[store]
url = "memory://"

[workflows.orders]
state = "teltools:Order"
edges = [["find", "each"]]

[[workflows.orders.nodes]]
name = "find"
tool = "teltools:lookup"
args = "teltools:order_args"
output = "found"

[[workflows.orders.nodes]]
name = "each"
map = { over = "keys", do = "teltools:lookup", output = "upper" }
"""

STATE = "vendor=abc,other=1"


class Server:
    def __init__(self, url: str, grpc_target: str) -> None:
        self.url = url
        self.grpc_target = grpc_target


@contextlib.asynccontextmanager
async def serving(folder: Path) -> AsyncIterator[Server]:
    """The app of ``CONFIG`` on uvicorn and gRPC (loopback, free ports, no API keys)."""
    config = folder / "openheim.toml"
    config.write_text(CONFIG, encoding="utf-8")
    app = create_app(load_config(config))
    port, gport = free_port(), free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_level="error", access_log=False
        )
    )
    task = asyncio.create_task(server.serve())
    grpc_server = await start_grpc(app.state, "127.0.0.1", gport)
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{gport}")
    finally:
        await grpc_server.stop(None)
        server.should_exit = True
        await task


def client_span(spans: Spans) -> tuple[Any, dict[str, str]]:
    """A client span (ended) and the headers that carry it."""
    span = spans.tracer().start_span("client call", kind=trace.SpanKind.CLIENT)
    with trace.use_span(span, end_on_exit=True):
        tp = telemetry.inject()
    assert tp is not None
    return span, {"traceparent": tp, "tracestate": STATE}


def child_of(spans: Spans, name: str, parent: Any) -> ReadableSpan:
    got = spans.one(name)
    assert got.parent is not None, f"{name} has no parent: a new trace was started"
    assert got.parent.span_id == parent.get_span_context().span_id
    assert got.context is not None
    assert got.context.trace_id == parent.get_span_context().trace_id
    return got


async def test_http_agent_run_continues_the_callers_trace(spans: Spans, tmp_path: Path) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.url, timeout=30) as c:
        parent, headers = client_span(spans)
        r = await c.post("/v1/agents/tel/runs", json={"input": "lookup k"}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["output"] == "tool said: K"
    run = child_of(spans, "invoke_agent tel", parent)
    assert run.parent is not None
    assert run.parent.is_remote
    assert run.parent.trace_state.get("vendor") == "abc"  # tracestate travels with it
    assert spans.is_child(spans.one("execute_tool lookup"), run)


async def test_http_streamed_run_continues_the_callers_trace(spans: Spans, tmp_path: Path) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.url, timeout=30) as c:
        parent, headers = client_span(spans)
        body = {"input": "hello", "stream": True}
        async with c.stream("POST", "/v1/agents/tel/runs", json=body, headers=headers) as r:
            assert r.status_code == 200
            text = "".join([chunk async for chunk in r.aiter_text()])
        assert "echo: hello" in text
    child_of(spans, "invoke_agent tel", parent)


async def test_http_workflow_run_continues_the_callers_trace(spans: Spans, tmp_path: Path) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.url, timeout=30) as c:
        parent, headers = client_span(spans)
        body = {"input": {"key": "k", "keys": ["a", "b"]}, "wait": True}
        r = await c.post("/v1/workflows/orders/runs", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["state"]["upper"] == ["A", "B"]
    run = child_of(spans, "invoke_workflow orders", parent)
    find, each = spans.one("step find"), spans.one("step each")
    assert spans.is_child(find, run)
    assert spans.is_child(each, run)
    tools = spans.named("execute_tool lookup")
    assert len(tools) == 3  # the tool node, then one per map item
    assert [spans.is_child(t, find) for t in tools].count(True) == 1
    assert [spans.is_child(t, each) for t in tools].count(True) == 2


async def test_no_or_malformed_traceparent_starts_a_trace_of_its_own(
    spans: Spans, tmp_path: Path
) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.url, timeout=30) as c:
        r = await c.post("/v1/agents/tel/runs", json={"input": "a"})
        assert r.status_code == 200
        r = await c.post(
            "/v1/agents/tel/runs", json={"input": "b"}, headers={"traceparent": "00-zz-yy-01"}
        )
        assert r.status_code == 200
    runs = spans.named("invoke_agent tel")
    assert len(runs) == 2
    assert all(run.parent is None for run in runs)
    assert runs[0].context is not None
    assert runs[1].context is not None
    assert runs[0].context.trace_id != runs[1].context.trace_id


async def test_grpc_calls_continue_the_callers_trace(spans: Spans, tmp_path: Path) -> None:
    async with serving(tmp_path) as s, grpc.aio.insecure_channel(s.grpc_target) as channel:
        stub = pb_grpc.OpenheimStub(channel)  # type: ignore[no-untyped-call]
        parent, headers = client_span(spans)
        metadata = tuple(headers.items())
        call = stub.RunAgent(pb.RunAgentRequest(agent="tel", input="lookup q"), metadata=metadata)
        kinds = [event.type async for event in call]
        assert kinds[-1] == "done", kinds
        run = child_of(spans, "invoke_agent tel", parent)
        assert run.parent is not None
        assert run.parent.trace_state.get("other") == "1"

        wf_parent, headers = client_span(spans)
        req = pb.SubmitWorkflowRequest(
            workflow="orders", input=json.dumps({"key": "z", "keys": ["x"]}), wait=True
        )
        done = await stub.SubmitWorkflow(req, metadata=tuple(headers.items()))
        assert done.status == "done"
        assert json.loads(done.state)["found"] == "Z"
    child_of(spans, "invoke_workflow orders", wf_parent)


async def test_grpc_without_traceparent_is_a_trace_of_its_own(spans: Spans, tmp_path: Path) -> None:
    async with serving(tmp_path) as s, grpc.aio.insecure_channel(s.grpc_target) as channel:
        stub = pb_grpc.OpenheimStub(channel)  # type: ignore[no-untyped-call]
        events = [e async for e in stub.RunAgent(pb.RunAgentRequest(agent="tel", input="hi"))]
        assert events[-1].type == "done"
    assert spans.one("invoke_agent tel").parent is None


async def test_remote_parent_yields_to_a_current_span(spans: Spans) -> None:
    _, headers = client_span(spans)
    tp = headers["traceparent"]
    assert telemetry.remote_parent(tp) is not None
    assert telemetry.remote_parent(None) is None
    assert telemetry.remote_parent("garbage") is None
    # An instrumentation in front of the server made its own span current: keep it.
    with spans.tracer().start_as_current_span("asgi server span"):
        assert telemetry.remote_parent(tp) is None
    telemetry.configure(tracing=False)
    try:
        assert telemetry.remote_parent(tp) is None  # openheim does not trace
    finally:
        telemetry.configure(tracing=True)


# ---- tool nodes and map items ------------------------------------------------------------


def tools_flow() -> Workflow:
    wf = Workflow("tooling", state=Order)
    wf.tool("find", lookup, args=lambda o: {"key": o.key}, output="found")
    wf.map("each", "keys", lookup, output="upper")  # a sync @oh.tool per item
    wf.map("loud", "keys", shout, output="keys")  # an async one
    wf.edge("find", "each")
    wf.edge("each", "loud")
    return wf


async def test_tool_node_and_map_items_have_execute_tool_spans(spans: Spans) -> None:
    telemetry.configure(capture_content=True)
    res = await tools_flow().run(Order(key="k", keys=["a", "b"]))
    assert res.state.found == "K"
    assert res.state.upper == ["A", "B"]
    assert res.state.keys == ["A!", "B!"]
    run = spans.one("invoke_workflow tooling")
    find, each, loud = spans.one("step find"), spans.one("step each"), spans.one("step loud")
    assert all(spans.is_child(s, run) for s in (find, each, loud))

    node = [t for t in spans.named("execute_tool lookup") if spans.is_child(t, find)]
    assert len(node) == 1
    a = dict(node[0].attributes or {})
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "lookup"
    assert a["gen_ai.tool.description"] == "Look a key up."
    # The call id is the step's idempotency key: run / superstep:node / attempt.
    assert str(a["gen_ai.tool.call.id"]).startswith(f"{res.run_id}/")
    assert str(a["gen_ai.tool.call.id"]).endswith(":find/1")
    assert json.loads(str(a["gen_ai.tool.call.arguments"])) == {"key": "k"}
    assert a["gen_ai.tool.call.result"] == "K"

    items = [t for t in spans.named("execute_tool lookup") if spans.is_child(t, each)]
    ids = sorted(str((t.attributes or {})["gen_ai.tool.call.id"]) for t in items)
    assert [i.rsplit("#", 1)[1] for i in ids] == ["0/1", "1/1"]
    results = sorted(str((t.attributes or {})["gen_ai.tool.call.result"]) for t in items)
    assert results == ["A", "B"]
    shouted = spans.named("execute_tool shout")
    assert len(shouted) == 2
    assert all(spans.is_child(t, loud) for t in shouted)


async def test_a_failing_map_item_tool_fails_its_span(spans: Spans) -> None:
    wf = Workflow("failing", state=Order)
    wf.map("each", "keys", shout, output="upper")
    with pytest.raises(WorkflowStepError):
        await wf.run(Order(keys=["ok", "boom"]))
    tools = spans.named("execute_tool shout")
    assert len(tools) == 2
    failed = [t for t in tools if not t.status.is_ok]
    assert len(failed) == 1
    assert (failed[0].attributes or {})["error.type"] == "ValueError"


async def test_tool_nodes_are_not_wrapped_without_tracing() -> None:
    # No provider: the values are the same and nothing is recorded (no spans fixture).
    assert not telemetry.tracing()
    res = await tools_flow().run(Order(key="k", keys=["a"]))
    assert (res.state.found, res.state.upper, res.state.keys) == ("K", ["A"], ["A!"])


@pytest.mark.redis
async def test_a_batch_run_continues_the_submitters_trace_in_the_worker(spans: Spans) -> None:
    name = f"tel{uuid.uuid4().hex[:10]}"
    wf = tools_flow()
    worker = Worker([wf], REDIS_URL, queue_name=name, visibility_timeout=10)
    running = asyncio.ensure_future(worker.run(drain_timeout=5))
    try:
        with spans.tracer().start_as_current_span("submitter") as parent:
            h = await wf.submit(
                {"key": "k", "keys": ["a", "b"]}, queue=REDIS_URL, queue_name=name, namespace=name
            )
        res = await h.result(timeout=30)
        assert res.status == "done"
        assert res.state.upper == ["A", "B"]
    finally:
        worker.stop()
        await running
        await worker.aclose()
        b = Batch(REDIS_URL, queue_name=name)
        await b.queue.purge()
        await b.store.delete_log("wfend/" + name)
        store = b.store.namespace(name)
        for key in await store.list():
            await store.delete(key)
        for log in await store.list_logs():
            await store.delete_log(log)
        await b.aclose()
        await wf.aclose()
        with warnings.catch_warnings():  # connections redis-py drops on a cancelled read
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    steps = [s for s in spans.all() if s.name.startswith("step ")]
    # find, each (two items, then the join), loud (two items, then the join)
    assert {s.name for s in steps} == {"step find", "step each", "step loud"}
    ctx = parent.get_span_context()
    for s in steps:
        assert s.parent is not None
        assert s.parent.span_id == ctx.span_id, s.name  # the worker joined the trace
        assert s.context is not None
        assert s.context.trace_id == ctx.trace_id
    tools = spans.named("execute_tool lookup") + spans.named("execute_tool shout")
    assert len(tools) == 5  # the tool node and four map items, each inside its task's span
    step_ids = {s.context.span_id for s in steps if s.context is not None}
    assert all(t.parent is not None and t.parent.span_id in step_ids for t in tools)
    items = [s for s in steps if "#" in str((s.attributes or {})["openheim.step.task"])]
    assert len(items) == 4
