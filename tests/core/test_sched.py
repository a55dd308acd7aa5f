"""Scheduler: the native actor dispatch loop (ready queue + timer heap in C).

Every test here is deterministic: order is measured by who ran before whom, time
by a virtual clock, and batching by the scheduler's own counters, never by the
wall clock.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openheim._core import Actor, Scheduler
from openheim.errors import (
    ActorStopped,
    ConfigError,
    MailboxClosed,
    MailboxFull,
    SchedulerClosed,
    SchedulerError,
)


@pytest.fixture
async def sched() -> AsyncIterator[Scheduler]:
    s = Scheduler()
    yield s
    await s.aclose(timeout=10)


# ---- ordering, fairness, batching --------------------------------------------------


async def test_messages_to_one_actor_are_handled_in_order(sched: Scheduler) -> None:
    seen: dict[int, list[int]] = {i: [] for i in range(5)}
    actors = [sched.spawn(seen[i].append) for i in range(5)]
    for m in range(300):  # interleaved across actors, more than one turn each
        for a in actors:
            a.send(m)
    await sched.wait_idle()
    assert all(seen[i] == list(range(300)) for i in range(5))
    assert sched.stats()["handled"] == 1500


async def test_flooding_actor_does_not_starve_a_quiet_one() -> None:
    sched = Scheduler(batch=64, max_per_turn=16)
    calls: list[str] = []
    flood = sched.spawn(lambda m: calls.append("flood"))
    quiet = sched.spawn(lambda m: calls.append("quiet"))
    for m in range(1000):
        flood.send(m)
    quiet.send(0)
    await sched.wait_idle()
    # The quiet actor runs right after the flooder's first turn.
    assert calls.index("quiet") == 16
    assert calls.count("flood") == 1000
    await sched.aclose()


async def test_turns_rotate_between_busy_actors() -> None:
    sched = Scheduler(batch=1000, max_per_turn=3)
    calls: list[str] = []
    a = sched.spawn(lambda m: calls.append("a"))
    b = sched.spawn(lambda m: calls.append("b"))
    for m in range(7):
        a.send(m)
        b.send(m)
    await sched.wait_idle()
    assert "".join(calls) == "aaabbbaaabbbab"
    await sched.aclose()


async def test_a_pass_yields_to_the_loop_after_batch_calls() -> None:
    batch = 64
    sched = Scheduler(batch=batch, max_per_turn=16)
    log: list[str] = []
    done = False

    async def ticker() -> None:
        while not done:
            log.append("tick")
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    actors = [sched.spawn(lambda m: log.append("call")) for _ in range(10)]
    for m in range(100):
        for a in actors:
            a.send(m)
    await sched.wait_idle()
    done = True
    await tick
    runs = "".join("c" if e == "call" else "|" for e in log).split("|")
    assert sum(len(r) for r in runs) == 1000
    assert max(len(r) for r in runs) <= batch  # the ticker ran between every pass
    await sched.aclose()


async def test_one_drain_callback_serves_many_sends() -> None:
    sched = Scheduler(batch=100_000, max_per_turn=100_000)
    seen: list[int] = []
    actors = [sched.spawn(seen.append) for _ in range(100)]
    for m in range(10):
        for a in actors:
            a.send(m)
    await sched.wait_idle()
    st_ = sched.stats()
    assert len(seen) == 1000
    assert st_["passes"] == 1
    assert st_["wakeups"] == 1
    await sched.aclose()


async def test_passes_are_counted_per_batch(sched: Scheduler) -> None:
    actors = [sched.spawn(lambda m: None) for _ in range(100)]
    for m in range(10):
        for a in actors:
            a.send(m)
    await sched.wait_idle()
    st_ = sched.stats()
    assert st_["handled"] == 1000
    assert st_["passes"] == st_["wakeups"] == -(-1000 // 64)


async def test_sends_from_a_handler_are_handled_in_the_same_run(sched: Scheduler) -> None:
    seen: list[tuple[str, int]] = []
    sink = sched.spawn(lambda m: seen.append(("sink", m)))

    def relay(m: int) -> None:
        seen.append(("relay", m))
        sink.send(m)
        if m < 3:
            relay_actor.send(m + 1)  # to itself

    relay_actor = sched.spawn(relay)
    relay_actor.send(0)
    await sched.wait_idle()
    assert [m for who, m in seen if who == "relay"] == [0, 1, 2, 3]
    assert [m for who, m in seen if who == "sink"] == [0, 1, 2, 3]


# ---- async handlers -----------------------------------------------------------------


async def test_async_handler_runs_one_message_at_a_time_in_order(sched: Scheduler) -> None:
    inflight = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0, "both": 0}
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def make(name: str) -> Callable[[int], Any]:
        async def handler(m: int) -> None:
            inflight[name] += 1
            most[name] = max(most[name], inflight[name])
            most["both"] = max(most["both"], inflight["a"] + inflight["b"])
            for _ in range(m % 3):
                await asyncio.sleep(0)
            seen[name].append(m)
            inflight[name] -= 1

        return handler

    a, b = sched.spawn(make("a")), sched.spawn(make("b"))
    for m in range(200):
        a.send(m)
        b.send(m)
    await sched.wait_idle()
    assert seen == {"a": list(range(200)), "b": list(range(200))}
    assert most["a"] == most["b"] == 1  # one at a time per actor ...
    assert most["both"] == 2  # ... while different actors overlap
    assert sched.stats()["busy"] == 0


async def test_async_handler_runs_inside_a_task(sched: Scheduler) -> None:
    results: list[object] = []

    async def handler(m: float) -> None:
        results.append(asyncio.current_task() is not None)
        try:  # wait_for (asyncio.timeout on 3.11+) needs to run in a task
            await asyncio.wait_for(asyncio.sleep(3600), m)
        except asyncio.TimeoutError:
            results.append("timed out")

    actor = sched.spawn(handler)
    actor.send(0)
    await sched.wait_idle()
    assert results == [True, "timed out"]


async def test_a_busy_period_is_one_task_not_one_per_message(sched: Scheduler) -> None:
    seen: list[int] = []

    async def handler(m: int) -> None:
        seen.append(m)

    actor = sched.spawn(handler)
    before = len(asyncio.all_tasks())
    for m in range(100):
        actor.send(m)
    await sched.wait_idle()
    assert seen == list(range(100))
    # The first message finds out the handler is async (its coroutine starts
    # the first task); the rest of the burst shares that one task.
    assert sched.stats()["tasks"] == 1
    assert len(asyncio.all_tasks()) == before
    actor.send(100)
    await sched.wait_idle()
    assert sched.stats()["tasks"] == 2  # a new busy period, a new task


async def test_async_actor_stays_ordered_while_busy(sched: Scheduler) -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def handler(m: int) -> None:
        if m == 0:
            await gate.wait()
        seen.append(m)

    actor = sched.spawn(handler)
    actor.send(0)
    await asyncio.sleep(0)
    for m in range(1, 50):
        actor.send(m)  # queued behind the suspended first message
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == []
    assert sched.stats()["busy"] == 1
    assert "busy" in repr(actor)
    gate.set()
    await sched.wait_idle()
    assert seen == list(range(50))


# ---- errors ---------------------------------------------------------------------------


async def test_handler_errors_go_to_on_error_and_the_actor_keeps_working() -> None:
    failures: list[tuple[Actor[Any] | None, Any, BaseException]] = []
    sched = Scheduler(on_error=lambda a, m, e: failures.append((a, m, e)))
    seen: list[int] = []

    def sync_handler(m: int) -> None:
        if m % 3 == 0:
            raise ValueError(f"bad {m}")
        seen.append(m)

    async def async_handler(m: int) -> None:
        await asyncio.sleep(0)
        if m % 3 == 0:
            raise KeyError(m)
        seen.append(100 + m)

    s, a = sched.spawn(sync_handler), sched.spawn(async_handler)
    for m in range(9):
        s.send(m)
        a.send(m)
    await sched.wait_idle()
    assert [m for m in seen if m < 100] == [1, 2, 4, 5, 7, 8]
    assert [m - 100 for m in seen if m >= 100] == [1, 2, 4, 5, 7, 8]
    assert sorted((x is s, m, type(e).__name__) for x, m, e in failures) == sorted(
        [(True, m, "ValueError") for m in (0, 3, 6)] + [(False, m, "KeyError") for m in (0, 3, 6)]
    )
    assert sched.stats()["errors"] == 6
    await sched.aclose()


async def test_default_on_error_logs(sched: Scheduler, caplog: pytest.LogCaptureFixture) -> None:
    def handler(m: int) -> None:
        raise RuntimeError("boom")

    actor = sched.spawn(handler, name="broken")
    with caplog.at_level(logging.ERROR, logger="openheim.scheduler"):
        actor.send(1)
        actor.send(2)
        await sched.wait_idle()
    records = [r for r in caplog.records if r.name == "openheim.scheduler"]
    assert len(records) == 2
    assert "broken" in records[0].getMessage()
    exc_info = records[0].exc_info
    assert exc_info is not None
    assert exc_info[0] is RuntimeError


async def test_a_failing_on_error_hook_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(a: Any, m: Any, e: BaseException) -> None:
        raise OSError("hook broke")

    sched = Scheduler(on_error=hook)
    seen: list[int] = []

    def handler(m: int) -> None:
        if m == 0:
            raise ValueError
        seen.append(m)

    actor = sched.spawn(handler)
    with caplog.at_level(logging.ERROR, logger="openheim.scheduler"):
        for m in range(3):
            actor.send(m)
        await sched.wait_idle()
    assert seen == [1, 2]
    assert any("on_error hook raised" in r.getMessage() for r in caplog.records)
    await sched.aclose()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="needs Task.cancelling() (3.11)")
async def test_cancelled_error_from_inside_a_handler_is_a_handler_error() -> None:
    failures: list[BaseException] = []
    sched = Scheduler(on_error=lambda a, m, e: failures.append(e))
    seen: list[int] = []

    async def handler(m: int) -> None:
        if m == 0:
            fut = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut  # raises CancelledError, though nobody cancelled this task
        seen.append(m)

    actor = sched.spawn(handler)
    for m in range(3):
        actor.send(m)
    await sched.wait_idle()
    assert seen == [1, 2]
    assert [type(e) for e in failures] == [asyncio.CancelledError]
    await sched.aclose()


# ---- sending: backpressure, threads -----------------------------------------------------


async def test_send_to_a_full_mailbox_raises_and_put_waits(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append, maxsize=2)
    actor.send(0)
    actor.send(1)
    with pytest.raises(MailboxFull, match="maxsize"):
        actor.send(2)
    for m in range(2, 200):
        await actor.put(m)  # waits for the actor to make room
    await sched.wait_idle()
    assert seen == list(range(200))


async def test_put_from_many_coroutines_with_backpressure(sched: Scheduler) -> None:
    seen: list[tuple[int, int]] = []

    async def slow(m: tuple[int, int]) -> None:
        await asyncio.sleep(0)
        seen.append(m)

    actor = sched.spawn(slow, maxsize=3)

    async def producer(p: int) -> None:
        for i in range(100):
            await actor.put((p, i))

    await asyncio.gather(*(producer(p) for p in range(5)))
    await sched.wait_idle()
    assert sorted(seen) == [(p, i) for p in range(5) for i in range(100)]
    for p in range(5):
        assert [i for q, i in seen if q == p] == list(range(100))


async def test_sends_from_many_threads_all_handled_once_in_sender_order(
    sched: Scheduler,
) -> None:
    n_threads, per = 8, 2000
    seen: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    actors = [sched.spawn(seen[i].append, maxsize=64) for i in range(3)]

    def produce(t: int) -> None:
        for i in range(per):
            actors[i % 3].put_blocking((t, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    await asyncio.to_thread(lambda: [th.join() for th in threads])
    await sched.wait_idle()
    got = [m for i in range(3) for m in seen[i]]
    assert sorted(got) == sorted((t, i) for t in range(n_threads) for i in range(per))
    for i in range(3):
        for t in range(n_threads):
            mine = [k for (s, k) in seen[i] if s == t]
            assert mine == sorted(mine)
    st_ = sched.stats()
    assert st_["handled"] == n_threads * per
    assert st_["threadsafe_wakeups"] <= st_["passes"] == st_["wakeups"]


async def test_thread_sends_share_one_wakeup_per_drain_cycle(sched: Scheduler) -> None:
    seen: list[int] = []
    actors = [sched.spawn(seen.append) for _ in range(10)]

    def produce() -> None:
        for m in range(100):
            for a in actors:
                a.send(m)

    # The loop thread is blocked in join(), so every send lands before any pass.
    th = threading.Thread(target=produce)
    th.start()
    th.join()
    await sched.wait_idle()
    assert len(seen) == 1000
    assert sched.stats()["threadsafe_wakeups"] == 1


async def test_put_blocking_on_the_loop_thread_is_refused(sched: Scheduler) -> None:
    actor = sched.spawn(lambda m: None)
    with pytest.raises(SchedulerError, match=r"await actor\.put"):
        actor.put_blocking(1)


# ---- stop and close -------------------------------------------------------------------------


async def test_stop_drops_queued_messages_and_refuses_new_ones(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append)
    other = sched.spawn(seen.append)
    for m in range(5):
        actor.send(m)
    other.send(99)
    actor.stop()
    actor.stop()  # idempotent
    assert actor.stopped
    with pytest.raises(ActorStopped, match="stopped"):
        actor.send(6)
    with pytest.raises(MailboxClosed):  # ActorStopped is a MailboxClosed
        await actor.put(7)
    await sched.wait_idle()
    assert seen == [99]  # the stopped actor left the ready queue; the other did not
    st_ = sched.stats()
    assert st_["dropped"] == 5
    assert st_["actors"] == 1


async def test_stop_keeps_the_order_of_the_other_ready_actors(sched: Scheduler) -> None:
    order: list[int] = []
    actors = [sched.spawn(lambda m, i=i: order.append(i)) for i in range(100)]
    for a in actors:
        a.send(0)
    for i in range(0, 100, 3):
        actors[i].stop()
    await sched.wait_idle()
    assert order == [i for i in range(100) if i % 3]


async def test_an_actor_can_stop_itself(sched: Scheduler) -> None:
    seen: list[int] = []

    def handler(m: int) -> None:
        seen.append(m)
        if m == 2:
            me.stop()

    me = sched.spawn(handler)
    for m in range(10):
        me.send(m)
    await sched.wait_idle()
    assert seen == [0, 1, 2]
    assert sched.stats()["dropped"] == 7


async def test_stop_wakes_a_waiting_put(sched: Scheduler) -> None:
    gate = asyncio.Event()

    async def handler(m: int) -> None:
        await gate.wait()

    actor = sched.spawn(handler, maxsize=1)
    actor.send(0)
    await asyncio.sleep(0)  # 0 is being handled, the mailbox is empty
    actor.send(1)
    putter = asyncio.create_task(actor.put(2))
    await asyncio.sleep(0)
    assert not putter.done()
    actor.stop()
    with pytest.raises(ActorStopped):
        await putter
    gate.set()


async def test_stop_and_close_race_with_sending_threads() -> None:
    sched = Scheduler()
    handled: list[object] = []
    milestones = {2000: asyncio.Event(), 4000: asyncio.Event()}

    def handler(m: object) -> None:
        handled.append(m)
        if len(handled) in milestones:
            milestones[len(handled)].set()

    actors = [sched.spawn(handler, maxsize=8) for _ in range(4)]
    accepted = [0] * 6
    start = threading.Barrier(7)

    def produce(t: int) -> None:
        start.wait()
        i = refused_after_close = 0
        while refused_after_close < 20:  # keep sending into the closed scheduler a while
            try:
                if t % 2:
                    actors[i % 4].put_blocking((t, i))
                else:
                    actors[i % 4].send((t, i))
                accepted[t] += 1
            except MailboxFull:
                time.sleep(0)  # let the loop thread have the GIL
            except ActorStopped:
                refused_after_close += sched.closed
            i += 1

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    await asyncio.to_thread(start.wait)
    await milestones[2000].wait()
    actors[0].stop()  # one actor stops while threads keep sending ...
    await milestones[4000].wait()
    sched.close()  # ... then everything closes under them
    await asyncio.to_thread(lambda: [th.join() for th in threads])
    st_ = sched.stats()
    # Every accepted message was either handled or dropped by stop/close.
    assert st_["handled"] + st_["dropped"] == sum(accepted)
    assert len(handled) == st_["handled"]
    assert st_["actors"] == 0
    assert all(a.stopped for a in actors)
    with pytest.raises(SchedulerClosed):
        sched.spawn(print)


async def test_aclose_handles_queued_messages_first() -> None:
    sched = Scheduler()
    seen: list[int] = []

    async def handler(m: int) -> None:
        await asyncio.sleep(0)
        seen.append(m)

    actor = sched.spawn(handler)
    sync_actor = sched.spawn(seen.append)
    for m in range(50):
        actor.send(m)
        sync_actor.send(1000 + m)
    timer = sched.call_later(1.0, seen.append, -1)
    await sched.aclose()
    assert sorted(seen) == list(range(50)) + [1000 + m for m in range(50)]
    assert timer.cancelled()
    assert sched.closed
    with pytest.raises(ActorStopped):
        actor.send(1)
    with pytest.raises(SchedulerClosed):
        sched.spawn(print)
    with pytest.raises(SchedulerClosed):
        sched.call_later(1.0, print)
    await sched.aclose()  # idempotent


async def test_aclose_timeout_cancels_stuck_handlers() -> None:
    sched = Scheduler()
    cancelled: list[bool] = []

    async def stuck(m: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    actor = sched.spawn(stuck)
    for m in range(3):
        actor.send(m)
    await sched.aclose(timeout=0)
    assert cancelled == [True]
    st_ = sched.stats()
    assert st_["busy"] == 0
    assert st_["dropped"] == 2  # the two that never started


async def test_close_drops_everything_at_once() -> None:
    sched = Scheduler()
    seen: list[int] = []
    actors = [sched.spawn(seen.append) for _ in range(10)]
    for a in actors:
        a.send(1)
        sched.send_after(a, 5.0, 2)
    sched.close()
    sched.close()
    await asyncio.sleep(0)
    assert seen == []
    st_ = sched.stats()
    assert (st_["actors"], st_["ready"], st_["timers"], st_["dropped"]) == (0, 0, 0, 10)


async def test_close_from_another_thread_is_refused(sched: Scheduler) -> None:
    with pytest.raises(SchedulerError, match="call_soon_threadsafe"):
        await asyncio.to_thread(sched.close)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 150),
    sends=st.lists(
        st.tuples(st.integers(0, 149), st.one_of(st.none(), st.integers(0, 149))), max_size=400
    ),
)
def test_ready_queue_matches_a_round_robin_reference(
    n: int, sends: list[tuple[int, int | None]]
) -> None:
    """Round-robin over a ring that wraps, grows, and loses actors from its middle."""
    from collections import deque

    msgs = [(i % n, None if j is None else j % n) for i, j in sends]

    async def scenario() -> list[tuple[int, int]]:
        sched = Scheduler(batch=1_000_000, max_per_turn=1)
        log: list[tuple[int, int]] = []
        actors: list[Actor[tuple[int, int, int | None]]] = []

        def handler(m: tuple[int, int, int | None]) -> None:
            who, k, victim = m
            log.append((who, k))
            if victim is not None:
                actors[victim].stop()

        actors.extend(sched.spawn(handler) for _ in range(n))
        for k, (i, victim) in enumerate(msgs):
            actors[i].send((i, k, victim))
        await sched.wait_idle()
        await sched.aclose()
        return log

    # The reference: a FIFO of ready actors, one message per turn.
    boxes: dict[int, deque[tuple[int, int | None]]] = {i: deque() for i in range(n)}
    ready: deque[int] = deque()
    for k, (i, victim) in enumerate(msgs):
        if not boxes[i]:
            ready.append(i)
        boxes[i].append((k, victim))
    stopped: set[int] = set()
    expected = []
    while ready:
        i = ready.popleft()
        k, victim = boxes[i].popleft()
        expected.append((i, k))
        if victim is not None and victim not in stopped:
            stopped.add(victim)
            boxes[victim].clear()
            if victim in ready:
                ready.remove(victim)
        if i not in stopped and boxes[i]:
            ready.append(i)
    assert asyncio.run(scenario()) == expected


# ---- scale, memory, misc --------------------------------------------------------------------


async def test_100k_idle_actors_create_no_tasks_and_hold_no_mailboxes(
    sched: Scheduler,
) -> None:
    before = len(asyncio.all_tasks())
    seen: list[int] = []
    actors = [sched.spawn(seen.append) for _ in range(100_000)]
    assert len(asyncio.all_tasks()) == before
    assert sched.stats()["mailboxes"] == 0
    for start in range(0, 100_000, 1000):  # messages arrive in waves
        for i in range(start, start + 1000):
            actors[i].send(i)
        assert sched.stats()["ready"] == 1000
        await sched.wait_idle()
    assert len(seen) == 100_000
    assert len(asyncio.all_tasks()) == before
    st_ = sched.stats()
    assert st_["actors"] == 100_000
    assert st_["mailboxes"] == 0  # idle actors gave their mailboxes back
    assert st_["tasks"] == 0


async def test_a_burst_of_ready_actors_is_handled_in_fifo_order(sched: Scheduler) -> None:
    order: list[int] = []
    actors = [sched.spawn(order.append) for _ in range(10_000)]
    for i, a in enumerate(actors):  # the ready ring grows well past its start size
        a.send(i)
    assert sched.stats()["ready"] == 10_000
    await sched.wait_idle()
    assert order == list(range(10_000))
    order.clear()
    for i in (5, 3, 9):  # and keeps working after shrinking back
        actors[i].send(i)
    await sched.wait_idle()
    assert order == [5, 3, 9]


async def test_idle_async_actors_keep_no_task(sched: Scheduler) -> None:
    before = len(asyncio.all_tasks())

    async def handler(m: int) -> None:
        await asyncio.sleep(0)

    actors = [sched.spawn(handler) for _ in range(1000)]
    for a in actors:
        a.send(0)
    await sched.wait_idle()
    assert len(asyncio.all_tasks()) == before
    assert sched.stats()["mailboxes"] == 0


async def test_messages_are_released_after_handling(sched: Scheduler) -> None:
    class Msg:
        pass

    actor = sched.spawn(lambda m: None)
    msg = Msg()
    ref = weakref.ref(msg)
    actor.send(msg)
    del msg
    gc.collect()
    assert ref() is not None  # queued: the mailbox holds it
    await sched.wait_idle()
    gc.collect()
    assert ref() is None


async def test_arguments_are_checked(sched: Scheduler) -> None:
    with pytest.raises(ConfigError, match="positive"):
        Scheduler(batch=0)
    with pytest.raises(ConfigError, match="positive"):
        Scheduler(max_per_turn=-1)
    with pytest.raises(ConfigError, match="callable"):
        Scheduler(on_error=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="callable"):
        sched.spawn(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="maxsize"):
        sched.spawn(print, maxsize=0)
    with pytest.raises(ConfigError, match="NaN"):
        sched.call_later(float("nan"), print)
    with pytest.raises(TypeError, match="spawn"):
        Actor()
    with pytest.raises(TypeError):
        sched.send(None, 1)  # type: ignore[arg-type]


def test_scheduler_needs_a_loop() -> None:
    with pytest.raises(ConfigError, match="event loop"):
        Scheduler()
    loop = asyncio.new_event_loop()
    try:
        sched = Scheduler(loop=loop)
        seen: list[int] = []
        actor = sched.spawn(seen.append)
        actor.send(1)  # before the loop runs: queued with a threadsafe wake-up
        loop.run_until_complete(sched.wait_idle())
        assert seen == [1]
        loop.run_until_complete(sched.aclose())
    finally:
        loop.close()


async def test_names_ids_repr_and_stats(sched: Scheduler) -> None:
    a = sched.spawn(print, name="greeter")
    b = sched.spawn(print, maxsize=8)
    assert (a.name, b.name) == ("greeter", f"actor-{b.id}")
    assert b.id == a.id + 1
    assert a.scheduler is sched
    assert b.maxsize == 8
    assert repr(a) == "<Actor greeter open>"
    assert "actors=2" in repr(sched)
    assert set(sched.stats()) == {
        "actors",
        "ready",
        "busy",
        "timers",
        "mailboxes",
        "handled",
        "errors",
        "dropped",
        "passes",
        "wakeups",
        "threadsafe_wakeups",
        "tasks",
    }
    assert a.qsize() == 0
    sched.stop(a)
    assert repr(a) == "<Actor greeter stopped>"
