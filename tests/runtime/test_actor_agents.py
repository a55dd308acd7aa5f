"""Agents as actors: the actor id is the session, the conversation lives in the runtime's store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openheim as oh
from openheim.models.scripted import ScriptedModel
from openheim.runtime import Runtime


async def test_agent_actor_answers_asks_and_keeps_the_conversation_in_the_store(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(["Hello, how can I help?", "Your order ships tomorrow."])
    agent = oh.Agent(name="support", model=model, instructions="Be brief.")
    url = f"sqlite:///{tmp_path}/rt.db"
    async with Runtime(store=url) as rt:
        ref = rt.spawn(agent, id="support/42")
        first = await ref.ask("hi")
        assert isinstance(first, oh.RunResult)
        assert first.output == "Hello, how can I help?"
        second = await ref.ask("where is my order?")
        assert second.output == "Your order ships tomorrow."
        # The second model call saw the first exchange: the actor is the session.
        seen = [m.content for m in model.requests[1].messages if m.role != "system"]
        assert seen == ["hi", "Hello, how can I help?", "where is my order?"]
    # The conversation is in the runtime's store, readable by a new runtime on the file.
    async with Runtime(store=url) as rt2:
        stored = await rt2.history.load("support/42")
        assert [m.content for m in stored] == [
            "hi",
            "Hello, how can I help?",
            "where is my order?",
            "Your order ships tomorrow.",
        ]


async def test_two_agent_actors_have_separate_sessions_and_run_concurrently() -> None:
    async def reply(request: object) -> str:
        await asyncio.sleep(0)
        msgs = request.messages  # type: ignore[attr-defined]
        return f"{len([m for m in msgs if m.role == 'user'])} user messages"

    agent = oh.Agent(name="echo", model=ScriptedModel(reply))
    async with Runtime() as rt:
        a = rt.spawn(agent, id="echo/a")
        b = rt.spawn(agent, id="echo/b")
        ra, rb = await asyncio.gather(a.ask("one"), b.ask("one"))
        assert (ra.output, rb.output) == ("1 user messages", "1 user messages")
        again = await a.ask("two")
        assert again.output == "2 user messages"
        assert len(await rt.history.load("echo/a")) == 4
        assert len(await rt.history.load("echo/b")) == 2


async def test_agent_with_its_own_history_uses_the_actor_id_as_session(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/agent.db"
    agent = oh.Agent(name="own", model=ScriptedModel(["a", "b"]), history=url)
    async with Runtime() as rt:
        ref = rt.spawn(agent, id="own/1")
        await ref.ask("x")
        await ref.ask("y")
    assert [m.content for m in await agent.history.load("own/1")] == ["x", "a", "y", "b"]
