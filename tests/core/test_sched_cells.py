"""Scheduler: actors that are their own handler (ActorCell), the first-message slot that
spares an idle actor a mailbox, and step() (a coroutine's first step without StopIteration).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import types
import weakref
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

from openheim._core import ActorCell, Scheduler, Suspended, step
from openheim.errors import ActorStopped, ConfigError, MailboxFull


@pytest.fixture
async def sched() -> AsyncIterator[Scheduler]:
    s = Scheduler()
    yield s
    await s.aclose(timeout=10)


class Cell(ActorCell):
    __slots__ = ("seen",)

    def __call__(self, msg: Any) -> Any:
        self.seen.append((self.id, msg))
        return self._handler(msg) if self._handler is not None else None


class AsyncCell(ActorCell):
    __slots__ = ("seen",)

    async def __call__(self, msg: Any) -> None:
        await asyncio.sleep(0)
        self.seen.append(msg)


# ---- the first-message slot -------------------------------------------------------------


async def test_a_lone_first_message_needs_no_mailbox(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append)
    actor.send(1)
    assert actor.qsize() == 1
    assert sched.stats()["mailboxes"] == 0  # it waits in the actor itself
    await sched.wait_idle()
    assert seen == [1]
    assert actor.qsize() == 0
    assert sched.stats()["mailboxes"] == 0


async def test_a_second_message_takes_a_mailbox_and_order_holds(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append)
    actor.send(0)
    actor.send(1)  # the first moves into the mailbox ahead of it
    actor.send(2)
    assert actor.qsize() == 3
    assert sched.stats()["mailboxes"] == 1
    await sched.wait_idle()
    assert seen == [0, 1, 2]
    assert sched.stats()["mailboxes"] == 0  # given back once empty
    actor.send(3)  # and the slot serves again
    await sched.wait_idle()
    assert seen == [0, 1, 2, 3]


async def test_maxsize_one_counts_the_slot(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append, maxsize=1)
    actor.send(0)
    with pytest.raises(MailboxFull, match="maxsize"):
        actor.send(1)
    for m in range(1, 50):
        await actor.put(m)  # parks on a mailbox that takes over the slot's message
    await sched.wait_idle()
    assert seen == list(range(50))


async def test_put_blocking_from_a_thread_with_the_slot_full(sched: Scheduler) -> None:
    seen: list[int] = []
    actor = sched.spawn(seen.append, maxsize=1)
    actor.send(0)
    t = threading.Thread(target=lambda: [actor.put_blocking(m, timeout=30) for m in (1, 2, 3)])
    t.start()
    await asyncio.to_thread(t.join)
    await sched.wait_idle()
    assert seen == [0, 1, 2, 3]


async def test_stop_drops_the_slot_message_and_releases_it(sched: Scheduler) -> None:
    class Msg:
        pass

    actor = sched.spawn(lambda m: None)
    msg = Msg()
    ref = weakref.ref(msg)
    actor.send(msg)
    del msg
    dropped = sched.stats()["dropped"]
    actor.stop()
    gc.collect()
    assert ref() is None
    assert sched.stats()["dropped"] == dropped + 1
    assert actor.qsize() == 0
    with pytest.raises(ActorStopped):
        actor.send(1)


# ---- cells ------------------------------------------------------------------------------


async def test_a_cell_is_its_own_handler_with_its_fields_set(sched: Scheduler) -> None:
    got: list[Any] = []
    cell = sched.spawn_cell(Cell, 8, "a/1", "rt", got.append, "obj", "kind", {"n": 1}, None)
    cell.seen = []
    assert (cell.id, cell.runtime, cell.obj, cell._kind, cell.state) == (
        "a/1",
        "rt",
        "obj",
        "kind",
        {"n": 1},
    )
    assert (cell._eager, cell._loading, cell._active, cell._skip) == (True, False, False, 0)
    assert (cell._fut, cell._held, cell.parent) == (None, None, None)
    assert cell._maxsize == 8
    assert not cell._stopped
    for m in range(5):
        cell._send(m)
    assert cell._qsize() == 5
    await sched.wait_idle()
    assert cell.seen == [("a/1", m) for m in range(5)]
    assert got == list(range(5))
    assert sched.stats()["actors"] == 1
    cell._stop()
    assert cell._stopped
    assert sched.stats()["actors"] == 0
    with pytest.raises(ActorStopped):
        cell._send(9)


async def test_an_async_cell_runs_its_messages_in_order(sched: Scheduler) -> None:
    cell = sched.spawn_cell(AsyncCell, 4, "b", None, None)
    cell.seen = []
    for m in range(4):
        cell._send(m)
    with pytest.raises(MailboxFull):
        cell._send(4)
    await cell._put(100)
    await sched.wait_idle()
    assert cell.seen == [0, 1, 2, 3, 100]
    assert sched.stats()["tasks"] >= 1


async def test_spawn_cell_checks_its_class_and_cells_are_not_made_directly(
    sched: Scheduler,
) -> None:
    class NotCallable(ActorCell):
        __slots__ = ()

    with pytest.raises(ConfigError, match="__call__"):
        sched.spawn_cell(NotCallable, 1, "x", None, None)
    with pytest.raises(TypeError):
        sched.spawn_cell(dict, 1, "x", None, None)  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="maxsize"):
        sched.spawn_cell(Cell, 0, "x", None, None)
    with pytest.raises(TypeError, match="spawn_cell"):
        Cell()
    assert sched.stats()["actors"] == 0


# ---- step -----------------------------------------------------------------------------


@types.coroutine
def _yield(value: Any) -> Generator[Any, Any, Any]:
    return (yield value)


def test_step_returns_the_value_of_a_coroutine_that_does_not_wait() -> None:
    async def done() -> int:
        return 42

    assert step(done()) == 42


def test_step_returns_what_a_waiting_coroutine_yielded_and_it_goes_on() -> None:
    async def waits() -> str:
        got = await _yield("first")
        return f"got {got}"

    coro = waits()
    s = step(coro)
    assert type(s) is Suspended
    assert s.value == "first"
    with pytest.raises(StopIteration) as stop:
        coro.send("x")
    assert stop.value.value == "got x"
    with pytest.raises(TypeError):
        Suspended()


def test_step_propagates_what_the_coroutine_raises() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        step(fails())
