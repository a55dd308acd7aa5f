"""The actor runtime's core: spawn, send, ask, replies, children, topics, ordering."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import openheim as oh
from openheim.errors import ActorStopped, AskTimeout, ConfigError
from openheim.runtime import ActorContext, ActorRef, Runtime


async def test_function_actor_answers_an_ask_with_its_return_value() -> None:
    async def double(msg: int, ctx: ActorContext) -> int:
        return msg * 2

    async with oh.Runtime() as rt:
        ref = rt.spawn(double, id="math/double")
        assert isinstance(ref, ActorRef)
        assert ref.id == "math/double"
        assert await ref.ask(21) == 42
        assert [await ref.ask(i) for i in range(5)] == [0, 2, 4, 6, 8]


async def test_object_actor_keeps_state_and_replies_with_ctx_reply() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        async def receive(self, msg: str, ctx: ActorContext) -> None:
            if msg == "inc":
                self.n += 1
            else:
                ctx.reply(self.n)

    async with Runtime() as rt:
        ref = rt.spawn(Counter())
        for _ in range(7):
            ref.send("inc")
        assert await ref.ask("get") == 7


async def test_messages_from_one_sender_arrive_in_order_across_awaits() -> None:
    seen: dict[str, list[int]] = {}

    async def log(msg: tuple[str, int], ctx: ActorContext) -> None:
        sender, n = msg
        if n % 3 == 0:
            await asyncio.sleep(0)  # some messages suspend the handler mid-way
        seen.setdefault(sender, []).append(n)

    async with Runtime() as rt:
        ref = rt.spawn(log, id="log")

        async def sender(name: str) -> None:
            for n in range(200):
                ref.send((name, n))
                if n % 17 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(sender(f"s{i}") for i in range(5)))
        await ref.ask(("done", 0))
    for i in range(5):
        assert seen[f"s{i}"] == list(range(200))


async def test_one_message_at_a_time_per_actor() -> None:
    inside = 0
    most = 0

    async def slow(msg: int, ctx: ActorContext) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        inside -= 1

    async with Runtime() as rt:
        ref = rt.spawn(slow)
        await asyncio.gather(*(ref.ask(i) for i in range(50)))
    assert most == 1


async def test_many_actors_run_concurrently() -> None:
    gate = asyncio.Event()
    all_started = asyncio.Event()
    started: list[int] = []

    async def waiter(msg: int, ctx: ActorContext) -> int:
        started.append(msg)
        if len(started) == 20:
            all_started.set()
        await gate.wait()
        return msg

    async with Runtime() as rt:
        refs = [rt.spawn(waiter) for _ in range(20)]
        asks = [asyncio.ensure_future(r.ask(i)) for i, r in enumerate(refs)]
        await asyncio.wait_for(all_started.wait(), 10)  # all 20 wait at once
        gate.set()
        assert await asyncio.gather(*asks) == list(range(20))


async def test_ask_times_out_with_a_clear_error_and_the_actor_goes_on() -> None:
    release = asyncio.Event()

    async def stuck(msg: str, ctx: ActorContext) -> str:
        if msg == "hang":
            await release.wait()
        return msg

    async with Runtime() as rt:
        ref = rt.spawn(stuck, id="stuck")
        with pytest.raises(AskTimeout, match="'stuck'") as info:
            await ref.ask("hang", timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        release.set()
        assert await ref.ask("next", timeout=5) == "next"
        assert rt.stats()["pending_asks"] == 0


async def test_handler_error_reaches_the_asker() -> None:
    async def bad(msg: str, ctx: ActorContext) -> None:
        raise ValueError(f"cannot handle {msg}")

    async with Runtime(restart=oh.runtime.RestartPolicy(retries=0, backoff=0)) as rt:
        ref = rt.spawn(bad, id="bad")
        with pytest.raises(oh.errors.ActorFailed, match="cannot handle x") as info:
            await ref.ask("x")
        assert isinstance(info.value.__cause__, ValueError)


async def test_children_get_ids_under_their_parent_and_ctx_self_works() -> None:
    async def child(msg: str, ctx: ActorContext) -> str:
        return f"{ctx.id}:{msg}"

    async def parent(msg: str, ctx: ActorContext) -> Any:
        kid = ctx.spawn(child)
        assert ctx.self.id == "boss"
        return await kid.ask(msg)

    async with Runtime() as rt:
        ref = rt.spawn(parent, id="boss")
        answer = await ref.ask("hi")
        assert answer.startswith("boss/")
        assert answer.endswith(":hi")


async def test_topics_route_by_pattern() -> None:
    got: dict[str, list[str]] = {"all": [], "new": [], "eu": []}

    def collector(name: str) -> Any:
        async def handler(msg: str, ctx: ActorContext) -> None:
            got[name].append(msg)

        return handler

    async with Runtime() as rt:
        a = rt.spawn(collector("all"))
        n = rt.spawn(collector("new"))
        e = rt.spawn(collector("eu"))
        rt.subscribe(a, "orders.>")
        rt.subscribe(n, "orders.*")
        rt.subscribe(n, "orders.*")  # twice: still one delivery
        rt.subscribe(e, "orders.eu.new")
        assert rt.publish("orders.us", "o1") == 2
        assert rt.publish("orders.eu.new", "o2") == 2
        assert rt.publish("invoices.x", "i1") == 0
        rt.unsubscribe(a, "orders.>")
        assert rt.publish("orders.us", "o3") == 1
        await rt.wait_idle()
    assert got == {"all": ["o1", "o2"], "new": ["o1", "o3"], "eu": ["o2"]}


async def test_bad_input_is_refused_clearly() -> None:
    async def h(msg: Any, ctx: ActorContext) -> None:
        return None

    async with Runtime() as rt:
        rt.spawn(h, id="one")
        with pytest.raises(ConfigError, match="already running"):
            rt.spawn(h, id="one")
        with pytest.raises(ConfigError, match="an actor is"):
            rt.spawn(42)
        with pytest.raises(ConfigError, match="not a registered kind"):
            rt.ref("ghost/1")
        with pytest.raises(ConfigError, match="topic pattern"):
            rt.subscribe(rt.ref("one"), "orders.x*")
        with pytest.raises(ConfigError, match="overflow must be"):
            rt.spawn(h, overflow="explode")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not running"):
        rt.spawn(h)


async def test_stopped_actor_refuses_messages() -> None:
    async def h(msg: Any, ctx: ActorContext) -> Any:
        return msg

    async with Runtime() as rt:
        ref = rt.spawn(h, id="gone")
        assert await ref.ask(1) == 1
        ref.stop()
        with pytest.raises(ActorStopped, match="'gone'"):
            ref.send(2)
        assert "gone" not in rt.live()


async def test_eager_false_runs_the_handler_in_a_task_from_its_start() -> None:
    async def timed(msg: str, ctx: ActorContext) -> bool:
        # What asyncio.timeout() and friends need: a current Task at the start.
        return asyncio.current_task() is not None

    seen: list[bool] = []

    async def first_step(msg: str, ctx: ActorContext) -> None:
        seen.append(asyncio.current_task() is not None)

    async with Runtime() as rt:
        assert await rt.spawn(timed, eager=False).ask("x") is True
        # Eager (the default): a sent message's handler runs in the scheduler's pass,
        # without a Task, up to its first wait.
        rt.spawn(first_step).send("x")
        await rt.wait_idle()
        assert seen == [False]
        rt.register("t", lambda actor_id: timed, eager=False)
        assert await rt.ref("t/1").ask("x") is True
