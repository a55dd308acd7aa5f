"""The run contract: message_history=, run_id=, RunSettings, result_of, the history protocol."""

from __future__ import annotations

import re
from typing import Any

import pytest

import openheim as oh
from openheim.agent import RunSettings, TextDelta, result_of
from openheim.errors import AgentError, ConfigError
from openheim.models import ModelRequest, ScriptedModel
from openheim.snapshot import new_run_id, valid_run_id
from openheim.stores import (
    DEFAULT_STORE_URL,
    Checkpointer,
    HistoryStore,
    InMemoryHistory,
    StoreHistory,
    open_store,
)

CHAT = [
    oh.Message.user("My name is Ada."),
    oh.Message.assistant("Hello Ada."),
]


def _echo_names() -> ScriptedModel:
    """Answers with the roles and texts it was sent, so a test sees the request."""

    def reply(request: ModelRequest) -> str:
        return " | ".join(f"{m.role}:{m.content}" for m in request.messages)

    return ScriptedModel(reply)


# ---- message_history ------------------------------------------------------------------


async def test_message_history_is_continued_and_stored_nowhere() -> None:
    history = InMemoryHistory()
    agent = oh.Agent(_echo_names(), instructions="Be brief.", history=history)
    res = await agent.run("What is my name?", message_history=CHAT)
    assert res.output == (
        "system:Be brief. | user:My name is Ada. | assistant:Hello Ada. | user:What is my name?"
    )
    assert res.messages == [*CHAT, *res.new_messages]
    assert [m.role for m in res.new_messages] == ["user", "assistant"]
    assert res.session is None
    assert await history.list_sessions() == []
    # The caller's list is not changed by the run.
    assert len(CHAT) == 2


async def test_message_history_streams_and_runs_sync_alike() -> None:
    agent = oh.Agent(_echo_names())
    streamed = await result_of(agent.stream("Again?", message_history=CHAT))
    assert streamed.output.startswith("user:My name is Ada.")
    synced_text = await _in_thread(lambda: agent.run_sync("Again?", message_history=CHAT).output)
    assert synced_text == streamed.output


async def _in_thread(fn: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn)


async def test_session_and_message_history_are_exclusive() -> None:
    agent = oh.Agent(ScriptedModel(["x"]))
    with pytest.raises(ConfigError, match=r"either session= .* or message_history="):
        await agent.run("hi", session="s", message_history=CHAT)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("hello", r"list of openheim Message objects, got str"),
        ([CHAT[0], {"role": "user", "content": "x"}], r"message_history\[1\] is a dict"),
        (42, r"got int"),
    ],
)
async def test_bad_message_history_is_refused_clearly(value: Any, match: str) -> None:
    model = ScriptedModel(["x"])
    agent = oh.Agent(model)
    with pytest.raises(ConfigError, match=match):
        await agent.run("hi", message_history=value)
    assert model.requests == []


async def test_message_history_survives_a_restart_through_the_checkpoints() -> None:
    store = open_store("memory://")

    @oh.tool(requires_approval=True)
    def wipe(path: str) -> str:
        """Delete a path."""
        return f"wiped {path}"

    def reply(request: ModelRequest) -> Any:
        if request.messages[-1].role == "user":
            return oh.ToolCall("wipe", {"path": "/tmp/x"}, "c1")
        return "seen: " + " | ".join(m.content or "" for m in request.messages if m.role == "user")

    def make() -> oh.Agent:
        return oh.Agent(ScriptedModel(reply), tools=[wipe], checkpointer=Checkpointer(store))

    paused = await make().run("Clean up.", message_history=CHAT, run_id="chat-1")
    assert paused.stop_reason == "approval_required"
    # A new process: the paused run comes back from the store with its conversation.
    res = await make().resume_run("chat-1", {"c1": True})
    assert res.output == "seen: My name is Ada. | Clean up."
    assert res.run_id == "chat-1"


# ---- run ids ----------------------------------------------------------------------------


async def test_run_id_is_the_callers_and_names_the_checkpoints() -> None:
    store = open_store("memory://")
    ckpt = Checkpointer(store)

    @oh.tool(requires_approval=True)
    def send(to: str) -> str:
        """Send mail."""
        return "sent"

    agent = oh.Agent(
        ScriptedModel([oh.ToolCall("send", {"to": "bob"}, "c1"), "ok"]),
        tools=[send],
        checkpointer=ckpt,
    )
    res = await agent.run("mail bob", run_id="order-42:mail")
    assert res.run_id == "order-42:mail"
    assert await ckpt.runs() == ["order-42:mail"]
    cp = await ckpt.load("order-42:mail")
    assert cp is not None
    assert cp.state.run_id == "order-42:mail"


async def test_generated_run_ids_follow_one_scheme_and_are_unique() -> None:
    agent = oh.Agent(ScriptedModel(["a", "b"]))
    first, second = await agent.run("1"), await agent.run("2")
    pattern = re.compile(r"run-[0-9a-f]{12}-\d+")
    assert pattern.fullmatch(first.run_id)
    assert pattern.fullmatch(second.run_id)
    assert first.run_id != second.run_id
    assert pattern.fullmatch(new_run_id())
    assert valid_run_id(first.run_id) == first.run_id


