"""Asks to an idle actor run its handler in the caller; one message at a time and
per-sender order hold when such a handler waits, sends to itself or fails."""

from __future__ import annotations

import asyncio
from typing import Any

from openheim.runtime import ActorContext, RestartPolicy, Runtime


async def test_a_handler_that_waits_finishes_before_later_messages_start() -> None:
    log: list[str] = []
    running = [0]

    async def slow(msg: str, ctx: ActorContext) -> str:
        running[0] += 1
        assert running[0] == 1, "two messages at once"
        log.append(f"start {msg}")
        await asyncio.sleep(0.01)
        log.append(f"end {msg}")
        running[0] -= 1
        return msg.upper()

    async with Runtime() as rt:
        ref = rt.spawn(slow, id="slow")
        first = asyncio.ensure_future(ref.ask("a"))  # idle: runs inline, then waits
        await asyncio.sleep(0)
        ref.send("b")
        second = asyncio.ensure_future(ref.ask("c"))
        assert await first == "A"
        assert await second == "C"
        await rt.wait_idle()
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_messages_a_handler_sends_itself_come_after_it_in_order() -> None:
    log: list[Any] = []

    async def handler(msg: Any, ctx: ActorContext) -> Any:
        log.append(msg)
        if msg == "go":
            ctx.self.send("next-1")
            ctx.self.send("next-2")
            await asyncio.sleep(0.01)  # the sends are queued behind the rest of this one
            log.append("go done")
            return "went"
        if msg == "quick":
            ctx.self.send("after-quick")
            return "q"
        return None

    async with Runtime() as rt:
        ref = rt.spawn(handler, id="self-sender")
        assert await ref.ask("go") == "went"
        assert await ref.ask("quick") == "q"
        await rt.wait_idle()
    assert log == ["go", "go done", "next-1", "next-2", "quick", "after-quick"]


async def test_ctx_reply_before_a_wait_answers_the_ask() -> None:
    gate, done = asyncio.Event(), asyncio.Event()

    async def early(msg: int, ctx: ActorContext) -> int:
        ctx.reply(msg + 1)
        await gate.wait()
        done.set()
        return -1

    async def early_sync(msg: int, ctx: ActorContext) -> int:
        ctx.reply(msg * 10)
        return -1

    async with Runtime() as rt:
        assert await rt.spawn(early).ask(1) == 2  # answered while the handler still waits
        assert not done.is_set()
        gate.set()
        await rt.wait_idle()
        assert done.is_set()
        assert await rt.spawn(early_sync).ask(3) == 30


async def test_a_handler_failing_at_once_is_restarted_and_retried() -> None:
    calls: list[int] = []

    async def flaky(msg: int, ctx: ActorContext) -> int:
        calls.append(msg)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return msg * 2

    async with Runtime(restart=RestartPolicy(backoff=0.001)) as rt:
        assert await rt.spawn(flaky, id="flaky").ask(21) == 42
        assert calls == [21, 21]
        assert rt.stats()["failures"] == 1


async def test_a_loop_of_inline_asks_lets_other_tasks_run() -> None:
    async def echo(msg: int, ctx: ActorContext) -> int:
        return msg

    ticks = [0]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    async with Runtime() as rt:
        ref = rt.spawn(echo, id="echo")
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        for i in range(1000):
            assert await ref.ask(i) == i
        task.cancel()
    assert ticks[0] >= 10  # the ticker ran while the asks went on


async def test_an_actor_stays_usable_after_a_handler_is_cancelled_at_once() -> None:
    handled: list[str] = []

    async def odd(msg: str, ctx: ActorContext) -> str:
        handled.append(msg)
        if msg == "cancel":
            raise asyncio.CancelledError  # not an error of the handler: it propagates
        return msg

    async with Runtime() as rt:
        ref = rt.spawn(odd, id="odd")
        try:
            await ref.ask("cancel")
        except asyncio.CancelledError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the cancellation did not propagate")
        assert await ref.ask("fine") == "fine"
        ref.send("queued")
        await rt.wait_idle()
        assert handled == ["cancel", "fine", "queued"]
