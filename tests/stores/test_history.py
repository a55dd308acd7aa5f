"""Sessions in a store: list/load/delete, tenants, concurrent writers, agents on a store URL."""

from __future__ import annotations

import asyncio

import pytest

import openheim as oh
from openheim.errors import ConfigError, CorruptStateError, SessionBusyError, VersionConflictError
from openheim.messages import Message, Usage
from openheim.models import ScriptedModel
from openheim.sessions import HistoryStore
from openheim.stores import Store, StoreHistory, open_history, open_store


async def test_store_history_is_a_history_store(store: Store) -> None:
    history = StoreHistory(store)
    assert isinstance(history, HistoryStore)
    assert await history.load("s") == []
    await history.append("s", [Message.user("hi"), Message.assistant("hello")], Usage(3, 2, 1))
    await history.append("s", [Message.user("again"), Message.assistant("yes")], Usage(1, 1, 1))
    assert [m.content for m in await history.load("s")] == ["hi", "hello", "again", "yes"]
    assert await history.usage("s") == Usage(4, 3, 2)
    await history.append("t", [Message.user("x")])
    assert await history.list_sessions() == ["s", "t"]
    info = await history.info("s")
    assert info is not None
    assert info.messages == 4
    assert await history.delete("s") is True
    assert await history.delete("s") is False
    assert await history.load("s") == []
    assert await history.list_sessions() == ["t"]
    await history.clear("t")
    assert await history.list_sessions() == []


async def test_tenants_are_isolated(store: Store) -> None:
    a = StoreHistory(store)
    b = StoreHistory(store, namespace=store.ns + "-other")
    await a.append("shared-id", [Message.user("from a")])
    await b.append("shared-id", [Message.user("from b")])
    assert [m.content for m in await a.load("shared-id")] == ["from a"]
    assert [m.content for m in await b.load("shared-id")] == ["from b"]
    await b.delete("shared-id")
    assert await a.list_sessions() == ["shared-id"]


def _run_of(tag: str, n: int) -> list[Message]:
    return [Message.user(f"{tag}:{i}") for i in range(n)]


def _assert_blocks(messages: list[Message], tags: list[str], n: int) -> None:
    """Each writer's messages are one contiguous block, in its own order."""
    contents = [m.content or "" for m in messages]
    assert len(contents) == len(tags) * n
    for start in range(0, len(contents), n):
        block = contents[start : start + n]
        tag = block[0].split(":")[0]
        assert block == [f"{tag}:{i}" for i in range(n)], contents
    assert sorted(c.split(":")[0] for c in contents[::n]) == sorted(tags)


async def test_concurrent_writers_in_one_process_are_serialized(store: Store) -> None:
    history = StoreHistory(store)
    tags = [f"w{i}" for i in range(12)]
    await asyncio.gather(*(history.append("s", _run_of(t, 5)) for t in tags))
    _assert_blocks(await history.load("s"), tags, 5)


async def test_writers_with_their_own_handles_never_interleave(store: Store) -> None:
    # Separate StoreHistory objects share no lock: like separate processes, they race on CAS.
    handles = [StoreHistory(store, max_attempts=50) for _ in range(6)]
    tags = [f"p{i}" for i in range(6)]
    await asyncio.gather(
        *(h.append("s", _run_of(t, 4)) for h, t in zip(handles, tags, strict=False))
    )
    _assert_blocks(await handles[0].load("s"), tags, 4)


async def test_a_writer_that_keeps_losing_gets_session_busy(store: Store) -> None:
    history = StoreHistory(store, max_attempts=3)
    await history.append("s", [Message.user("first")])

    calls = 0

    class Racing:
        """The store, with another process writing the session just before each of our puts."""

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def put(self, key: str, value: bytes, **kw: int | None) -> int:
            nonlocal calls
            calls += 1
            current = await store.get(key)
            await store.put(key, current[0] if current else b"")
            return await store.put(key, value, **kw)

    history.store = Racing()  # type: ignore[assignment]
    with pytest.raises(SessionBusyError) as info:
        await history.append("s", [Message.user("lost")])
    assert isinstance(info.value, VersionConflictError)
    assert "session 's'" in str(info.value)
    assert calls == 3
    assert [m.content for m in await StoreHistory(store).load("s")] == ["first"]


async def test_appends_with_a_run_id_are_idempotent(store: Store) -> None:
    history = StoreHistory(store)
    await history.append("s", [Message.user("once")], run_id="run-1")
    await StoreHistory(store).append("s", [Message.user("once")], run_id="run-1")
    assert [m.content for m in await history.load("s")] == ["once"]


async def test_a_corrupt_session_names_its_key_and_others_still_work(store: Store) -> None:
    history = StoreHistory(store)
    await history.append("good", [Message.user("fine")])
    await history.append("bad", [Message.user("soon broken")])
    data, _ = (await store.get("session/bad")) or (b"", 0)
    await store.put("session/bad", data[:-3])  # truncated
    with pytest.raises(CorruptStateError, match=r"session .bad.*session/bad"):
        await history.load("bad")
    flipped = bytearray(data)
    flipped[-2] ^= 0x40
    await store.put("session/bad", bytes(flipped))
    with pytest.raises(CorruptStateError, match="session/bad"):
        await history.load("bad")
    assert [m.content for m in await history.load("good")] == ["fine"]
    await history.append("good", [Message.user("more")])
    assert len(await history.load("good")) == 2


async def test_agent_sessions_survive_a_new_process_on_sqlite(tmp_path: object) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    history = open_history(url, namespace="tenant-a")
    agent = oh.Agent(ScriptedModel(lambda r: f"seen {len(r.messages)}"), history=history)
    await agent.run("one", session="u1")
    await agent.run("two", session="u1")
    await history.aclose()
    # A fresh store on the same file: as after a restart.
    again = open_history(url, namespace="tenant-a")
    model = ScriptedModel(lambda r: f"seen {len(r.messages)}")
    agent2 = oh.Agent(model, history=again)
    res = await agent2.run("three", session="u1")
    assert [m.content for m in model.requests[0].messages] == [
        "one",
        "seen 1",
        "two",
        "seen 3",
        "three",
    ]
    assert res.output == "seen 5"
    assert await again.list_sessions() == ["u1"]
    assert await open_history(url, namespace="tenant-b").list_sessions() == []
    await again.aclose()


def test_open_store_rejects_unknown_urls() -> None:
    with pytest.raises(ConfigError, match="unknown store URL"):
        open_store("ftp://x")
