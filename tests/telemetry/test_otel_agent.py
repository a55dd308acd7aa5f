"""Spans of an agent run: invoke_agent > chat, execute_tool (GenAI semantic conventions)."""

from __future__ import annotations

import json

import pytest
from telhelpers import Spans

import openheim as oh
from openheim import telemetry
from openheim.messages import ToolCall
from openheim.models import ScriptedModel


@oh.tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@oh.tool
def broken(x: int) -> int:
    """Always fails."""
    raise RuntimeError("no luck")


def calc(script: list[object], *tools: object) -> oh.Agent:
    return oh.Agent(
        ScriptedModel(script, name="calc-model"),
        name="calc",
        instructions="You add.",
        tools=list(tools) or [add],
    )


def check_run_tree(spans: Spans, session: str | None) -> None:
    agent = spans.one("invoke_agent calc")
    chats = spans.named("chat calc-model")
    tool = spans.one("execute_tool add")
    assert len(chats) == 2
    for child in [*chats, tool]:
        assert spans.is_child(child, agent), child.name
    a = dict(agent.attributes or {})
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "calc"
    assert a["gen_ai.provider.name"] == "scripted"
    assert a["gen_ai.request.model"] == "calc-model"
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["openheim.run.status"] == "final"
    assert (a.get("gen_ai.conversation.id")) == session
    first = dict(chats[0].attributes or {})
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.provider.name"] == "scripted"
    assert first["gen_ai.request.model"] == "calc-model"
    assert first["gen_ai.usage.input_tokens"] > 0
    assert first["gen_ai.usage.output_tokens"] > 0
    assert first["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert first.get("gen_ai.conversation.id") == session
    assert chats[0].kind.name == "CLIENT"
    t = dict(tool.attributes or {})
    assert t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.name"] == "add"
    assert t["gen_ai.tool.call.id"] == "call_1"
    assert t["gen_ai.tool.description"] == "Add two numbers."
    assert tool.status.is_ok
    # The tool ran between the two model calls.
    assert chats[0].end_time <= tool.start_time <= tool.end_time <= chats[1].start_time
    # Content is not captured unless asked for.
    for span in spans.all():
        keys = set(span.attributes or {})
        assert not keys & {"gen_ai.input.messages", "gen_ai.output.messages"}
        assert "gen_ai.tool.call.arguments" not in keys


async def test_run_with_a_tool_call(spans: Spans) -> None:
    agent = calc([ToolCall("add", {"a": 2, "b": 3}, "call_1"), "5"])
    result = await agent.run("2+3?", session="s-42")
    assert result.output == "5"
    check_run_tree(spans, "s-42")


async def test_streamed_run_has_the_same_tree(spans: Spans) -> None:
    agent = calc([ToolCall("add", {"a": 2, "b": 3}, "call_1"), "the answer is 5"])
    texts = []
    async for event in agent.stream("2+3?"):
        if isinstance(event, oh.TextDelta):
            texts.append(event.text)
    assert "".join(texts) == "the answer is 5"
    check_run_tree(spans, None)


async def test_run_inside_an_application_span_joins_its_trace(spans: Spans) -> None:
    agent = calc([ToolCall("add", {"a": 1, "b": 1}, "call_1"), "2"])
    with spans.tracer().start_as_current_span("request") as outer:
        tp = telemetry.inject()
        await agent.run("1+1?")
    assert tp is not None
    assert f"{outer.get_span_context().trace_id:032x}" in tp
    request = spans.one("request")
    assert spans.is_child(spans.one("invoke_agent calc"), request)


async def test_a_failing_tool_marks_its_span(spans: Spans) -> None:
    agent = calc([ToolCall("broken", {"x": 1}, "call_1"), "sorry"], broken)
    await agent.run("go")
    tool = spans.one("execute_tool broken")
    assert not tool.status.is_ok
    assert (tool.attributes or {})["error.type"] == "tool_error"


async def test_a_failed_run_records_the_error(spans: Spans) -> None:
    agent = calc([])  # the script is empty: the model call fails
    with pytest.raises(oh.errors.ModelError):
        await agent.run("hi")
    run = spans.one("invoke_agent calc")
    chat = spans.one("chat calc-model")
    for span in (run, chat):
        assert not span.status.is_ok
        assert (span.attributes or {})["error.type"] == "ModelError"
        assert any(e.name == "exception" for e in span.events)
    assert (run.attributes or {})["openheim.run.status"] == "error"


async def test_content_is_captured_when_the_env_var_opts_in(
    spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    agent = calc([ToolCall("add", {"a": 2, "b": 3}, "call_1"), "5"])
    await agent.run("what is 2+3?")
    first, second = spans.named("chat calc-model")
    a = dict(first.attributes or {})
    assert json.loads(str(a["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "You add."}
    ]
    assert json.loads(str(a["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "what is 2+3?"}]}
    ]
    out = json.loads(str(a["gen_ai.output.messages"]))
    assert out[0]["parts"][0] == {
        "type": "tool_call",
        "id": "call_1",
        "name": "add",
        "arguments": {"a": 2, "b": 3},
    }
    assert out[0]["finish_reason"] == "tool_calls"
    later = json.loads(str((second.attributes or {})["gen_ai.input.messages"]))
    assert later[-1] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "call_1", "response": "5"}],
    }
    tool = dict(spans.one("execute_tool add").attributes or {})
    assert json.loads(str(tool["gen_ai.tool.call.arguments"])) == {"a": 2, "b": 3}
    assert tool["gen_ai.tool.call.result"] == "5"


async def test_content_capture_by_setting_and_off_again(spans: Spans) -> None:
    telemetry.configure(capture_content=True)
    await calc(["hello there"]).run("hi")
    out = (spans.one("chat calc-model").attributes or {})["gen_ai.output.messages"]
    assert "hello there" in str(out)
    spans.exporter.clear()
    telemetry.configure(capture_content=False)
    await calc(["hello again"]).run("hi")
    assert "gen_ai.output.messages" not in (spans.one("chat calc-model").attributes or {})


async def test_tracing_off_records_nothing(spans: Spans) -> None:
    telemetry.configure(tracing=False)
    assert not telemetry.tracing()
    await calc(["hi"]).run("hi")
    assert spans.all() == []
    telemetry.configure(tracing=True)
    assert telemetry.tracing()
    await calc(["hi"]).run("hi")
    assert spans.names() == ["chat calc-model", "invoke_agent calc"]


async def test_no_provider_means_no_wrapping(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a provider (the suite never sets a global one), no metrics and no log
    # context (an app created by another test may have turned those on), the hooks
    # hand back exactly what they were given.
    from openheim.telemetry import _logs, _metrics

    monkeypatch.setattr(_metrics, "active", None)
    monkeypatch.setattr(_logs, "context_on", False)
    assert not telemetry.tracing()

    async def gen():  # type: ignore[no-untyped-def]
        yield 1

    async def coro() -> int:
        return 1

    g = gen()
    c = coro()
    assert telemetry.agent_run(g, "a", object(), "x:y") is g
    assert telemetry.chat_stream(g, "x:y", None) is g
    assert telemetry.chat(c, "x:y", None) is c
    assert telemetry.execute_tool(c, "t", "id", {}) is c
    assert telemetry.workflow_run(c, "w", "r") is c
    assert await c == 1
    await g.aclose()


async def test_an_abandoned_run_ends_its_tool_calls_and_spans_at_once(spans: Spans) -> None:
    import asyncio

    cancelled: list[int] = []

    @oh.tool
    async def wait(n: int) -> str:
        """Answer at once (n=1) or never (n=2)."""
        if n == 1:
            return "quick"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return "never"

    agent = calc([[ToolCall("wait", {"n": 1}, "c1"), ToolCall("wait", {"n": 2}, "c2")]], wait)
    events = agent.stream("go")
    async for event in events:
        if isinstance(event, oh.ToolResult):  # c1's: c2 is running now
            assert event.id == "c1"
            break
    await events.aclose()
    assert cancelled == [2]  # cancelled by the close, not later by the garbage collector
    run = spans.one("invoke_agent calc")
    assert (run.attributes or {})["openheim.run.status"] == "cancelled"
    assert len(spans.named("execute_tool wait")) == 2
