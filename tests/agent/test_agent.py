"""The tool loop on ScriptedModel: answers, tool calls, errors, limits, settings."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import openheim as oh
from openheim.errors import (
    ConfigError,
    MaxIterationsError,
    ModelError,
    ToolArgumentsError,
)
from openheim.models import ModelRequest, ScriptedModel


@oh.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_messages(request: ModelRequest) -> list[oh.Message]:
    return [m for m in request.messages if m.role == "tool"]


async def test_plain_answer() -> None:
    model = ScriptedModel(["Hello!"])
    agent = oh.Agent(model, instructions="Be brief.")
    res = await agent.run("Hi")
    assert res.output == "Hello!"
    assert res.stop_reason == "final"
    assert res.pending == []
    assert [m.role for m in res.new_messages] == ["user", "assistant"]
    assert res.usage.requests == 1
    assert res.usage.input_tokens > 0
    (request,) = model.requests
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[0].content == "Be brief."
    assert request.tools == []
    assert request.output_schema is None


async def test_one_tool_call_then_answer() -> None:
    model = ScriptedModel([oh.ToolCall("add", {"a": 2, "b": 3}), "5"])
    agent = oh.Agent(model, tools=[add])
    res = await agent.run("2+3?")
    assert res.output == "5"
    assert [m.role for m in res.new_messages] == ["user", "assistant", "tool", "assistant"]
    call = res.new_messages[1].tool_calls[0]
    result = res.new_messages[2]
    assert result.tool_call_id == call.id
    assert call.id
    assert result.content == "5"
    assert not result.is_error
    assert model.requests[0].tools[0].name == "add"
    assert tool_messages(model.requests[1]) == [result]
    assert res.usage.requests == 2


async def test_plain_functions_are_wrapped_as_tools() -> None:
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    model = ScriptedModel([oh.ToolCall("shout", {"text": "hey"}), "ok"])
    res = await oh.Agent(model, tools=[shout]).run("go")
    assert res.new_messages[2].content == "HEY"
    assert model.requests[0].tools[0].description == "Upper-case the text."


async def test_several_tool_calls_run_concurrently() -> None:
    # Each tool sets the other's event and waits for its own: this only
    # finishes if both run at the same time.
    ping_seen, pong_seen = asyncio.Event(), asyncio.Event()

    @oh.tool
    async def ping() -> str:
        """Ping."""
        pong_seen.set()
        await ping_seen.wait()
        return "ping done"

    @oh.tool
    async def pong() -> str:
        """Pong."""
        ping_seen.set()
        await pong_seen.wait()
        return "pong done"

    model = ScriptedModel([[oh.ToolCall("ping"), oh.ToolCall("pong")], "both done"])
    res = await asyncio.wait_for(oh.Agent(model, tools=[ping, pong]).run("go"), 30)
    assert res.output == "both done"
    # Results go back in the order of the calls, whatever order they finished in.
    assert [m.content for m in tool_messages(model.requests[1])] == ["ping done", "pong done"]


async def test_tool_concurrency_cap_bounds_calls_in_flight() -> None:
    in_flight = 0
    peak = 0

    @oh.tool
    async def work(n: int) -> int:
        """Work."""
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return n

    calls = [oh.ToolCall("work", {"n": i}) for i in range(7)]
    model = ScriptedModel([calls, "done"])
    res = await oh.Agent(model, tools=[work], tool_concurrency=3).run("go")
    assert res.output == "done"
    assert peak == 3
    assert [m.content for m in tool_messages(model.requests[1])] == [str(i) for i in range(7)]


async def test_sync_tools_in_parallel_use_threads() -> None:
    import threading

    barrier = threading.Barrier(2, timeout=30)

    @oh.tool
    def meet(name: str) -> str:
        """Wait for the other thread."""
        barrier.wait()
        return name

    model = ScriptedModel(
        [[oh.ToolCall("meet", {"name": "a"}), oh.ToolCall("meet", {"name": "b"})], "ok"]
    )
    res = await oh.Agent(model, tools=[meet]).run("go")
    assert [m.content for m in tool_messages(model.requests[1])] == ["a", "b"]
    assert res.output == "ok"


async def test_invalid_arguments_go_back_to_the_model_then_succeed() -> None:
    model = ScriptedModel(
        [oh.ToolCall("add", {"a": "two", "b": 3}), oh.ToolCall("add", {"a": 2, "b": 3}), "5"]
    )
    res = await oh.Agent(model, tools=[add]).run("2+3?")
    assert res.output == "5"
    error = tool_messages(model.requests[1])[0]
    assert error.is_error
    assert "Invalid arguments for tool 'add'" in error.content
    assert "a: Input should be a valid integer" in error.content
    assert "'two'" in error.content
    assert tool_messages(model.requests[2])[-1].content == "5"


async def test_too_many_invalid_arguments_raise() -> None:
    bad = oh.ToolCall("add", {"a": "x", "b": 1})
    model = ScriptedModel([bad, bad, bad, "never"])
    with pytest.raises(ToolArgumentsError, match=r"'add' 3 time\(s\) \(retries=2\)"):
        await oh.Agent(model, tools=[add]).run("go")


async def test_unknown_tool_is_reported_to_the_model() -> None:
    model = ScriptedModel([oh.ToolCall("nope", {}), "sorry"])
    res = await oh.Agent(model, tools=[add]).run("go")
    error = res.new_messages[2]
    assert error.is_error
    assert "Unknown tool 'nope'" in error.content
    assert "add" in error.content


async def test_tool_exception_becomes_an_error_result_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @oh.tool
    def boom(x: int) -> int:
        """Fails."""
        raise ValueError(f"bad x {x}")

    model = ScriptedModel([oh.ToolCall("boom", {"x": 7}), "recovered"])
    with caplog.at_level(logging.WARNING, logger="openheim.agent"):
        res = await oh.Agent(model, tools=[boom]).run("go")
    assert res.output == "recovered"
    error = res.new_messages[2]
    assert error.is_error
    assert error.content == "Tool 'boom' failed: ValueError: bad x 7"
    assert any("boom" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_tool_error_sends_its_plain_message() -> None:
    @oh.tool
    async def find(city: str) -> str:
        """Find."""
        raise oh.ToolError(f"no city called {city}")

    model = ScriptedModel([oh.ToolCall("find", {"city": "Xyz"}), "ok"])
    res = await oh.Agent(model, tools=[find]).run("go")
    assert res.new_messages[2].content == "no city called Xyz"
    assert res.new_messages[2].is_error


async def test_stop_run_aborts_and_stores_nothing() -> None:
    @oh.tool
    def halt() -> str:
        """Stop everything."""
        raise oh.StopRun("operator said stop")

    model = ScriptedModel([oh.ToolCall("halt"), "never"])
    agent = oh.Agent(model, tools=[halt])
    with pytest.raises(oh.StopRun, match="operator said stop"):
        await agent.run("go", session="s")
    assert len(model.requests) == 1
    assert await agent.history.load("s") == []


async def test_max_iterations() -> None:
    model = ScriptedModel(lambda request: oh.ToolCall("add", {"a": 1, "b": 1}))
    agent = oh.Agent(model, tools=[add], max_iterations=3)
    with pytest.raises(MaxIterationsError, match=r"made 3 model requests \(max_iterations=3\)"):
        await agent.run("loop forever")
    assert len(model.requests) == 3


async def test_model_settings_merge_reaches_the_request() -> None:
    model = ScriptedModel(["a", "b"])
    agent = oh.Agent(model, model_settings={"temperature": 0.2, "max_tokens": 100})
    await agent.run("x")
    await agent.run("y", model_settings=oh.ModelSettings(max_tokens=5, seed=7))
    first, second = (r.settings for r in model.requests)
    assert first == oh.ModelSettings(max_tokens=100, temperature=0.2)
    assert second == oh.ModelSettings(max_tokens=5, temperature=0.2, seed=7)
    with pytest.raises(ConfigError, match="unknown model settings"):
        oh.Agent(model, model_settings={"temprature": 1})


def test_run_sync() -> None:
    agent = oh.Agent(ScriptedModel([oh.ToolCall("add", {"a": 1, "b": 2}), "3"]), tools=[add])
    res = agent.run_sync("1+2?")
    assert res.output == "3"


async def test_run_sync_inside_a_loop_is_refused() -> None:
    agent = oh.Agent(ScriptedModel(["x"]))
    with pytest.raises(RuntimeError, match=r"await agent\.run"):
        agent.run_sync("hi")


async def test_deps_and_context_reach_tools_and_instructions() -> None:
    seen: dict[str, Any] = {}

    @oh.tool
    async def whoami(ctx: oh.RunContext[dict[str, str]]) -> str:
        """Who."""
        seen["call"] = (ctx.tool_call_id, ctx.tool_name, ctx.run_id, ctx.session)
        return ctx.deps["user"]

    async def instructions(ctx: oh.RunContext[dict[str, str]]) -> str:
        return f"The user is {ctx.deps['user']}."

    model = ScriptedModel([oh.ToolCall("whoami", id="c1"), "done"])
    agent = oh.Agent(model, tools=[whoami], instructions=instructions)
    res = await agent.run("who am I?", deps={"user": "ada"}, session="s1")
    assert res.new_messages[2].content == "ada"
    assert seen["call"] == ("c1", "whoami", res.run_id, "s1")
    assert model.requests[0].messages[0].content == "The user is ada."


async def test_script_running_out_is_a_clear_error() -> None:
    agent = oh.Agent(ScriptedModel([oh.ToolCall("add", {"a": 1, "b": 1})]), tools=[add])
    with pytest.raises(ModelError, match=r"ran out of replies: its script has 1"):
        await agent.run("go")


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown model 'gpt-4'"):
        oh.Agent("gpt-4")
    with pytest.raises(ConfigError, match="max_iterations"):
        oh.Agent(ScriptedModel([]), max_iterations=0)
    with pytest.raises(ConfigError, match="run_timeout"):
        oh.Agent(ScriptedModel([]), run_timeout=0)
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        oh.Agent(ScriptedModel([]), tools=[add, oh.tool(name="add")(lambda: 1)])
    # A provider string is checked but not resolved (no connector import, no key needed).
    agent = oh.Agent("openai:gpt-4o-mini")
    assert "openai:gpt-4o-mini" in repr(agent)
