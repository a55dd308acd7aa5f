"""Cancellation and timeouts leave the session consistent and raise the right errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

import openheim as oh
from openheim.errors import ModelTimeout, RunTimeout
from openheim.models import ModelRequest, ScriptedModel


async def _first_turn(agent: oh.Agent) -> None:
    res = await agent.run("first", session="s")
    assert res.output == "first answer"


def _assert_consistent(history: list[oh.Message]) -> None:
    """Every tool call has its result, every result its call."""
    open_calls: set[str] = set()
    for m in history:
        if m.role == "assistant":
            assert not open_calls, f"tool calls without results: {open_calls}"
            open_calls = {c.id for c in m.tool_calls}
        elif m.role == "tool":
            assert m.tool_call_id in open_calls
            open_calls.discard(m.tool_call_id)
    assert not open_calls


async def test_cancel_mid_tool_cancels_the_tools_and_keeps_history_consistent() -> None:
    started = 0
    both_started = asyncio.Event()
    cancelled: list[str] = []

    @oh.tool
    async def slow(name: str) -> str:
        """Never finishes."""
        nonlocal started
        started += 1
        if started == 2:
            both_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    model = ScriptedModel(
        ["first answer", [oh.ToolCall("slow", {"name": "a"}), oh.ToolCall("slow", {"name": "b"})]]
    )
    agent = oh.Agent(model, tools=[slow])
    await _first_turn(agent)
    task = asyncio.ensure_future(agent.run("second", session="s"))
    await both_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == ["a", "b"]
    history = await agent.history.load("s")
    assert [m.content for m in history] == ["first", "first answer"]
    _assert_consistent(history)
    # The session goes on normally afterwards.
    agent2 = oh.Agent(ScriptedModel(["third answer"]), history=agent.history)
    await agent2.run("third", session="s")
    assert [m.content for m in await agent.history.load("s")][-2:] == ["third", "third answer"]


async def test_cancel_mid_model_call_cancels_it() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def never(request: ModelRequest) -> str:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "unreachable"

    agent = oh.Agent(ScriptedModel(never))
    task = asyncio.ensure_future(agent.run("hi", session="s"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert await agent.history.load("s") == []


async def test_cancel_mid_stream() -> None:
    entered = asyncio.Event()

    async def slow_reply(request: ModelRequest) -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never seen"

    agent = oh.Agent(ScriptedModel(slow_reply))

    async def consume() -> list[object]:
        return [ev async for ev in agent.stream("hi", session="s")]

    task = asyncio.ensure_future(consume())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await agent.history.load("s") == []


async def test_model_timeout() -> None:
    async def never(request: ModelRequest) -> str:
        await asyncio.Event().wait()
        return "x"

    agent = oh.Agent(ScriptedModel(never, name="stuck"), model_timeout=0.05)
    with pytest.raises(ModelTimeout, match=r"scripted:stuck.*model_timeout=0.05") as info:
        await agent.run("hi")
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(ModelTimeout):
        async for _ in agent.stream("hi"):
            pass


async def test_tool_timeout_becomes_an_error_result() -> None:
    @oh.tool(timeout=0.05)
    async def hang() -> str:
        """Hangs."""
        await asyncio.Event().wait()
        return "x"

    @oh.tool
    async def hang_too() -> str:
        """Hangs, limited by the agent's tool_timeout."""
        await asyncio.Event().wait()
        return "x"

    model = ScriptedModel([[oh.ToolCall("hang"), oh.ToolCall("hang_too")], "gave up"])
    agent = oh.Agent(model, tools=[hang, hang_too], tool_timeout=0.05)
    res = await agent.run("go")
    assert res.output == "gave up"
    errors = [m for m in res.new_messages if m.role == "tool"]
    assert [m.content for m in errors] == [
        "Tool 'hang' timed out after 0.05 s.",
        "Tool 'hang_too' timed out after 0.05 s.",
    ]
    assert all(m.is_error for m in errors)


async def test_sync_tool_timeout() -> None:
    release = threading.Event()

    @oh.tool(timeout=0.05)
    def block() -> str:
        """Blocks a thread."""
        release.wait(30)
        return "late"

    model = ScriptedModel([oh.ToolCall("block"), "ok"])
    try:
        res = await oh.Agent(model, tools=[block]).run("go")
    finally:
        release.set()
    assert res.new_messages[2].content == "Tool 'block' timed out after 0.05 s."


async def test_run_timeout_during_a_model_call() -> None:
    async def never(request: ModelRequest) -> str:
        await asyncio.Event().wait()
        return "x"

    agent = oh.Agent(ScriptedModel(never), run_timeout=0.05, model_timeout=600)
    with pytest.raises(RunTimeout, match=r"run_timeout of 0\.05 s"):
        await agent.run("hi", session="s")
    assert await agent.history.load("s") == []


async def test_run_timeout_during_a_tool_call_is_not_a_tool_error() -> None:
    started = asyncio.Event()

    @oh.tool(timeout=600)
    async def hang() -> str:
        """Hangs."""
        started.set()
        await asyncio.Event().wait()
        return "x"

    model = ScriptedModel([oh.ToolCall("hang"), "never"])
    agent = oh.Agent(model, tools=[hang], run_timeout=1.0)
    with pytest.raises(RunTimeout):
        await agent.run("go")
    assert started.is_set()  # the deadline passed in the tool, not before it
    assert len(model.requests) == 1
