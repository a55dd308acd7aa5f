"""One behaviour for every Store backend: versions, compare-and-set, TTL, logs, namespaces."""

from __future__ import annotations

import asyncio

import pytest

from openheim.errors import ConfigError, VersionConflictError
from openheim.stores import Store


async def test_get_put_versions(store: Store) -> None:
    assert await store.get("a") is None
    assert await store.put("a", b"one") == 1
    assert await store.get("a") == (b"one", 1)
    assert await store.put("a", b"two") == 2
    assert await store.get("a") == (b"two", 2)
    assert await store.put("empty", b"") == 1
    assert await store.get("empty") == (b"", 1)
    blob = bytes(range(256)) * 1000
    await store.put("blob", blob)
    assert await store.get("blob") == (blob, 1)


async def test_compare_and_set(store: Store) -> None:
    assert await store.put("k", b"v1", expect_version=0) == 1
    with pytest.raises(VersionConflictError) as info:
        await store.put("k", b"again", expect_version=0)
    assert info.value.key == "k"
    assert info.value.expected == 0
    assert info.value.actual == 1
    assert await store.put("k", b"v2", expect_version=1) == 2
    with pytest.raises(VersionConflictError) as info:
        await store.put("k", b"stale", expect_version=1)
    assert info.value.actual == 2
    assert await store.get("k") == (b"v2", 2)
    with pytest.raises(VersionConflictError):
        await store.put("missing", b"x", expect_version=3)
    assert await store.get("missing") is None


async def test_delete(store: Store) -> None:
    assert await store.delete("nothing") is False
    await store.put("d", b"x")
    await store.put("d", b"y")
    with pytest.raises(VersionConflictError):
        await store.delete("d", expect_version=1)
    assert await store.get("d") == (b"y", 2)
    assert await store.delete("d", expect_version=2) is True
    assert await store.get("d") is None
    # Re-created keys start again at version 1.
    assert await store.put("d", b"z", expect_version=0) == 1


async def test_concurrent_cas_has_one_winner(store: Store) -> None:
    await store.put("counter", b"0")

    async def bump() -> bool:
        got = await store.get("counter")
        assert got is not None
        try:
            await store.put("counter", str(int(got[0]) + 1).encode(), expect_version=got[1])
        except VersionConflictError:
            return False
        return True

    for _ in range(3):
        wins = await asyncio.gather(*(bump() for _ in range(8)))
        assert sum(wins) >= 1
    value, version = (await store.get("counter")) or (b"", 0)
    assert int(value) == version - 1  # every successful write saw the previous one


async def test_ttl_expiry(store: Store) -> None:
    # A generous ttl, so that a loaded machine still reads the key before it expires.
    await store.put("short", b"x", ttl=1.0)
    await store.put("long", b"y", ttl=60)
    await store.put("forever", b"z")
    assert await store.get("short") == (b"x", 1)
    await asyncio.sleep(1.2)
    assert await store.get("short") is None
    assert await store.list() == ["forever", "long"]
    # An expired key counts as absent: create-only succeeds, at version 1.
    assert await store.put("short", b"again", expect_version=0) == 1
    # Writing without ttl makes the key persistent again.
    await store.put("long", b"y2")
    assert await store.get("long") == (b"y2", 2)
    with pytest.raises(ConfigError):
        await store.put("bad", b"x", ttl=0)


async def test_list_by_prefix(store: Store) -> None:
    for key in ["session/a", "session/b", "session/a/x", "run/1", "sess", "100%_done", "10_x"]:
        await store.put(key, b"1")
    assert await store.list("session/") == ["session/a", "session/a/x", "session/b"]
    assert await store.list("run/") == ["run/1"]
    assert await store.list("nothing/") == []
    # Wildcard characters in a prefix are matched literally.
    assert await store.list("100%") == ["100%_done"]
    assert await store.list("10_") == ["10_x"]
    assert await store.list("*") == []
    assert len(await store.list()) == 7


async def test_namespaces_are_isolated(store: Store) -> None:
    other = store.namespace(store.ns + "-other")
    await store.put("shared", b"mine")
    assert await other.get("shared") is None
    await other.put("shared", b"theirs")
    assert await store.get("shared") == (b"mine", 1)
    assert await other.list() == ["shared"]
    await store.append("log", b"a")
    assert await other.read_log("log") == []
    assert await other.append("log", b"b") == 1
    assert await store.list_logs() == ["log"]


async def test_logs_append_read_trim(store: Store) -> None:
    assert await store.read_log("l") == []
    assert await store.last_seq("l") == 0
    seqs = [await store.append("l", f"r{i}".encode()) for i in range(1, 6)]
    assert seqs == [1, 2, 3, 4, 5]
    assert await store.last_seq("l") == 5
    assert await store.read_log("l") == [(i, f"r{i}".encode()) for i in range(1, 6)]
    assert await store.read_log("l", after=3) == [(4, b"r4"), (5, b"r5")]
    await store.trim_log("l", 2)
    assert [s for s, _ in await store.read_log("l")] == [3, 4, 5]
    # Numbers are never reused after a trim.
    assert await store.append("l", b"r6") == 6
    await store.trim_log("l", 100)
    assert await store.read_log("l") == []
    assert await store.last_seq("l") == 6  # (trimmed: the numbering goes on)
    assert await store.append("l", b"r7") == 7
    await store.append("run/x", b"x")
    assert await store.list_logs("run/") == ["run/x"]
    await store.delete_log("l")
    assert await store.read_log("l") == []
    assert await store.last_seq("l") == 0
    assert "l" not in await store.list_logs()
    assert await store.append("l", b"new") == 1


async def test_concurrent_appends_get_distinct_numbers(store: Store) -> None:
    seqs = await asyncio.gather(*(store.append("c", bytes([i])) for i in range(40)))
    assert sorted(seqs) == list(range(1, 41))
    records = await store.read_log("c")
    assert [s for s, _ in records] == list(range(1, 41))
    assert {r for _, r in records} == {bytes([i]) for i in range(40)}


async def test_bad_arguments(store: Store) -> None:
    with pytest.raises(ConfigError):
        await store.put("", b"x")
    with pytest.raises(ConfigError):
        await store.put("k", "text")  # type: ignore[arg-type]


async def test_concurrent_blind_puts_get_distinct_versions(store: Store) -> None:
    versions = await asyncio.gather(*(store.put("fresh", bytes([i])) for i in range(16)))
    assert sorted(versions) == list(range(1, 17))
    got = await store.get("fresh")
    assert got is not None
    assert got[1] == 16
