"""Mailbox: the bounded MPMC queue of the native core."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from openheim import Mailbox, _core
from openheim.errors import (
    ConfigError,
    MailboxClosed,
    MailboxEmpty,
    MailboxFull,
    MailboxTimeout,
)


def test_fifo_and_bounds() -> None:
    box: Mailbox[int] = Mailbox(3)
    for i in range(3):
        box.put_nowait(i)
    assert box.full()
    assert len(box) == 3
    with pytest.raises(MailboxFull, match="maximum of 3"):
        box.put_nowait(99)
    assert [box.get_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(MailboxEmpty):
        box.get_nowait()


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_bad_maxsize(bad: int) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        Mailbox(bad)


def test_wraparound_keeps_order() -> None:
    box: Mailbox[int] = Mailbox(4)
    out = []
    for i in range(50):
        box.put_nowait(i)
        if i % 3 == 2:
            out.extend(box.get_many(10))
    out.extend(box.get_many(10))
    assert out == list(range(50))


def test_get_many_respects_n_and_drains() -> None:
    box: Mailbox[int] = Mailbox(16)
    for i in range(10):
        box.put_nowait(i)
    assert box.get_many(4) == [0, 1, 2, 3]
    assert box.get_many(0) == []
    assert box.get_many(100) == [4, 5, 6, 7, 8, 9]
    assert box.get_many(5) == []
    box.close()
    with pytest.raises(MailboxClosed):
        box.get_many(5)


def test_close_drains_then_raises() -> None:
    box: Mailbox[str] = Mailbox(8)
    box.put_nowait("a")
    box.put_nowait("b")
    box.close()
    assert box.closed
    with pytest.raises(MailboxClosed, match="cannot put"):
        box.put_nowait("c")
    assert box.get_nowait() == "a"
    assert box.get_blocking(timeout=1) == "b"
    with pytest.raises(MailboxClosed, match="every item has been read"):
        box.get_nowait()
    with pytest.raises(MailboxClosed):
        box.get_blocking()


def test_references_are_owned_by_the_mailbox() -> None:
    import gc
    import weakref

    class Item:
        pass

    box: Mailbox[Item] = Mailbox(4)
    item = Item()
    ref = weakref.ref(item)
    box.put_nowait(item)
    del item
    gc.collect()
    assert ref() is not None, "the mailbox must keep its items alive"
    got = box.get_nowait()
    assert got is ref()
    del got
    gc.collect()
    assert ref() is None, "a read item must not be leaked by the mailbox"

    leftover = Item()
    ref2 = weakref.ref(leftover)
    box.put_nowait(leftover)
    del leftover, box
    gc.collect()
    assert ref2() is None, "items left in a dropped mailbox must be released"


def test_blocking_timeouts() -> None:
    box: Mailbox[int] = Mailbox(1)
    with pytest.raises(MailboxTimeout, match=r"within 0\.05 s"):
        box.get_blocking(timeout=0.05)
    box.put_nowait(1)
    with pytest.raises(MailboxTimeout, match="no room"):
        box.put_blocking(2, timeout=0.05)
    assert isinstance(MailboxTimeout("x"), TimeoutError)
    assert box.get_nowait() == 1


def test_gil_is_released_while_blocked() -> None:
    """Another Python thread keeps running while get_blocking waits in C."""
    box: Mailbox[int] = Mailbox(1)
    progress = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal progress
        while not stop.is_set():
            progress += 1

    def feeder(before: int) -> None:
        # Put only once the spinner has clearly run while we were blocked.
        while progress - before < 200_000:
            time.sleep(0.001)
        box.put_nowait(42)

    spinner = threading.Thread(target=spin)
    spinner.start()
    before = progress
    feeder_t = threading.Thread(target=feeder, args=(before,))
    feeder_t.start()
    try:
        got = box.get_blocking(timeout=30)
    finally:
        stop.set()
        spinner.join()
        feeder_t.join()
    assert got == 42
    assert progress - before >= 200_000


def test_threads_to_threads_no_loss_no_dup() -> None:
    box: Mailbox[tuple[int, int]] = Mailbox(8)
    producers, per = 4, 5000
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def produce(pid: int) -> None:
        for i in range(per):
            box.put_blocking((pid, i))

    def consume() -> None:
        local = []
        while True:
            try:
                local.append(box.get_blocking())
            except MailboxClosed:
                break
        with lock:
            seen.extend(local)

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    prods = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in consumers + prods:
        t.start()
    for t in prods:
        t.join()
    box.close()
    for t in consumers:
        t.join()
    assert sorted(seen) == [(p, i) for p in range(producers) for i in range(per)]


@contextlib.contextmanager
def _signalled_wakeups_only() -> Iterator[None]:
    """Blocked threads wake only when signalled (not every 0.1 s to check for Ctrl-C)."""
    old = _core._set_wait_slice(3600.0)
    try:
        yield
    finally:
        _core._set_wait_slice(old)


def _until_blocked(box: Mailbox[Any], getters: int, putters: int) -> None:
    """Wait until the C queue counts these threads asleep on its condition variables."""
    for _ in range(30_000):
        if box._blocked_threads() == (getters, putters):
            return
        time.sleep(0.001)
    raise AssertionError(f"threads never blocked: {box._blocked_threads()}")


def test_close_wakes_blocked_thread_getter() -> None:
    box: Mailbox[int] = Mailbox(1)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            box.get_blocking()
        except BaseException as exc:
            errors.append(exc)

    with _signalled_wakeups_only():
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        _until_blocked(box, getters=1, putters=0)  # really asleep before close()
        box.close()
        # Only close()'s wake-up can end a wait of 3600 s within the join.
        t.join(timeout=60)
    assert not t.is_alive()
    assert box._blocked_threads() == (0, 0)
    assert len(errors) == 1
    assert isinstance(errors[0], MailboxClosed)


def test_close_wakes_blocked_thread_putter() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(0)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            box.put_blocking(1)
        except BaseException as exc:
            errors.append(exc)

    with _signalled_wakeups_only():
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        _until_blocked(box, getters=0, putters=1)
        box.close()
        t.join(timeout=60)
    assert not t.is_alive()
    assert [type(e) for e in errors] == [MailboxClosed]
    assert box.get_nowait() == 0


def test_blocked_thread_stays_blocked_without_a_wakeup() -> None:
    # The control for the two tests above: with no close() and no item, the
    # thread is still asleep after the same join, so they can fail.
    box: Mailbox[int] = Mailbox(1)
    with _signalled_wakeups_only():
        t = threading.Thread(target=box.get_blocking, daemon=True)
        t.start()
        _until_blocked(box, getters=1, putters=0)
        t.join(timeout=0.2)
        assert t.is_alive()
        box.put_nowait(7)  # a put wakes it too
        t.join(timeout=60)
    assert not t.is_alive()
    assert box.empty()


async def test_async_put_get_in_order() -> None:
    box: Mailbox[int] = Mailbox(4)
    n = 2000

    async def produce() -> None:
        for i in range(n):
            await box.put(i)
        box.close()

    got = []
    prod = asyncio.create_task(produce())
    async for item in box:
        got.append(item)
    await prod
    assert got == list(range(n))


async def test_threads_feed_event_loop() -> None:
    box: Mailbox[tuple[int, int]] = Mailbox(16)
    producers, per = 4, 3000

    def produce(pid: int) -> None:
        for i in range(per):
            box.put_blocking((pid, i))

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    got = [await box.get() for _ in range(producers * per)]
    for t in threads:
        t.join()
    assert sorted(got) == [(p, i) for p in range(producers) for i in range(per)]
    for p in range(producers):  # per-producer order is preserved
        mine = [i for (q, i) in got if q == p]
        assert mine == list(range(per))


async def test_event_loop_feeds_threads() -> None:
    box: Mailbox[int] = Mailbox(4)
    n = 5000
    results: list[int] = []

    def consume() -> None:
        while True:
            try:
                results.append(box.get_blocking())
            except MailboxClosed:
                return

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(n):
        await box.put(i)
    box.close()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert sorted(results) == list(range(n))


async def test_cancelled_getter_does_not_swallow_item() -> None:
    box: Mailbox[str] = Mailbox(4)
    first = asyncio.create_task(box.get())
    second = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put_nowait("x")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 5) == "x"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cross_thread_wake_passed_on_after_cancel() -> None:
    box: Mailbox[int] = Mailbox(4)
    a = asyncio.create_task(box.get())
    b = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.to_thread(box.put_blocking, 7)
    assert await asyncio.wait_for(b, 5) == 7
    assert a.cancelled()


async def test_async_close_wakes_waiters() -> None:
    box: Mailbox[int] = Mailbox(1)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(getter, 5)

    full: Mailbox[int] = Mailbox(1)
    full.put_nowait(1)
    putter = asyncio.create_task(full.put(2))
    await asyncio.sleep(0)
    full.close()
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(putter, 5)


async def test_close_from_thread_wakes_loop_getter() -> None:
    box: Mailbox[int] = Mailbox(1)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0.01)
    await asyncio.to_thread(box.close)
    with pytest.raises(MailboxClosed):
        await asyncio.wait_for(getter, 5)


async def test_async_put_waits_for_room_made_by_thread() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    putter = asyncio.create_task(box.put(2))
    await asyncio.sleep(0.01)
    assert not putter.done()
    assert await asyncio.to_thread(box.get_blocking, 5) == 1
    await asyncio.wait_for(putter, 5)
    assert box.get_nowait() == 2


def test_buffer_grows_while_wrapped_and_keeps_order() -> None:
    """The ring starts small and doubles up to maxsize; growth unwraps it in order."""
    box: Mailbox[int] = Mailbox(100)
    expected = []
    n = 0
    for batch in (3, 50, 7, 90, 1):
        for _ in range(batch):
            if box.full():
                break
            box.put_nowait(n)
            expected.append(n)
            n += 1
        for _ in range(batch // 2):
            assert box.get_nowait() == expected.pop(0)
    assert box.get_many(1000) == expected
    for i in range(100):
        box.put_nowait(i)
    assert box.full()
    with pytest.raises(MailboxFull):
        box.put_nowait(100)
    assert box.get_many(1000) == list(range(100))


async def test_put_with_room_completes_without_waiting() -> None:
    """The fast path: the item is in the mailbox when put() returns; awaiting is free."""
    box: Mailbox[int] = Mailbox(2)
    pending = box.put(1)
    assert box.qsize() == 1
    await pending
    await box.put(2)
    slow = asyncio.ensure_future(box.put(3))  # full: this one has to wait
    await asyncio.sleep(0)
    assert not slow.done()
    assert await box.get() == 1
    await asyncio.wait_for(slow, 5)
    assert box.get_many(10) == [2, 3]
