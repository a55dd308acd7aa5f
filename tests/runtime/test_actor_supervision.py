"""Supervision (restarts with state restored, the restart budget, dead letters),
backpressure policies and stopping with a deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openheim.errors import ActorFailed, ActorStopped, MailboxFull, MessageDropped
from openheim.runtime import ActorContext, ChildFailed, RestartPolicy, Runtime

FAST = RestartPolicy(retries=2, backoff=0.001, max_backoff=0.01, max_restarts=10, within=60)


class Account:
    """A virtual actor whose handler fails on demand."""

    made = 0

    def __init__(self) -> None:
        Account.made += 1

    async def receive(self, msg: Any, ctx: ActorContext) -> Any:
        if ctx.state is None:
            ctx.state = 0
        if msg == "get":
            return ctx.state
        if msg == "save":
            await ctx.save()
            return ctx.state
        if isinstance(msg, int):
            ctx.state += msg
            return ctx.state
        raise RuntimeError(f"bad message {msg!r}")


async def test_failing_handler_is_restarted_with_its_last_snapshot() -> None:
    flaky = {"left": 1}

    async def flaky_handler(msg: Any, ctx: ActorContext) -> Any:
        if msg == "flaky" and flaky["left"] > 0:
            flaky["left"] -= 1
            ctx.state = 999  # changes made by a failed attempt are thrown away
            raise ConnectionError("transient")
        if msg == "flaky":
            return ("ok", ctx.state)
        return await Account().receive(msg, ctx)

    async with Runtime(restart=FAST) as rt:
        Account.made = 0
        rt.register("acct", lambda actor_id: Account())
        ref = rt.ref("acct/1")
        await ref.ask(10)
        assert await ref.ask("save") == 10  # snapshot: 10
        await ref.ask(5)  # 15, not snapshotted
        with pytest.raises(ActorFailed, match="kept failing"):
            await ref.ask("boom")
        # Restarted (new objects from the factory), state back to the snapshot.
        assert Account.made >= 3
        assert await ref.ask("get") == 10
        assert rt.stats()["failures"] == 3  # the first try and two retries

        # A transient failure is retried and succeeds; the ask never sees it.
        rt.register("flaky", lambda actor_id: flaky_handler)
        fl = rt.ref("flaky/1")
        await fl.ask(1)
        await fl.ask("save")
        assert await fl.ask("flaky") == ("ok", 1)  # retried on a restarted actor, state restored
    assert flaky["left"] == 0


async def test_a_message_that_keeps_failing_goes_to_the_dead_letter_log() -> None:
    async with Runtime(restart=FAST) as rt:
        rt.register("acct", lambda actor_id: Account())
        ref = rt.ref("acct/dl")
        with pytest.raises(ActorFailed) as info:
            await ref.ask({"op": "explode"})
        assert isinstance(info.value.__cause__, RuntimeError)
        assert info.value.actor == "acct/dl"
        # The actor goes on with the next message.
        assert await ref.ask(3) == 3
        letters = await rt.dead_letters()
        assert len(letters) == 1
        assert letters[0].actor == "acct/dl"
        assert letters[0].message == {"op": "explode"}
        assert letters[0].error_type == "RuntimeError"
        assert "bad message" in letters[0].error
        assert letters[0].seq == 1


async def test_the_restart_budget_stops_the_actor_and_tells_its_parent() -> None:
    policy = RestartPolicy(retries=0, backoff=0.001, max_restarts=2, within=60)
    told: list[ChildFailed] = []
    child_ref: list[Any] = []

    async def always_fails(msg: Any, ctx: ActorContext) -> None:
        raise ValueError("no")

    async def parent(msg: Any, ctx: ActorContext) -> Any:
        if isinstance(msg, ChildFailed):
            told.append(msg)
            return None
        child_ref.append(ctx.spawn(always_fails, id="parent/kid"))
        return None

    async with Runtime(restart=policy) as rt:
        p = rt.spawn(parent, id="parent")
        await p.ask("start")
        kid = child_ref[0]
        for _ in range(2):  # two restarts are within the budget
            with pytest.raises(ActorFailed, match="kept failing"):
                await kid.ask("x")
        with pytest.raises(ActorFailed, match="restart budget"):
            await kid.ask("x")
        await rt.wait_idle()
        assert [t.child for t in told] == ["parent/kid"]
        assert "ValueError: no" in told[0].error
        with pytest.raises(ActorStopped):
            kid.send("y")
        assert len(await rt.dead_letters()) == 3


async def _blocked_actor(
    rt: Runtime, overflow: Any, size: int = 2
) -> tuple[Any, asyncio.Event, list[Any]]:
    gate = asyncio.Event()
    handled: list[Any] = []

    async def slow(msg: Any, ctx: ActorContext) -> Any:
        if msg == 1:
            await gate.wait()
        handled.append(msg)
        return msg

    ref = rt.spawn(slow, mailbox_size=size, overflow=overflow)
    ref.send(1)
    await asyncio.sleep(0.01)  # 1 is being handled (blocked); the mailbox is empty
    return ref, gate, handled


async def test_overflow_fail_raises_a_clear_error_and_loses_nothing_queued() -> None:
    async with Runtime() as rt:
        ref, gate, handled = await _blocked_actor(rt, "fail")
        ref.send(2)
        ref.send(3)
        assert rt.mailbox_depth(ref.id) == 2
        with pytest.raises(MailboxFull, match="is full \\(2 messages\\)"):
            ref.send(4)
        gate.set()
        await rt.wait_idle()
        assert handled == [1, 2, 3]


async def test_overflow_wait_makes_put_wait_for_room() -> None:
    async with Runtime() as rt:
        ref, gate, handled = await _blocked_actor(rt, "wait")
        ref.send(2)
        ref.send(3)
        with pytest.raises(MailboxFull, match=r"await ref\.put"):
            ref.send(4)
        putter = asyncio.ensure_future(ref.put(4))
        await asyncio.sleep(0.01)
        assert not putter.done()  # waiting for room
        gate.set()
        await asyncio.wait_for(putter, 10)
        await rt.wait_idle()
        assert handled == [1, 2, 3, 4]
        assert rt.stats()["queued"] == 0


async def test_overflow_drop_oldest_keeps_the_newest_in_order() -> None:
    async with Runtime() as rt:
        ref, gate, handled = await _blocked_actor(rt, "drop_oldest")
        asked = asyncio.ensure_future(ref.ask(2))
        await asyncio.sleep(0)
        for m in (3, 4, 5, 6, 7):
            ref.send(m)
        gate.set()
        with pytest.raises(MessageDropped, match="overflowed"):
            await asked
        await rt.wait_idle()
        assert handled == [1, 6, 7]
        assert rt.stats()["dropped"] == 4


async def test_stop_with_a_deadline_snapshots_and_fails_what_is_left() -> None:
    gate = asyncio.Event()

    async def slow(msg: Any, ctx: ActorContext) -> Any:
        ctx.state = (ctx.state or 0) + 1
        if msg == "block":
            await gate.wait()
        return ctx.state

    rt = Runtime()
    await rt.start()
    rt.register("slow", lambda actor_id: slow)
    quick = rt.ref("slow/quick")
    assert await quick.ask("a") == 1
    blocked = rt.ref("slow/blocked")
    asks = [asyncio.ensure_future(blocked.ask(m)) for m in ("block", "x", "y")]
    await asyncio.sleep(0.01)
    store = rt.store
    await rt.stop(deadline=0.05)
    for a in asks:
        with pytest.raises(MessageDropped, match="runtime stopped"):
            await a
    got = await store.get("actor/slow/quick")
    assert got is not None  # the idle actor was snapshotted
    with pytest.raises(Exception, match="not running"):
        rt.spawn(slow)
