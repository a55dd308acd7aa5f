"""Running a coroutine from synchronous code on one event loop per thread.

``Agent.run_sync`` would otherwise make and tear down an event loop on every
call (``asyncio.run``), which costs more than a whole scripted run. Each
thread instead keeps one event loop for all its calls, as a script or a
worker thread calling ``run_sync`` in a loop wants (what ``asyncio.Runner``
does, without its per-call signal handler swap, which costs more than the
loop itself). A call interrupted from outside (Ctrl-C) cancels its task and
lets it unwind before the exception propagates, so nothing of it is left to
continue in a later call. The loop is closed (pending tasks cancelled,
async generators and the default executor shut down first) when its thread
ends, and the main thread's at interpreter exit. A process forked from one that used
``run_sync`` gets a loop of its own on its first call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_in_thread_loop"]

T = TypeVar("T")


class _ThreadLoop:
    """One thread's event loop; closed when the thread's locals are released."""

    __slots__ = ("__weakref__", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():  # interrupted from outside: unwind the run now
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)
            raise

    def close(self) -> None:
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            return  # a daemon thread still inside run_sync at exit: leave it alone
        try:
            with contextlib.suppress(Exception):  # never raise at thread exit
                # As asyncio.run does: tasks still pending (a connection's reader,
                # say) are cancelled and unwind in their own tasks first.
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def __del__(self) -> None:
        self.close()


_local = threading.local()
_live: weakref.WeakSet[_ThreadLoop] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for holder in list(_live):
        holder.close()


def _forget_inherited() -> None:
    """In a forked child: leave the parent's loops alone and start afresh.

    A loop's selector (epoll) is shared with the parent after a fork, so the
    child must neither run nor close those loops (closing one unregisters the
    parent's wake-up pipe). They are marked closed, which makes ``close()``
    and the loop's finalizer do nothing; the child's next ``run_sync`` makes
    a loop of its own.
    """
    for holder in list(_live):
        holder.loop._closed = True  # type: ignore[attr-defined]  # BaseEventLoop's flag
    _live.clear()
    _local.__dict__.pop("holder", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)


def run_in_thread_loop(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro`` to completion on this thread's event loop.

    RuntimeError (naming ``what``) if this thread is already running an event
    loop: code there should ``await`` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError(
            f"{what} was called from a running event loop (it would block that loop); "
            "await the async form instead, e.g. `await agent.run(...)`"
        )
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None:
        holder = _local.holder = _ThreadLoop()
        _live.add(holder)
    return holder.run(coro)