@pytest.mark.parametrize("bad", ["", "has space", "../etc", "x" * 129, "-lead", 7])
async def test_invalid_run_ids_are_refused(bad: Any) -> None:
    model = ScriptedModel(["x"])
    agent = oh.Agent(model)
    with pytest.raises(ConfigError, match="invalid run id"):
        await agent.run("hi", run_id=bad)
    assert model.requests == []


async def test_a_run_id_in_flight_cannot_be_reused() -> None:
    import asyncio

    gate = asyncio.Event()

    @oh.tool
    async def wait() -> str:
        """Wait for the test."""
        await gate.wait()
        return "done"

    agent = oh.Agent(
        ScriptedModel([oh.ToolCall("wait", {}), "one", "two"]),
        tools=[wait],
        checkpointer=Checkpointer(open_store("memory://")),
    )
    first = asyncio.create_task(agent.run("1", run_id="same"))
    for _ in range(100):
        await asyncio.sleep(0)
    with pytest.raises(ConfigError, match="already running"):
        await agent.run("2", run_id="same")
    gate.set()
    assert (await first).output == "one"


async def test_resume_refuses_a_new_identity() -> None:
    @oh.tool(requires_approval=True)
    def rm(path: str) -> str:
        """Remove a file."""
        return "gone"

    agent = oh.Agent(ScriptedModel([oh.ToolCall("rm", {"path": "a"}, "c1"), "ok"]), tools=[rm])
    paused = await agent.run("rm a")
    with pytest.raises(ConfigError, match="leave out session=, message_history= and run_id="):
        await agent.run(resume=paused, approvals={"c1": True}, run_id="other")
    assert (await agent.resume(paused, {"c1": True})).output == "ok"


# ---- RunSettings ------------------------------------------------------------------------


async def test_each_run_gets_frozen_settings_with_its_overrides() -> None:
    model = ScriptedModel(["a", "b"])
    agent = oh.Agent(model, name="s", max_iterations=3, model_settings={"temperature": 0.1})
    assert agent.settings == RunSettings(
        agent="s", max_iterations=3, model_settings=oh.ModelSettings(temperature=0.1)
    )
    with pytest.raises(AttributeError):
        agent.settings.max_iterations = 5  # type: ignore[misc]
    await agent.run("x", model_settings={"temperature": 0.9, "seed": 1})
    assert model.requests[0].settings == oh.ModelSettings(temperature=0.9, seed=1)
    assert agent.model_settings == oh.ModelSettings(temperature=0.1)  # the agent's are kept
    agent.max_iterations = 7
    assert agent.settings.max_iterations == 7
    with pytest.raises(ConfigError, match="max_iterations must be >= 1"):
        agent.max_iterations = 0
    assert agent.settings.max_iterations == 7
    with pytest.raises(ConfigError, match="run_timeout must be a positive number"):
        RunSettings(run_timeout=-1)


# ---- result_of ----------------------------------------------------------------------------


async def test_result_of_drains_a_stream_to_its_result() -> None:
    agent = oh.Agent(ScriptedModel(["streamed answer"]))
    res = await result_of(agent.stream("hi"))
    assert res.output == "streamed answer"
    assert res.stop_reason == "final"


async def test_result_of_a_stream_without_done_raises() -> None:
    async def cut_short() -> Any:
        yield TextDelta("partial")

    with pytest.raises(AgentError, match="without a Done event"):
        await result_of(cut_short())


# ---- one default store URL, one history protocol -----------------------------------------


def test_one_default_store_url() -> None:
    from openheim.config import DEFAULT_STORE, default_store_url
    from openheim.stores.sqlite import _path_from_url

    assert DEFAULT_STORE_URL == "sqlite:///~/.openheim/state.db"
    assert DEFAULT_STORE == DEFAULT_STORE_URL
    assert default_store_url(None) == DEFAULT_STORE_URL  # no config file: the user-wide one
    assert _path_from_url(DEFAULT_STORE_URL) == _path_from_url("sqlite://")


@pytest.mark.parametrize("kind", ["memory", "store"])
async def test_histories_follow_one_protocol_and_add_a_run_once(kind: str) -> None:
    history: Any = (
        InMemoryHistory() if kind == "memory" else StoreHistory(open_store("memory://"), "t")
    )
    assert isinstance(history, HistoryStore)
    assert isinstance(history, oh.HistoryStore)
    assert (history.store is None) == (kind == "memory")
    msgs = [oh.Message.user("q"), oh.Message.assistant("a")]
    await history.append("s1", msgs, oh.Usage(3, 2, 1), run_id="r1")
    await history.append("s1", msgs, oh.Usage(3, 2, 1), run_id="r1")  # finished again: no-op
    assert await history.load("s1") == msgs
    assert await history.usage("s1") == oh.Usage(3, 2, 1)
    assert await history.has_run("s1", "r1")
    assert not await history.has_run("s1", "r2")
    assert await history.list_sessions() == ["s1"]
    assert await history.delete("s1") is True
    assert await history.delete("s1") is False
    assert await history.load("s1") == []


async def test_sessions_module_keeps_its_names() -> None:
    import openheim.sessions as sessions
    import openheim.stores.history as stored

    assert sessions.HistoryStore is stored.HistoryStore
    assert sessions.InMemoryHistory is stored.InMemoryHistory
    assert oh.InMemoryHistory is stored.InMemoryHistory
