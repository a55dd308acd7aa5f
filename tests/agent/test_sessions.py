"""Session history: per session, stored per finished run, trimmed by whole turns."""

from __future__ import annotations

from collections.abc import Sequence

import openheim as oh
from openheim.messages import Message
from openheim.models import ModelRequest, ScriptedModel
from openheim.sessions import InMemoryHistory, estimate_tokens, split_turns, trim_history


@oh.tool
def echo(text: str) -> str:
    """Echo."""
    return text


async def test_history_is_per_session_and_usage_adds_up() -> None:
    model = ScriptedModel(lambda request: f"answer {len(request.messages)}")
    agent = oh.Agent(model, instructions="sys")
    r1 = await agent.run("a1", session="alice")
    await agent.run("b1", session="bob")
    r3 = await agent.run("a2", session="alice")
    assert [m.content for m in model.requests[2].messages] == ["sys", "a1", "answer 2", "a2"]
    assert [m.content for m in r3.messages] == ["a1", "answer 2", "a2", "answer 4"]
    assert [m.content for m in await agent.history.load("bob")] == ["b1", "answer 2"]
    assert await agent.history.usage("alice") == r1.usage + r3.usage
    await agent.history.clear("alice")
    assert await agent.history.load("alice") == []
    # Without a session nothing is kept.
    await agent.run("x")
    assert sorted(agent.history.sessions) == ["bob"]  # type: ignore[attr-defined]


async def test_a_shared_store_across_agents() -> None:
    store = InMemoryHistory()
    a = oh.Agent(ScriptedModel(["from a"]), history=store)
    b_model = ScriptedModel(["from b"])
    b = oh.Agent(b_model, history=store)
    await a.run("hello", session="s")
    await b.run("again", session="s")
    assert [m.content for m in b_model.requests[0].messages] == ["hello", "from a", "again"]


def _turn(i: int, size: int = 40, tools: bool = False) -> list[Message]:
    user = Message.user(f"u{i} " + "x" * size)
    if not tools:
        return [user, Message.assistant(f"a{i} " + "y" * size)]
    call = oh.ToolCall("echo", {"text": "z" * size}, f"c{i}")
    return [
        user,
        Message.assistant(None, [call]),
        Message.tool(f"c{i}", "echo", "z" * size),
        Message.assistant(f"a{i}"),
    ]


def test_split_turns_and_trim_history_drop_whole_turns() -> None:
    history = [Message.system("keep me"), *_turn(1), *_turn(2, tools=True), *_turn(3)]
    turns = split_turns(history[1:])
    assert [len(t) for t in turns] == [2, 4, 2]
    total = sum(estimate_tokens(m) for m in history)
    assert trim_history(history, total) == history
    trimmed = trim_history(history, total - 1)
    assert trimmed[0].content == "keep me"
    assert trimmed[1:] == history[3:]  # turn 1 gone, turn 2 whole (call + result kept together)
    only_last = trim_history(history, estimate_tokens(history[0]) + 30)
    assert only_last == [history[0], *history[-2:]]
    assert trim_history(history, 0) == [history[0]]


async def test_agent_trims_to_the_context_window_keeping_instructions_and_latest_turn() -> None:
    seen: list[ModelRequest] = []

    def reply(request: ModelRequest) -> object:
        seen.append(request)
        last = request.messages[-1]
        if last.role == "user":
            return oh.ToolCall("echo", {"text": "w" * 200})
        return "ok " + "v" * 100

    model = ScriptedModel(reply, context_window=400)
    agent = oh.Agent(model, tools=[echo], instructions="Always keep these instructions.")
    for i in range(6):
        await agent.run(f"question {i} " + "q" * 100, session="s")
    full = await agent.history.load("s")
    assert len(full) == 6 * 4  # the store keeps everything; only the requests are trimmed

    for request in seen:
        messages = request.messages
        assert messages[0].content == "Always keep these instructions."
        # The latest turn is whole: it starts at the last user message.
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        assert messages[last_user].content.startswith("question")
        # Whatever history is left starts at a turn boundary and keeps calls with results.
        assert messages[1].role == "user"
        _assert_pairs(messages)
    later = seen[-1].messages
    assert sum(1 for m in later if m.role == "user") < 6  # old turns were dropped


def _assert_pairs(messages: Sequence[Message]) -> None:
    open_calls: set[str] = set()
    for m in messages:
        if m.role == "assistant":
            assert not open_calls
            open_calls = {c.id for c in m.tool_calls}
        elif m.role == "tool":
            assert m.tool_call_id in open_calls
            open_calls.discard(m.tool_call_id)


async def test_custom_token_counter_drives_trimming() -> None:
    model = ScriptedModel(lambda request: "ok", context_window=10)
    agent = oh.Agent(model, count_tokens=lambda m: 3)
    for i in range(4):
        await agent.run(f"q{i}", session="s")
    # budget 10: latest turn (user) = 3 leaves 7 for history -> one old turn (2 messages = 6).
    assert [m.content for m in model.requests[-1].messages] == ["q2", "ok", "q3"]
