"""Agents with a Checkpointer: runs resume after an interruption, approvals survive restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import openheim as oh
from openheim.errors import ConfigError, ModelError
from openheim.messages import Message, ToolCall
from openheim.models import ModelRequest, ScriptedModel
from openheim.stores import Checkpointer, Store, StoreHistory


def _model() -> ScriptedModel:
    """Two tool calls, then an answer: decided from the conversation, so it replays the same."""

    def reply(request: ModelRequest) -> Any:
        tool_results = [m for m in request.messages if m.role == "tool"]
        prompt = next(m.content for m in reversed(request.messages) if m.role == "user")
        if len(tool_results) % 2 == 0 and request.messages[-1].role == "user":
            return ToolCall("first", {"tag": prompt}, f"{prompt}-1")
        if request.messages[-1].tool_call_id == f"{prompt}-1":
            return ToolCall("second", {"tag": prompt}, f"{prompt}-2")
        return f"done {prompt}"

    return ScriptedModel(reply)


class Tools:
    def __init__(self, block_second: bool = False) -> None:
        self.calls: list[str] = []
        self.block = asyncio.Event() if block_second else None
        self.entered = asyncio.Event()

    def make(self) -> list[Any]:
        @oh.tool
        async def first(tag: str) -> str:
            """First."""
            self.calls.append(f"first {tag}")
            return f"one {tag}"

        @oh.tool
        async def second(tag: str) -> str:
            """Second."""
            self.calls.append(f"second {tag}")
            if self.block is not None:
                self.entered.set()
                await self.block.wait()
            return f"two {tag}"

        return [first, second]


def _agent(store: Store, tools: Tools, **kw: Any) -> oh.Agent:
    return oh.Agent(
        _model(),
        name="worker",
        tools=tools.make(),
        history=StoreHistory(store),
        checkpointer=Checkpointer(store),
        **kw,
    )


async def test_a_checkpointed_run_finishes_and_leaves_no_log(store: Store) -> None:
    tools = Tools()
    agent = _agent(store, tools)
    res = await agent.run("p", session="s")
    assert res.output == "done p"
    assert tools.calls == ["first p", "second p"]
    assert await agent.unfinished_runs() == []
    assert await store.list_logs() == []
    assert [m.role for m in await agent.history.load("s")] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_an_interrupted_run_recovers_without_rerunning_checkpointed_tools(
    store: Store,
) -> None:
    tools = Tools(block_second=True)
    agent = _agent(store, tools)
    task = asyncio.ensure_future(agent.run("p", session="s"))
    await asyncio.wait_for(tools.entered.wait(), 10)
    task.cancel()  # as if the process died while `second` ran
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tools.calls == ["first p", "second p"]

    # "Restart": a new agent and new store handles on the same data.
    tools2 = Tools()
    agent2 = _agent(store, tools2)
    assert len(await agent2.unfinished_runs()) == 1
    results = await agent2.recover()
    assert [r.output for r in results] == ["done p"]
    assert tools2.calls == ["second p"]  # `first`'s result was checkpointed
    history = await agent2.history.load("s")
    assert [m.content for m in history if m.role == "tool"] == ["one p", "two p"]
    assert await agent2.recover() == []


async def test_a_failed_run_is_not_recovered(store: Store) -> None:
    agent = oh.Agent(
        ScriptedModel([ModelError("boom")]),
        name="worker",
        checkpointer=Checkpointer(store),
    )
    with pytest.raises(ModelError):
        await agent.run("x")
    assert await agent.unfinished_runs() == []


async def test_approvals_survive_a_restart(store: Store) -> None:
    calls: list[str] = []

    def make_agent() -> oh.Agent:
        @oh.tool(requires_approval=True)
        def delete(path: str) -> str:
            """Delete a file."""
            calls.append(path)
            return "deleted"

        return oh.Agent(
            ScriptedModel(
                lambda r: (
                    ToolCall("delete", {"path": "/tmp/x"}, "d1")
                    if r.messages[-1].role == "user"
                    else "ok"
                )
            ),
            name="ops",
            tools=[delete],
            history=StoreHistory(store),
            checkpointer=Checkpointer(store),
        )

    res = await make_agent().run("clean up", session="s")
    assert res.stop_reason == "approval_required"
    run_id = res.run_id

    agent = make_agent()  # after a restart
    paused = await agent.resume_run(run_id)
    assert paused.stop_reason == "approval_required"
    assert [p.id for p in paused.pending] == ["d1"]
    recovered = await agent.recover()
    assert [r.stop_reason for r in recovered] == ["approval_required"]
    done = await agent.resume_run(run_id, {"d1": True})
    assert done.output == "ok"
    assert calls == ["/tmp/x"]
    assert await agent.unfinished_runs() == []
    with pytest.raises(ConfigError, match="no checkpoints"):
        await agent.resume_run(run_id)


async def test_runs_of_other_agents_are_left_alone(store: Store) -> None:
    tools = Tools(block_second=True)
    task = asyncio.ensure_future(_agent(store, tools).run("p"))
    await asyncio.wait_for(tools.entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    other = oh.Agent(ScriptedModel(["x"]), name="other", checkpointer=Checkpointer(store))
    assert await other.recover() == []
    assert len(await _agent(store, Tools()).unfinished_runs()) == 1


async def test_recover_needs_a_checkpointer() -> None:
    with pytest.raises(ConfigError, match="checkpointer"):
        await oh.Agent(ScriptedModel(["x"])).recover()


async def test_a_run_whose_session_got_it_is_only_cleaned_up(store: Store) -> None:
    tools = Tools()
    agent = _agent(store, tools)
    ckpt = agent.checkpointer
    assert ckpt is not None
    res = await agent.run("p", session="s")
    # As if the process died after the session write but before the log was dropped.
    await ckpt.save(res.state)
    again = await _agent(store, Tools()).recover()
    assert [r.output for r in again] == ["done p"]
    assert len(await agent.history.load("s")) == 6
    assert await store.list_logs() == []


def test_message_import_kept() -> None:
    assert Message.user("x").role == "user"


async def test_recover_leaves_runs_in_flight_and_recent_ones_alone(store: Store) -> None:
    tools = Tools(block_second=True)
    agent = _agent(store, tools)
    task = asyncio.ensure_future(agent.run("p", session="s"))
    await asyncio.wait_for(tools.entered.wait(), 10)
    assert await agent.recover() == []  # still running here
    assert tools.calls == ["first p", "second p"]
    # Another process would see it, unless it was checkpointed within min_idle.
    other = _agent(store, Tools())
    assert await other.unfinished_runs(min_idle=60) == []
    assert len(await other.unfinished_runs()) == 1
    assert tools.block is not None
    tools.block.set()
    assert (await task).output == "done p"
    assert await other.unfinished_runs() == []


async def test_history_and_checkpointer_from_a_store_url(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    agent = oh.Agent(_model(), name="worker", tools=Tools().make(), history=url, checkpointer=True)
    assert isinstance(agent.history, StoreHistory)
    assert agent.checkpointer is not None
    assert agent.checkpointer.store is agent.history.store
    assert (await agent.run("p", session="s")).output == "done p"
    again = oh.Agent(_model(), name="worker", history=url)
    assert len(await again.history.load("s")) == 6
    await agent.history.store.aclose()
    await again.history.store.aclose()
    with pytest.raises(ConfigError, match="checkpointer=True"):
        oh.Agent(_model(), checkpointer=True)
