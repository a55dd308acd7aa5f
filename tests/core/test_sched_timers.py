"""Scheduler timers: the native min-heap behind one loop timer, on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openheim._core import Scheduler
from openheim.errors import ActorStopped, MailboxFull


class FakeClock:
    """A virtual clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


@pytest.fixture
async def sched() -> AsyncIterator[Scheduler]:
    s = Scheduler()
    yield s
    await s.aclose(timeout=10)


async def test_timers_fire_in_deadline_order_ties_in_insertion_order() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    fired: list[str] = []
    for name, delay in [("c", 3.0), ("a1", 1.0), ("b", 2.0), ("a2", 1.0), ("z", 0.0)]:
        sched.call_later(delay, fired.append, name)
    assert sched.stats()["timers"] == 5
    assert sched.fire_timers() == 1
    assert fired == ["z"]
    clock.advance(1.5)
    assert sched.fire_timers() == 2
    clock.advance(10)
    assert sched.fire_timers() == 2
    assert fired == ["z", "a1", "a2", "b", "c"]
    assert sched.stats()["timers"] == 0
    await sched.aclose()


async def test_send_after_delivers_in_deadline_order_and_cancel_works() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    seen: list[str] = []
    actor = sched.spawn(seen.append)
    t3 = sched.send_after(actor, 3, "three")
    sched.send_after(actor, 1, "one")
    t2 = sched.send_after(actor, 2, "two")
    sched.send_after(actor, 2, "two-bis")
    assert t2.when == clock.now + 2
    assert t2.cancel() is True
    assert t2.cancel() is False
    assert t2.cancelled()
    assert not t2.pending
    clock.advance(5)
    assert sched.fire_timers() == 3
    assert t3.cancel() is False  # already fired
    assert not t3.cancelled()
    await sched.wait_idle()
    assert seen == ["one", "two-bis", "three"]
    await sched.aclose()


async def test_send_after_to_a_stopped_actor() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    seen: list[int] = []
    actor = sched.spawn(seen.append)
    sched.send_after(actor, 1, 1)
    actor.stop()
    clock.advance(2)
    assert sched.fire_timers() == 1  # fires, and the message is dropped
    await sched.wait_idle()
    assert seen == []
    assert sched.stats()["dropped"] == 1
    with pytest.raises(ActorStopped):
        sched.send_after(actor, 1, 2)
    await sched.aclose()


async def test_timer_to_a_full_mailbox_reports_mailbox_full() -> None:
    clock = FakeClock()
    failures: list[tuple[Any, Any, BaseException]] = []
    sched = Scheduler(clock=clock, on_error=lambda a, m, e: failures.append((a, m, e)))
    actor = sched.spawn(lambda m: None, maxsize=1)
    actor.send(0)
    sched.send_after(actor, 1, "late")
    clock.advance(1)
    sched.fire_timers()
    assert [(a is actor, m, type(e)) for a, m, e in failures] == [(True, "late", MailboxFull)]
    await sched.aclose()


async def test_failing_timer_callback_goes_to_on_error() -> None:
    clock = FakeClock()
    failures: list[tuple[Any, Any, BaseException]] = []
    sched = Scheduler(clock=clock, on_error=lambda a, m, e: failures.append((a, m, e)))
    fired: list[int] = []

    def bad() -> None:
        raise ValueError("timer")

    sched.call_later(1, bad)
    sched.call_later(1, fired.append, 1)
    clock.advance(1)
    assert sched.fire_timers() == 2
    assert fired == [1]
    assert [(a, m, type(e)) for a, m, e in failures] == [(None, bad, ValueError)]
    await sched.aclose()


async def test_timers_set_while_firing_wait_for_the_next_round() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    fired: list[int] = []

    def again(n: int) -> None:
        fired.append(n)
        sched.call_later(0, again, n + 1)  # due now, but not in this round

    sched.call_later(0, again, 0)
    assert sched.fire_timers() == 1
    assert sched.fire_timers() == 1
    assert fired == [0, 1]
    await sched.aclose()


async def test_one_loop_timer_is_armed_for_the_earliest_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    real_call_at = loop.call_at

    def spy(when: float, cb: Callable[..., object], *args: Any, **kw: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return real_call_at(when, cb, *args, **kw)

    monkeypatch.setattr(loop, "call_at", spy)
    sched = Scheduler()
    t0 = sched.time()
    timers = [sched.call_later(100 + i, print) for i in range(200)]
    assert len(armed) == 1  # later deadlines do not re-arm
    early = sched.call_later(50, print)
    assert len(armed) == 2  # an earlier one does
    assert armed[1] == pytest.approx(t0 + 50, abs=1.0)
    early.cancel()
    for t in timers:
        t.cancel()
    assert sched.stats()["timers"] == 0
    fired = asyncio.Event()
    sched.call_later(0, fired.set)  # and the loop timer really fires on its own
    await asyncio.wait_for(fired.wait(), 10)
    await sched.aclose()


async def test_timers_from_another_thread_are_armed_on_the_loop(sched: Scheduler) -> None:
    fired = asyncio.Event()
    seen: list[int] = []
    actor = sched.spawn(seen.append)
    await asyncio.to_thread(sched.send_after, actor, 0, 7)
    await asyncio.to_thread(sched.call_later, 0, fired.set)
    await asyncio.wait_for(fired.wait(), 10)
    await sched.wait_idle()
    assert seen == [7]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 7.5])),
            st.tuples(st.just("cancel"), st.integers(0, 200)),
            st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
        ),
        max_size=120,
    )
)
def test_timer_heap_matches_a_sorted_reference(ops: list[tuple[str, float]]) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sched = Scheduler(clock=clock)
        fired: list[int] = []
        model: dict[int, tuple[float, int]] = {}  # id -> (deadline, insertion order)
        timers = []
        expected: list[int] = []
        for op, arg in ops:
            if op == "add":
                n = len(timers)
                timers.append(sched.call_later(arg, fired.append, n))
                model[n] = (clock.now + arg, n)
            elif op == "cancel" and timers:
                n = int(arg) % len(timers)
                assert timers[n].cancel() is (n in model)
                model.pop(n, None)
            elif op == "advance":
                clock.advance(arg)
                due = sorted((d, i) for i, (d, _) in model.items() if d <= clock.now)
                expected.extend(i for _, i in due)
                for _, i in due:
                    del model[i]
                assert sched.fire_timers() == len(due)
            assert sched.stats()["timers"] == len(model)
        assert fired == expected
        await sched.aclose()

    asyncio.run(scenario())
