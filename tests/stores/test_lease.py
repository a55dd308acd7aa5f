"""Leases on every backend: one holder at a time, renewal, release, takeover after expiry.

Contenders use separate connections to the store (a second SQLite writer
thread, a second Redis client, a second PostgreSQL pool), as two processes
would. Expiry is waited for by polling, never by asserting how long it took.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from openheim.errors import ConfigError, CorruptStateError
from openheim.stores import Store
from openheim.stores.lease import Lease, LeaseInfo


async def _poll(predicate: object, limit: float = 30.0) -> None:
    """Wait until ``await predicate()`` is true (fail after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("the condition did not become true in time")
        await asyncio.sleep(0.05)


def _held(lease: Lease) -> bool:
    return lease.held  # (a function: mypy would narrow the property across awaits)


async def test_one_holder_at_a_time(store: Store, other: Store) -> None:
    a = Lease(store, "res", holder="a", ttl=30)
    b = Lease(other, "res", holder="b", ttl=30)
    assert await a.acquire()
    assert _held(a)
    assert not await b.acquire()
    assert not _held(b)
    info = await b.info()
    assert info is not None
    assert info.holder == "a"
    assert await a.acquire()  # re-acquiring our own lease extends it
    await a.release()
    assert not _held(a)
    assert await b.info() is None
    assert await b.acquire()
    assert not await a.acquire()
    assert not await a.renew()  # released: renewing does not take it back


async def test_concurrent_contenders_have_one_winner(store: Store, other: Store) -> None:
    stores = [store, other]
    for round_ in range(10):
        leases = [Lease(stores[i % 2], f"race-{round_}", holder=f"h{i}", ttl=30) for i in range(6)]
        wins = await asyncio.gather(*(lease.acquire() for lease in leases))
        assert sum(wins) == 1, wins
        winner = leases[wins.index(True)]
        info = await Lease(store, f"race-{round_}").info()
        assert info is not None
        assert info.holder == winner.holder


async def test_renew_keeps_the_lease(store: Store, other: Store) -> None:
    a = Lease(store, "kept", holder="a", ttl=30)
    b = Lease(other, "kept", holder="b", ttl=30)
    assert await a.acquire()
    for _ in range(3):
        assert await a.renew()
        assert not await b.acquire()
    info = await b.info()
    assert info is not None
    assert info.holder == "a"


async def test_expired_lease_is_taken_over(store: Store, other: Store) -> None:
    a = Lease(store, "crashy", holder="a", ttl=0.3)
    b = Lease(other, "crashy", holder="b", ttl=30)
    assert await a.acquire()
    # "a" dies without releasing; "b" polls until the lease has expired, then takes it.
    await _poll(b.acquire)
    assert _held(b)
    info = await a.info()
    assert info is not None
    assert info.holder == "b"
    # The old holder finds out: it can neither renew nor take the lease back.
    assert not await a.renew()
    assert not _held(a)
    assert not await a.acquire()
    await a.release()  # releasing a lost lease leaves the new holder's alone
    info = await b.info()
    assert info is not None
    assert info.holder == "b"


async def test_kept_renews_in_the_background_and_releases(store: Store, other: Store) -> None:
    a = Lease(store, "bg", holder="a", ttl=0.6)
    b = Lease(other, "bg", holder="b", ttl=30)
    assert await a.acquire()
    async with a.kept(every=0.05):
        # Several lease lifetimes pass, measured by a's own writes: each renewal
        # moves the expiry, and b never gets the lease in between.
        seen: set[float] = set()
        while len(seen) < 6:
            info = await b.info()
            assert info is not None
            assert info.holder == "a"
            seen.add(info.expires)
            assert not await b.acquire()
            await asyncio.sleep(0.05)
    assert not _held(a)
    assert await b.acquire()


async def test_kept_reports_a_lost_lease(store: Store, other: Store) -> None:
    a = Lease(store, "lost", holder="a", ttl=30)
    assert await a.acquire()
    # Another holder overwrites the key (as a takeover after expiry would).
    thief = Lease(other, "lost", holder="thief", ttl=30)
    value = msgspec.msgpack.encode(LeaseInfo("thief", time.time() + 3600))
    await other.put("lease/lost", value)
    lost = asyncio.Event()
    async with a.kept(every=0.02, on_lost=lost.set):
        await asyncio.wait_for(lost.wait(), 30)
    assert not _held(a)
    info = await thief.info()
    assert info is not None
    assert info.holder == "thief"


async def test_bad_arguments_and_foreign_keys(store: Store) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        Lease(store, "x", ttl=0)
    with pytest.raises(ConfigError, match="lease name"):
        Lease(store, "")
    await store.put("lease/garbage", b"not a lease")
    with pytest.raises(CorruptStateError, match="lease/garbage"):
        await Lease(store, "garbage").acquire()
    with pytest.raises(ConfigError, match="acquire"):
        async with Lease(store, "never").kept():
            pass


async def test_leases_are_per_namespace(store: Store) -> None:
    a = Lease(store, "ns", holder="a")
    b = Lease(store.namespace(store.ns + "-other"), "ns", holder="b")
    assert await a.acquire()
    assert await b.acquire()
    await a.release()
    await b.release()


async def test_checkpointed_runs_hold_their_lease_while_they_run(store: Store) -> None:
    import openheim as oh
    from openheim.models import ScriptedModel
    from openheim.stores.checkpoint import Checkpointer
    from openheim.stores.history import StoreHistory

    started, release = asyncio.Event(), asyncio.Event()

    @oh.tool
    async def slow() -> str:
        """Wait for the test."""
        started.set()
        await release.wait()
        return "ok"

    agent = oh.Agent(
        ScriptedModel([oh.ToolCall("slow", {}), "done"]),
        tools=[slow],
        history=StoreHistory(store),
        checkpointer=Checkpointer(store, lease_ttl=30),
    )
    task = asyncio.ensure_future(agent.run("go"))
    await asyncio.wait_for(started.wait(), 30)
    [run_id] = [name[len("run/") :] for name in await store.list_logs("run/")]
    lease = Lease(store, "run/" + run_id, holder="a-server")

    async def held() -> bool:
        return await lease.info() is not None

    await _poll(held)
    assert not await lease.acquire()  # a server would leave this run alone
    release.set()
    assert (await asyncio.wait_for(task, 30)).output == "done"

    async def released() -> bool:
        return await lease.info() is None

    await _poll(released)
