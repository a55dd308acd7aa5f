"""A private redis-server restarted under the Redis store and the Redis queue: calls made
while it is away wait for it, nothing acknowledged is lost, nothing lands twice, and no
connection is left for the garbage collector to close."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from pathlib import Path

import pytest
from batchhelpers import REDIS_URL, private_redis

from openheim.errors import VersionConflictError
from openheim.stores.redis import RedisStore

pytestmark = pytest.mark.redis


def _no_resource_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaked = [str(c.message) for c in caught if issubclass(c.category, ResourceWarning)]
    assert not leaked, leaked


async def test_the_store_rides_a_restart_out_without_losing_or_doubling_a_write(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path) as server:
        store = RedisStore(server.url, "restart")
        try:
            assert await store.put("k", b"v1") == 1
            stop = asyncio.Event()
            written: list[bytes] = []
            versions: list[int] = []

            async def appender(i: int) -> None:
                n = 0
                while not stop.is_set():
                    rec = f"{i}-{n}".encode()
                    await store.append("log", rec)  # waits while the server is away
                    written.append(rec)
                    n += 1

            async def putter() -> None:
                ver = 1
                while not stop.is_set():
                    ver = await store.put("k", os.urandom(8), expect_version=ver)
                    versions.append(ver)

            tasks = [asyncio.ensure_future(appender(i)) for i in range(4)]
            tasks.append(asyncio.ensure_future(putter()))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.stop)  # AOF, fsync always: acked writes are on disk
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*tasks)  # none of them raised
            recs = [r for _, r in await store.read_log("log")]
            assert len(recs) == len(set(recs))  # nothing twice
            assert set(written) <= set(recs)  # nothing acknowledged was lost
            assert len(set(recs) - set(written)) <= 4  # (at most the one in flight of each)
            # every compare-and-set went through once: versions rose by one each time
            assert versions == list(range(2, len(versions) + 2))
            got = await store.get("k")
            assert got is not None
            assert got[1] == versions[-1]
            with pytest.raises(VersionConflictError):
                await store.put("k", b"x", expect_version=1)
            await store.delete_log("log")
            await store.delete("k")
        finally:
            await store.aclose()
    _no_resource_warnings()


async def test_read_log_reads_only_what_follows_after() -> None:
    """read_log(after) fetches the records after ``after`` (a script reading the fields up
    to the counter, or the whole hash when trimming left it much shorter)."""
    store = RedisStore(REDIS_URL, f"t{uuid.uuid4().hex[:10]}")
    try:
        for i in range(600):
            await store.append("L", f"r{i + 1}".encode())
        assert [s for s, _ in await store.read_log("L", 595)] == [596, 597, 598, 599, 600]
        assert await store.read_log("L", 600) == []
        await store.trim_log("L", 590)
        got = await store.read_log("L")
        assert got == [(s, f"r{s}".encode()) for s in range(591, 601)]
        assert [s for s, _ in await store.read_log("L", 598)] == [599, 600]
    finally:
        await store.delete_log("L")
        await store.aclose()
