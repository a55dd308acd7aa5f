"""Type stubs for the compiled core ``openheim._core`` (built from src/_core)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypedDict, TypeVar

_T = TypeVar("_T")

class Mailbox(Generic[_T]):
    """A bounded multi-producer, multi-consumer queue of Python objects."""

    maxsize: int
    def __init__(self, maxsize: int = 1024) -> None: ...
    def qsize(self) -> int: ...
    def __len__(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def put_nowait(self, item: _T) -> None: ...
    def get_nowait(self) -> _T: ...
    def get_many(self, n: int) -> list[_T]: ...
    async def put(self, item: _T) -> None: ...
    async def get(self) -> _T: ...
    def __aiter__(self) -> AsyncIterator[_T]: ...
    async def __anext__(self) -> _T: ...
    def put_blocking(self, item: _T, timeout: float | None = None) -> None: ...
    def get_blocking(self, timeout: float | None = None) -> _T: ...

_M = TypeVar("_M")

class SchedulerStats(TypedDict):
    """Counters returned by :meth:`Scheduler.stats`."""

    actors: int  # live (not stopped) actors
    ready: int  # actors queued to run
    busy: int  # async actors with a running busy-period Task
    timers: int  # pending timers
    mailboxes: int  # mailboxes attached to actors (idle actors have none)
    handled: int  # messages handed to handlers
    errors: int  # handler (and timer callback) failures
    dropped: int  # messages discarded by stop/close, or timed to a stopped actor
    passes: int  # drain passes run
    wakeups: int  # drain callbacks requested from the loop
    threadsafe_wakeups: int  # ... of which from other threads (call_soon_threadsafe)
    tasks: int  # busy-period Tasks started

class Actor(Generic[_M]):
    """An actor: a handler run on one message at a time, in arrival order.

    Created by :meth:`Scheduler.spawn`; an idle actor owns no asyncio Task and
    no mailbox.
    """

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def scheduler(self) -> Scheduler: ...
    @property
    def maxsize(self) -> int: ...
    @property
    def stopped(self) -> bool: ...
    def qsize(self) -> int: ...
    def send(self, msg: _M) -> None:
        """Queue ``msg`` without waiting (any thread); MailboxFull / ActorStopped."""
    async def put(self, msg: _M) -> None:
        """Queue ``msg``, waiting on the running loop while the mailbox is full."""
    def put_blocking(self, msg: _M, timeout: float | None = None) -> None:
        """Queue ``msg`` from a plain thread, waiting (GIL released) for room."""
    def stop(self) -> None:
        """Close the mailbox, drop queued messages, leave the ready queue."""

class Timer:
    """A pending :meth:`Scheduler.send_after` / :meth:`Scheduler.call_later`."""

    @property
    def when(self) -> float: ...
    @property
    def pending(self) -> bool: ...
    def cancel(self) -> bool:
        """Cancel if not yet fired; True if it was pending."""
    def cancelled(self) -> bool: ...

class Scheduler:
    """The actor dispatch loop of one asyncio event loop.

    Actors are not Tasks: a send puts the message in the actor's mailbox and
    queues the actor once on a native ready queue; one loop callback (a drain
    pass) runs ready actors, ``max_per_turn`` messages each, and yields to the
    loop after ``batch`` handler calls. Sync handlers run inline in the pass.
    An actor whose handler returns a coroutine gets one Task per busy period,
    which awaits its messages one at a time, in order, and ends when the
    mailbox is empty. Idle actors hold neither a Task nor a mailbox.
    Timers live in a native heap behind a single loop timer; ``clock`` may be
    a virtual clock (then call :meth:`fire_timers` after advancing it).
    Handler errors go to ``on_error(actor, msg, exc)`` (default: logged).
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def closed(self) -> bool: ...
    def __init__(
        self,
        *,
        batch: int = 64,
        max_per_turn: int = 16,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
        on_error: Callable[[Actor[Any] | None, Any, BaseException], object] | None = None,
    ) -> None: ...
    def spawn(
        self,
        handler: Callable[[_M], Awaitable[object] | object],
        *,
        maxsize: int = 1024,
        name: str | None = None,
    ) -> Actor[_M]:
        """Register an actor running ``handler(msg)`` (a function or an ``async def``)."""
    def send(self, actor: Actor[_M], msg: _M) -> None: ...
    def stop(self, actor: Actor[Any]) -> None: ...
    def time(self) -> float:
        """The scheduler's clock (timer deadlines use it)."""
    def send_after(self, actor: Actor[_M], delay: float, msg: _M) -> Timer:
        """Send ``msg`` to ``actor`` after ``delay`` seconds."""
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` on the loop after ``delay`` seconds."""
    def fire_timers(self) -> int:
        """Fire the timers that are due on the clock (call after advancing a virtual clock)."""
    async def wait_idle(self) -> None:
        """Wait until no actor has queued messages or a running handler."""
    def close(self) -> None:
        """Stop all actors (dropping queued messages), cancel timers and running handlers."""
    async def aclose(self, timeout: float | None = None) -> None:
        """Let queued messages be handled (up to ``timeout`` s), then close."""
    def stats(self) -> SchedulerStats: ...
