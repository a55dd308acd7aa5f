"""Virtual actors: activation from the store, passivation when idle or beyond the LRU limit,
and a round trip across a real process restart on SQLite and Redis."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from openheim.runtime import ActorContext, Runtime

REDIS_URL = os.environ.get("OPENHEIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OPENHEIM_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)
URLS = {"redis": REDIS_URL, "postgres": POSTGRES_URL}


class Tally(msgspec.Struct):
    count: int = 0
    seen: list[str] = msgspec.field(default_factory=list)


async def tally(msg: Any, ctx: ActorContext) -> Any:
    if ctx.state is None:
        ctx.state = Tally()
    if msg == "get":
        return ctx.state
    ctx.state.count += 1
    ctx.state.seen.append(msg)
    return ctx.state.count


def make_tally(actor_id: str) -> Any:
    return tally


async def test_first_message_activates_and_idle_actors_are_passivated_to_the_store() -> None:
    async with Runtime(passivate_after=0.05) as rt:
        rt.register("tally", make_tally, state_type=Tally)
        ref = rt.ref("tally/a")
        assert rt.live() == []  # addressing does not activate
        assert await ref.ask("x") == 1
        assert await ref.ask("y") == 2
        assert rt.live() == ["tally/a"]
        for _ in range(200):  # passivation runs on the loop's timer
            if not rt.live():
                break
            await asyncio.sleep(0.02)
        assert rt.live() == []
        assert rt.stats()["passivated"] == 1
        assert await rt.store.get("actor/tally/a") is not None
        # The same ref reactivates it, state restored (typed).
        state = await ref.ask("get")
        assert state == Tally(count=2, seen=["x", "y"])
        assert await ref.ask("z") == 3


async def test_least_recently_used_actors_are_evicted_beyond_max_live_actors() -> None:
    async with Runtime(max_live_actors=3) as rt:
        rt.register("tally", make_tally, state_type=Tally)
        for i in range(10):
            assert await rt.ref(f"tally/{i}").ask("a") == 1
            assert len(rt.live()) <= 3
        assert rt.live() == ["tally/7", "tally/8", "tally/9"]
        # Every evicted actor comes back with its state.
        for i in range(10):
            assert await rt.ref(f"tally/{i}").ask("b") == 2
        assert len(rt.live()) <= 3


async def test_messages_sent_during_passivation_see_the_saved_state() -> None:
    async with Runtime(max_live_actors=1) as rt:
        rt.register("tally", make_tally, state_type=Tally)
        a, b = rt.ref("tally/a"), rt.ref("tally/b")
        await a.ask("1")
        b.send("1")  # evicts a; its snapshot write is in flight
        a.send("2")  # reactivation must wait for that write
        assert (await a.ask("get")).count == 2
        assert (await b.ask("get")).count == 1


async def test_stop_snapshots_live_actors_and_a_new_runtime_reactivates_them(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/v.db"
    async with Runtime(store=url) as rt:
        rt.register("tally", make_tally, state_type=Tally)
        for word in ("a", "b", "c"):
            rt.ref("tally/k").send(word)
    async with Runtime(store=url) as rt2:
        rt2.register("tally", make_tally, state_type=Tally)
        assert await rt2.ref("tally/k").ask("get") == Tally(3, ["a", "b", "c"])


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import msgspec
    from openheim.runtime import Runtime

    class Tally(msgspec.Struct):
        count: int = 0
        seen: list[str] = msgspec.field(default_factory=list)

    async def tally(msg, ctx):
        if ctx.state is None:
            ctx.state = Tally()
        if msg == "get":
            return ctx.state
        ctx.state.count += 1
        ctx.state.seen.append(msg)
        return ctx.state.count

    async def main(url, ns, words):
        async with Runtime(store=url, namespace=ns, passivate_after=0.05) as rt:
            rt.register("tally", lambda actor_id: tally, state_type=Tally)
            ref = rt.ref("tally/order-1")
            got = await ref.ask("get")
            before = f"{got.count} {','.join(got.seen)}".strip()  # before it changes
            for w in words:
                await ref.ask(w)
            while rt.live():  # idle: it is passivated to the store
                await asyncio.sleep(0.02)
            print(before, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
    """
)


def _child(script: Path, url: str, ns: str, *words: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(script), url, ns, *words],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
async def test_passivated_actor_survives_a_process_restart(tmp_path: Path, backend: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    ns = f"rt-{uuid.uuid4().hex[:12]}"
    url = f"sqlite:///{tmp_path}/state.db" if backend == "sqlite" else URLS[backend]
    try:
        first = await asyncio.to_thread(_child, script, url, ns, "a", "b")
        assert first == "0"  # a fresh id: empty state
        second = await asyncio.to_thread(_child, script, url, ns, "c")
        assert second == "2 a,b"  # the first process's state, reactivated
        third = await asyncio.to_thread(_child, script, url, ns)
        assert third == "3 a,b,c"
    finally:
        from openheim.stores import open_store

        store = open_store(url, namespace=ns)
        for key in await store.list():
            await store.delete(key)
        await store.aclose()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
async def test_passivation_and_reactivation_on_the_real_stores(backend: str) -> None:
    ns = f"rt-{uuid.uuid4().hex[:12]}"
    url = URLS[backend]
    try:
        async with Runtime(store=url, namespace=ns, max_live_actors=4, passivate_after=30) as rt:
            rt.register("tally", make_tally, state_type=Tally)
            for round_ in ("a", "b", "c"):  # 20 ids through 4 live slots, three times over
                counts = await asyncio.gather(
                    *(rt.ref(f"tally/{i}").ask(round_) for i in range(20))
                )
                assert counts == [ord(round_) - ord("a") + 1] * 20
                assert len(rt.live()) <= 4 + 20  # activations may exceed the limit while busy
            await rt.wait_idle()
            for _ in range(200):  # a burst's activations are trimmed back once idle
                if len(rt.live()) <= 4:
                    break
                await asyncio.sleep(0.01)
            assert len(rt.live()) <= 4
            assert rt.stats()["passivated"] >= 16
            # Every id that is not live now was passivated: its state is in the store.
            live = set(rt.live())
            gone = [i for i in range(20) if f"tally/{i}" not in live]
            assert len(gone) >= 16
            for i in gone:
                assert await rt.store.get(f"actor/tally/{i}") is not None, i
            assert await rt.ref("tally/3").ask("get") == Tally(count=3, seen=["a", "b", "c"])
        # A new runtime on the same store: every id comes back with its state.
        async with Runtime(store=url, namespace=ns) as rt2:
            rt2.register("tally", make_tally, state_type=Tally)
            states = await asyncio.gather(*(rt2.ref(f"tally/{i}").ask("get") for i in range(20)))
            assert all(s == Tally(count=3, seen=["a", "b", "c"]) for s in states)
    finally:
        from openheim.stores import open_store

        store = open_store(url, namespace=ns)
        for key in await store.list():
            await store.delete(key)
        await store.aclose()
