"""requires_approval tools: pause, approve, reject, resume; the paused state is a Struct."""

from __future__ import annotations

import msgspec
import pytest

import openheim as oh
from openheim.errors import ApprovalError
from openheim.models import ScriptedModel

deleted: list[str] = []


@oh.tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    deleted.append(path)
    return f"deleted {path}"


@oh.tool
def list_files() -> list[str]:
    """List files."""
    return ["a.txt", "b.txt"]


@pytest.fixture(autouse=True)
def _clear() -> None:
    deleted.clear()


def _script() -> ScriptedModel:
    return ScriptedModel(
        [
            [
                oh.ToolCall("list_files", id="c0"),
                oh.ToolCall("delete_file", {"path": "a.txt"}, "c1"),
                oh.ToolCall("delete_file", {"path": "b.txt"}, "c2"),
            ],
            "Done.",
        ]
    )


async def test_pause_then_approve_and_reject() -> None:
    model = _script()
    agent = oh.Agent(model, tools=[delete_file, list_files])
    res = await agent.run("clean up", session="u1")
    assert res.stop_reason == "approval_required"
    assert res.output is None
    assert res.pending == [
        oh.PendingApproval("c1", "delete_file", {"path": "a.txt"}),
        oh.PendingApproval("c2", "delete_file", {"path": "b.txt"}),
    ]
    assert deleted == []  # nothing approved ran
    assert await agent.history.load("u1") == []  # a paused run stores nothing yet

    res.approve("c1")
    final = await agent.resume(res, {"c2": oh.Approval(False, "keep b")})
    assert final.stop_reason == "final"
    assert final.output == "Done."
    assert deleted == ["a.txt"]
    results = [m for m in model.requests[1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.content, m.is_error) for m in results] == [
        ("c0", '["a.txt","b.txt"]', False),
        ("c1", "deleted a.txt", False),
        ("c2", "The user rejected this call to 'delete_file': keep b", True),
    ]
    history = await agent.history.load("u1")
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "tool", "assistant"]
    assert final.usage.requests == 2


async def test_stream_pauses_with_an_event() -> None:
    agent = oh.Agent(_script(), tools=[delete_file, list_files])
    events = [ev async for ev in agent.stream("clean up")]
    assert isinstance(events[-2], oh.ApprovalRequired)
    assert [p.id for p in events[-2].pending] == ["c1", "c2"]
    paused = events[-1]
    assert isinstance(paused, oh.Done)
    events = [
        ev async for ev in agent.stream(resume=paused.result, approvals={"c1": True, "c2": True})
    ]
    assert [ev.id for ev in events if isinstance(ev, oh.ToolCalled)] == ["c1", "c2"]
    assert isinstance(events[-1], oh.Done)
    assert events[-1].result.output == "Done."
    assert deleted == ["a.txt", "b.txt"]


async def test_decisions_are_checked() -> None:
    agent = oh.Agent(_script(), tools=[delete_file, list_files])
    res = await agent.run("clean up")
    with pytest.raises(ApprovalError, match="no pending tool call 'zz'"):
        res.approve("zz")
    res.approve("c1")
    with pytest.raises(ApprovalError, match="already approved"):
        res.reject("c1")
    with pytest.raises(ApprovalError, match="c2 have no decision"):
        await agent.resume(res)
    res.reject("c2")
    await agent.resume(res)
    with pytest.raises(ApprovalError, match="not waiting for approvals"):
        await agent.resume(res)


async def test_paused_state_survives_a_msgpack_round_trip() -> None:
    agent = oh.Agent(_script(), tools=[delete_file, list_files])
    res = await agent.run("clean up", session="u2")
    blob = msgspec.msgpack.encode(res.state)
    state = msgspec.msgpack.decode(blob, type=oh.RunState)
    assert state == res.state
    final = await agent.resume(state, {"c1": True, "c2": False})
    assert final.output == "Done."
    assert final.session == "u2"
    assert deleted == ["a.txt"]


async def test_invalid_arguments_are_not_sent_for_approval() -> None:
    model = ScriptedModel([oh.ToolCall("delete_file", {"path": 3, "force": True}), "ok"])
    res = await oh.Agent(model, tools=[delete_file]).run("go")
    assert res.stop_reason == "final"
    assert res.new_messages[2].is_error
