"""Paused runs decided from another process: list, decide, continue once, under the run's lease."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import openheim as oh
from openheim.agent.approvals import (
    PausedRun,
    decide,
    paused_run,
    paused_runs,
    resume_paused,
    run_lease,
)
from openheim.errors import ApprovalError, ConfigError
from openheim.models import ModelRequest, ScriptedModel
from openheim.stores import Store, open_store
from openheim.stores.checkpoint import Checkpointer
from openheim.stores.history import StoreHistory

calls: list[str] = []
gate: dict[str, asyncio.Event] = {}


@oh.tool(requires_approval=True)
async def delete_file(path: str) -> str:
    """Delete a file (waits for the test's gate, when one is set)."""
    calls.append(path)
    if "open" in gate:
        gate["started"].set()
        await gate["open"].wait()
    return f"deleted {path}"


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gate.clear()


def _reply(request: ModelRequest) -> object:
    # A function of the conversation, so a model made in "another process" goes on from it.
    if request.messages[-1].role == "tool":
        return "All done."
    return [
        oh.ToolCall("delete_file", {"path": "a.txt"}, "c1"),
        oh.ToolCall("delete_file", {"path": "b.txt"}, "c2"),
    ]


def _model() -> ScriptedModel:
    return ScriptedModel(_reply)


def _agent(store: Store) -> oh.Agent:
    return oh.Agent(
        _model(),
        name="cleaner",
        tools=[delete_file],
        history=StoreHistory(store),
        checkpointer=Checkpointer(store),
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


async def _paused(url: str) -> str:
    store = open_store(url, namespace="acme")
    try:
        res = await _agent(store).run("clean up", session="s1")
        assert res.stop_reason == "approval_required"
        return res.run_id
    finally:
        await store.aclose()


async def test_list_and_decide_from_another_process(db: str) -> None:
    run_id = await _paused(db)
    # "Another process": a new store connection and a new agent object.
    store = open_store(db, namespace="acme")
    try:
        agent = _agent(store)
        assert agent.checkpointer is not None
        listed = await paused_runs(agent.checkpointer)
        assert [(p.run_id, p.agent, p.session) for p in listed] == [(run_id, "cleaner", "s1")]
        assert [(c.id, c.tool, c.arguments) for c in listed[0].pending] == [
            ("c1", "delete_file", {"path": "a.txt"}),
            ("c2", "delete_file", {"path": "b.txt"}),
        ]
        # Other tenants see nothing.
        assert await paused_runs(Checkpointer(store.namespace("globex"))) == []
        result = await decide(agent, run_id, {"c1": True, "c2": oh.Approval(False, "keep b")})
        assert result.stop_reason == "final"
        assert result.output == "All done."
        assert calls == ["a.txt"]
        tool_msgs = [m.content for m in result.new_messages if m.role == "tool"]
        assert tool_msgs[0] == "deleted a.txt"
        assert "keep b" in (tool_msgs[1] or "")
        # Decided once: nothing is paused any more, and deciding again is refused.
        assert await paused_runs(agent.checkpointer) == []
        with pytest.raises(ApprovalError, match="not waiting"):
            await decide(agent, run_id, {"c1": True, "c2": True})
        assert calls == ["a.txt"]
        session = await StoreHistory(store).load("s1")
        assert session[-1].content == "All done."
    finally:
        await store.aclose()


async def test_bad_decisions_change_nothing(db: str) -> None:
    run_id = await _paused(db)
    store = open_store(db, namespace="acme")
    try:
        agent = _agent(store)
        assert agent.checkpointer is not None
        with pytest.raises(ApprovalError, match="c2 has no decision"):
            await decide(agent, run_id, {"c1": True})
        with pytest.raises(ApprovalError, match="no pending tool call 'zzz'"):
            await decide(agent, run_id, {"c1": True, "c2": True, "zzz": True})
        with pytest.raises(ConfigError, match="True/False"):
            await decide(agent, run_id, {"c1": "yes", "c2": True})  # type: ignore[dict-item]
        other = oh.Agent(_model(), name="other", checkpointer=Checkpointer(store))
        with pytest.raises(ApprovalError, match="belongs to agent 'cleaner'"):
            await decide(other, run_id, {"c1": True, "c2": True})
        with pytest.raises(ApprovalError, match="not waiting"):
            await decide(agent, "run-unknown", {})
        assert calls == []
        still = await paused_run(agent.checkpointer, run_id)
        assert isinstance(still, PausedRun)
        assert [c.id for c in still.pending] == ["c1", "c2"]
        # ... and it can still be decided.
        result = await decide(agent, run_id, {"c1": False, "c2": False})
        assert result.output == "All done."
        assert calls == []
    finally:
        await store.aclose()


async def test_two_processes_deciding_at_once_run_the_tools_once(db: str) -> None:
    run_id = await _paused(db)
    s1, s2 = open_store(db, namespace="acme"), open_store(db, namespace="acme")
    gate["open"], gate["started"] = asyncio.Event(), asyncio.Event()
    try:
        first = asyncio.ensure_future(decide(_agent(s1), run_id, {"c1": True, "c2": True}))
        await asyncio.wait_for(gate["started"].wait(), 30)  # the first is inside a tool
        with pytest.raises(ApprovalError, match="another process"):
            await decide(_agent(s2), run_id, {"c1": True, "c2": True})
        gate["open"].set()
        result = await asyncio.wait_for(first, 30)
        assert result.output == "All done."
        assert calls == ["a.txt", "b.txt"]
        info = await run_lease(Checkpointer(s2), run_id).info()
        assert info is None  # released when the run finished
    finally:
        await s1.aclose()
        await s2.aclose()


async def test_resume_streams_the_continued_run(db: str) -> None:
    run_id = await _paused(db)
    store = open_store(db, namespace="acme")
    try:
        kinds = [
            type(e).__name__
            async for e in resume_paused(_agent(store), run_id, {"c1": True, "c2": True})
        ]
        assert kinds.count("ToolResult") == 2
        assert kinds[-1] == "Done"
    finally:
        await store.aclose()


async def test_agents_without_a_checkpointer_are_told() -> None:
    with pytest.raises(ConfigError, match="no checkpointer"):
        await decide(oh.Agent(_model(), name="x"), "r", {})


async def test_an_interrupted_run_resumes_as_a_stream(db: str) -> None:
    gate["open"], gate["started"] = asyncio.Event(), asyncio.Event()
    store = open_store(db, namespace="acme")
    try:
        agent = _agent(store)
        res = await agent.run("clean up", session="s1")
        # Decided, and cut off inside the first tool (the process "dies" there).
        task = asyncio.ensure_future(decide(agent, res.run_id, {"c1": True, "c2": True}))
        await asyncio.wait_for(gate["started"].wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.clear()
        fresh = _agent(store)
        assert res.run_id in await fresh.unfinished_runs()
        events = [e async for e in fresh.stream_resumed(res.run_id)]
        kinds = [type(e).__name__ for e in events]
        assert kinds[-1] == "Done"
        assert "TextDelta" in kinds  # streamed: the model's answer arrives in pieces
        assert kinds.count("ToolResult") == 2
        # Both approved calls were cut off inside the tool (they run concurrently), so each
        # ran once more; the decisions were not asked for again.
        assert sorted(calls) == ["a.txt", "a.txt", "b.txt", "b.txt"]
    finally:
        await store.aclose()
