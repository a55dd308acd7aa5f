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

from openheim._core import ActorCell, CellRef, Envelope, Scheduler, Suspended, step
from openheim.errors import ActorStopped, ConfigError, MailboxFull


@pytest.fixture
async def sched() -> AsyncIterator[Scheduler]:
    s = Scheduler()
    yield s
    await s.aclose(timeout=10)


class Cell(ActorCell):
    """Plain messages go to ``_handler(msg, cell)`` natively; envelopes come here."""

    __slots__ = ("failed", "rest", "seen")

    def _deliver(self, m: Any) -> Any:
        self.seen.append(("envelope", m.msg))
        return None

    def _deliver_rest(self, coro: Any, yielded: Any, msg: Any) -> Any:
        self.rest.append((msg, yielded))
        return _finish(coro, yielded)

    def _deliver_failed(self, msg: Any, exc: Exception) -> Any:
        self.failed.append((msg, str(exc)))
        return None


class Wrapped(Envelope):
    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg


async def _finish(coro: Any, yielded: Any) -> Any:
    """Drive on a coroutine that yielded ``yielded`` (to the Task running this)."""
    while True:
        sent = await _yield(yielded)
        try:
            yielded = coro.send(sent)
        except StopIteration as stop:
            return stop.value


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


async def test_a_cell_handles_plain_messages_natively_and_envelopes_itself(
    sched: Scheduler,
) -> None:
    got: list[Any] = []

    def handler(msg: Any, cell: Any) -> None:
        assert cell._active  # set while its handler runs
        got.append((cell.id, msg))

    cell = sched.spawn_cell(Cell, 8, "a/1", "rt", handler, "obj", None, {"n": 1}, None)
    cell.seen, cell.rest, cell.failed = [], [], []
    assert (cell.id, cell.runtime, cell.obj, cell._kind, cell.state) == (
        "a/1",
        "rt",
        "obj",
        None,
        {"n": 1},
    )
    assert (cell._eager, cell._loading, cell._active, cell._skip) == (True, False, False, 0)
    assert (cell._fut, cell._held, cell.parent, cell._traced) == (None, None, None, False)
    assert cell._maxsize == 8
    assert not cell._stopped
    for m in range(3):
        cell._send(m)
    cell._send(Wrapped("w"))
    cell._send(3)
    assert cell._qsize() == 5
    await sched.wait_idle()
    assert got == [("a/1", m) for m in range(4)]
    assert cell.seen == [("envelope", "w")]
    assert not cell._active
    assert sched.stats()["actors"] == 1
    assert sched.stats()["tasks"] == 0  # nothing waited: no Task at all
    cell._stop()
    assert cell._stopped
    assert sched.stats()["actors"] == 0
    with pytest.raises(ActorStopped):
        cell._send(9)


async def test_a_cell_handler_that_waits_or_fails_goes_to_the_subclass(
    sched: Scheduler,
) -> None:
    done: list[Any] = []

    async def handler(msg: Any, cell: Any) -> None:
        if msg == "fail":
            raise ValueError("bad message")
        if msg == "wait":
            await asyncio.sleep(0)
        done.append(msg)

    cell = sched.spawn_cell(Cell, 4, "b", None, handler)
    cell.seen, cell.rest, cell.failed = [], [], []
    for m in ("now", "wait", "fail", "after"):
        cell._send(m)
    with pytest.raises(MailboxFull):
        cell._send("too many")
    await cell._put("put")
    await sched.wait_idle()
    assert done == ["now", "wait", "after", "put"]
    assert cell.rest == [("wait", None)]  # asyncio.sleep(0) yields None
    assert cell.failed == [("fail", "bad message")]


async def test_a_lazy_cell_hands_its_unstarted_coroutine_over(sched: Scheduler) -> None:
    done: list[Any] = []

    async def handler(msg: Any, cell: Any) -> None:
        done.append(msg)

    cell = sched.spawn_cell(Cell, 4, "c", None, handler, eager=False)
    cell.seen, cell.rest, cell.failed = [], [], []
    cell._send(1)
    await sched.wait_idle()
    assert cell.rest == [(1, None)]
    assert done == [1]


async def test_spawn_cell_checks_its_class_and_cells_are_not_made_directly(
    sched: Scheduler,
) -> None:
    class Bare(ActorCell):
        __slots__ = ()

    bare = sched.spawn_cell(Bare, 1, "x", None, None)
    errors: list[BaseException] = []
    sched2 = Scheduler(on_error=lambda a, m, e: errors.append(e))
    bare2 = sched2.spawn_cell(Bare, 1, "y", None, None)
    bare2._send(Wrapped(1))  # an envelope to a class without _deliver
    await sched2.wait_idle()
    assert isinstance(errors[0], NotImplementedError)
    assert "_deliver" in str(errors[0])
    sched2.close()
    bare._stop()
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


# ---- refs -------------------------------------------------------------------------------


class Ref(CellRef):
    __slots__ = ("slow",)

    def _send_slow(self, msg: Any) -> None:
        self.slow.append(msg)


async def test_a_ref_sends_natively_to_a_live_cell_and_hands_the_rest_over(
    sched: Scheduler,
) -> None:
    got: list[Any] = []
    cell = sched.spawn_cell(Cell, 2, "r", None, lambda m, c: got.append(m))
    cell.seen, cell.rest, cell.failed = [], [], []
    ref = Ref("rt", "r", cell)
    ref.slow = []
    assert (ref.runtime, ref.id, ref._cell) == ("rt", "r", cell)
    ref.send(1)
    ref.send(2)
    ref.send(3)  # full (maxsize 2): the subclass decides
    cell._held = []
    ref.send(4)  # sends held back (an ask runs inline): the subclass too
    cell._held = None
    cell._traced = True
    ref.send(5)  # traced: the subclass wraps it
    cell._traced = False
    await sched.wait_idle()
    cell._stop()
    ref.send(6)  # stopped
    unresolved = Ref("rt", "other")
    unresolved.slow = []
    unresolved.send(7)  # no cell yet
    assert got == [1, 2]
    assert ref.slow == [3, 4, 5, 6]
    assert unresolved.slow == [7]
    with pytest.raises(NotImplementedError, match="_send_slow"):
        CellRef("rt", "x").send(1)
