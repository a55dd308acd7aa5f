"""One actor: its context (the cell the runtime keeps per live actor) and its reference.

A live actor is one object, its :class:`ActorContext`: a subclass of the native
:class:`~openheim._core.ActorCell` (a first-message slot, a mailbox attached
only while more messages wait) that is its own handler, made by
``Scheduler.spawn_cell`` with its fields set in C (no Python ``__init__``). An
ask is the message wrapped in an :class:`_Ask` carrying a future: the reply
slot. Calling it runs the user's ``async def`` one step inline in the
scheduler's pass (:func:`~openheim._core.step`: no StopIteration when it
ends); a handler that finishes without waiting on anything costs no Task at
all, one that waits continues in the scheduler's busy-period Task.
An ask to an idle actor with an empty mailbox skips the mailbox: the caller
runs that first step itself (:meth:`ActorContext._inline`).
"""

from __future__ import annotations

import asyncio
import collections
import time
import types
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from openheim import telemetry
from openheim._core import ActorCell, CellRef, Envelope, Suspended, step
from openheim.errors import ActorFailed, ActorStopped, AskTimeout, MailboxFull, MessageDropped
from openheim.runtime._records import ChildFailed, RestartPolicy

if TYPE_CHECKING:
    from openheim.runtime._runtime import Runtime

__all__ = ["ActorContext", "ActorRef", "Handler"]

Handler = Callable[[Any, "ActorContext"], Awaitable[Any] | Any]
_Coroutine = types.CoroutineType
_Carried = telemetry.Carried
_monotonic = time.monotonic
_step = step
_Suspended = Suspended


class _Ask(Envelope):
    __slots__ = ("fut", "msg")

    def __init__(self, msg: Any, fut: asyncio.Future[Any]) -> None:
        self.msg = msg
        self.fut = fut


class _Resume(Envelope):
    """The rest of an ask run inline (see :meth:`ActorRef.ask`) that had to wait, or
    its failure (``coro`` None): delivered through the mailbox, so it runs before any
    message that came after it."""

    __slots__ = ("coro", "exc", "fut", "msg", "yielded")

    def __init__(self, coro: Any, yielded: Any, msg: Any, fut: Any, exc: Any = None) -> None:
        self.coro = coro
        self.yielded = yielded
        self.msg = msg
        self.fut = fut
        self.exc = exc


class _Waiting:
    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut


class _Slot:
    """The reply slot of an ask run inline: a future's ``done``/``set_result`` without a loop."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        self.value: Any = _UNSET
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.value is not _UNSET or self.error is not None

    def set_result(self, value: Any) -> None:
        self.value = value

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc


_UNSET: Any = object()


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on driving ``coro``, which already ran up to yielding ``yielded`` (``yield from``)."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def _settle(fut: asyncio.Future[Any] | None, value: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)


class ActorContext(ActorCell):
    """What a handler gets besides the message: ``ctx.self``, ``ctx.reply``, ``ctx.spawn``.

    ``ctx.id`` is the actor's id and ``ctx.state`` its state: any value msgspec
    can encode, snapshotted to the runtime's store when the actor is
    passivated or the runtime stops (or on ``await ctx.save()``), and restored
    when it is activated or restarted.

    It is also the live actor itself: a native :class:`~openheim._core.ActorCell`
    the scheduler runs (its mailbox, and the fields set at spawn: ``id``,
    ``runtime``, ``state``, ``obj``, ``parent``, the handler...), made by
    ``Scheduler.spawn_cell`` without a Python ``__init__``.
    """

    # Set when first needed: _restarts (on a first failure), _spill (on a first
    # drop_oldest overflow), last_used (virtual actors only).
    __slots__ = ("_restarts", "_spill", "last_used")

    _restarts: collections.deque[float]
    _spill: collections.deque[Any]
    last_used: float
    # The native fields, typed (annotations only: the values live in the ActorCell).
    id: str
    runtime: Runtime
    parent: ActorContext | None
    _fut: asyncio.Future[Any] | None
    _held: list[Any] | None

    def __repr__(self) -> str:
        return f"<ActorContext {self.id!r}>"

    @property
    def self(self) -> ActorRef:
        """A reference to this actor (to hand to others, or to send to itself)."""
        return ActorRef(self.runtime, self.id, self)

    @property
    def kind(self) -> str | None:
        """The registered kind of a virtual actor (None for a spawned one)."""
        kind = self._kind
        return None if kind is None else kind.name

    def reply(self, value: Any) -> None:
        """Answer the ask being handled now (no-op for a plain send or if answered already).

        Without a ``reply``, an ask is answered with the handler's return value.
        """
        _settle(self._fut, value)

    def spawn(
        self,
        actor: Any,
        *,
        id: str | None = None,
        state: Any = None,
        mailbox_size: int | None = None,
        overflow: Any = None,
        eager: bool = True,
    ) -> ActorRef:
        """Start a child actor (see :meth:`Runtime.spawn`); its id defaults to ``<mine>/<n>``."""
        return self.runtime._spawn(actor, id, state, mailbox_size, overflow, self, eager)

    async def save(self) -> None:
        """Snapshot ``ctx.state`` to the store now."""
        await self.runtime._save_state(self)

    # -- delivery (called by the native scheduler, one message at a time) ---------------

    def _deliver(self, m: Any) -> Any:
        """Handle one message (the native scheduler calls this for all but a plain
        message to an actor with nothing special going on, which it handles itself
        in C: see ``ActorCell``)."""
        if type(m) is _Carried:  # sent with its trace context: a span around it
            return telemetry.deliver(self._deliver, self.id, self.kind, m)
        if type(m) is _Resume:
            if m.coro is None:
                return self._recover(m.msg, m.fut, m.exc)
            return self._wait(m.coro, m.yielded, m.msg, m.fut)
        if type(m) is _Ask:
            msg: Any = m.msg
            fut: asyncio.Future[Any] | None = m.fut
        else:
            msg, fut = m, None
        if self._skip:
            self._skip -= 1
            self.runtime._dropped += 1
            assert self._spill is not None
            self._send(self._spill.popleft())  # room: this message just left the box
            _fail(
                fut, MessageDropped(f"actor {self.id!r}: message dropped, its mailbox overflowed")
            )
            return None
        if self._loading:
            return self._activate_then(msg, fut)
        self._fut = fut
        self._active = True
        if self._kind is not None:
            self.last_used = _monotonic()
            self.runtime._touch(self)
        try:
            res = self._handler(msg, self)
            if type(res) is not _Coroutine:
                self._finish(fut, res)
                return None
            if not self._eager:
                return self._wait(res, None, msg, fut)
            got = _step(res)  # its first step, without a StopIteration when it ends
        except Exception as exc:
            return self._recover(msg, fut, exc)
        if type(got) is _Suspended:
            return self._wait(res, got.value, msg, fut)
        self._fut = None
        self._active = False
        if fut is not None:
            _settle(fut, got)
        return None

    def _inline(self, msg: Any) -> Any:
        """Handle an ask now, in the caller (the actor is idle, its mailbox empty).

        Returns the reply, or a future for it if the handler had to wait: the rest
        of the handler (or its recovery) then goes through the mailbox as a
        :class:`_Resume`, ahead of anything sent to the actor meanwhile (held in
        ``_held`` until then), so one-at-a-time and per-sender order hold.
        """
        slot = _Slot()
        self._fut = slot  # type: ignore[assignment]  # duck-typed reply slot
        self._active = True
        held: list[Any] = []
        self._held = held
        if self._kind is not None:
            self.last_used = _monotonic()
            self.runtime._touch(self)
        later: _Resume | None = None
        try:
            res = self._handler(msg, self)
            if type(res) is _Coroutine:
                value = _step(res)
                if type(value) is _Suspended:
                    later = _Resume(res, value.value, msg, None)
            else:
                value = res
        except Exception as exc:
            later = _Resume(None, None, msg, None, exc)
        except BaseException:  # cancelled, interrupted: the actor stays usable
            self._held = None
            self._fut = None
            self._active = False
            self._flush(held)
            raise
        self._held = None
        if later is None:
            self._fut = None
            self._active = False
            if held:
                self._flush(held)
            if slot.error is not None:
                raise slot.error
            return value if slot.value is _UNSET else slot.value
        rt = self.runtime
        fut: asyncio.Future[Any] = rt._loop.create_future()
        if slot.done():  # answered before it waited (ctx.reply)
            if slot.error is not None:
                fut.set_exception(slot.error)
            else:
                fut.set_result(slot.value)
        later.fut = self._fut = fut
        self._send(later)  # the box is empty but for what the handler sent itself
        if held:
            self._flush(held)
        return _Waiting(fut)

    def _hold(self, m: Any) -> None:
        held = self._held
        assert held is not None
        if len(held) >= self._maxsize:
            raise MailboxFull(
                f"the mailbox of actor {self.id!r} is full ({self._maxsize} messages) "
                "while it handles an ask; slow down, or give it a larger mailbox_size"
            )
        held.append(m)

    def _flush(self, held: list[Any]) -> None:
        for m in held:
            try:
                self._send(m)
            except MailboxFull:
                self.runtime._dropped += 1
                if type(m) is _Ask:
                    _fail(m.fut, MessageDropped(f"actor {self.id!r}: mailbox overflowed"))

    def _finish(self, fut: asyncio.Future[Any] | None, value: Any) -> None:
        self._fut = None
        self._active = False
        _settle(fut, value)

    def _deliver_failed(self, msg: Any, exc: Exception) -> Any:
        """The handler of a plain message raised (called by the native scheduler)."""
        return self._recover(msg, None, exc)

    async def _wait(
        self, coro: Any, yielded: Any, msg: Any, fut: asyncio.Future[Any] | None = None
    ) -> None:
        try:
            value = await (coro if yielded is None and not self._eager else _resume(coro, yielded))
        except Exception as exc:
            await self._recover(msg, fut, exc)
        else:
            self._finish(fut, value)

    # The handler of a plain message waits (called by the native scheduler).
    _deliver_rest = _wait

    async def _activate_then(self, msg: Any, fut: asyncio.Future[Any] | None) -> None:
        try:
            await self.runtime._activate(self)
        except Exception as exc:
            self._loading = False
            self.runtime._stop_cell(self)
            _fail(fut, exc)
            await self.runtime._dead_letter(self.id, msg, exc)
            return
        self._loading = False
        self._fut = fut
        self._active = True
        try:
            value = await self._call(msg)
        except Exception as exc:
            await self._recover(msg, fut, exc)
        else:
            self._finish(fut, value)

    async def _call(self, msg: Any) -> Any:
        res = self._handler(msg, self)
        if type(res) is _Coroutine or isinstance(res, Awaitable):
            return await res
        return res

    # -- supervision -----------------------------------------------------------------------

    def _may_restart(self, policy: RestartPolicy) -> bool:
        now = _monotonic()
        restarts: collections.deque[float] | None = getattr(self, "_restarts", None)
        if restarts is None:
            restarts = self._restarts = collections.deque()
        while restarts and restarts[0] < now - policy.within:
            restarts.popleft()
        if len(restarts) >= policy.max_restarts:
            return False
        restarts.append(now)
        return True

    async def _recover(self, msg: Any, fut: asyncio.Future[Any] | None, exc: Exception) -> None:
        rt = self.runtime
        policy = rt.restart_policy
        rt._failures += 1
        attempt = 0
        while True:
            if not self._may_restart(policy):
                await self._give_up(msg, fut, exc, budget=True)
                return
            await asyncio.sleep(min(policy.backoff * (2**attempt), policy.max_backoff))
            try:
                await rt._restart(self)
            except Exception as restart_exc:
                await self._give_up(msg, fut, restart_exc, budget=True)
                return
            if attempt >= policy.retries:
                break
            attempt += 1
            self._fut = fut
            try:
                value = await self._call(msg)
            except Exception as again:
                exc = again
                rt._failures += 1
                continue
            self._finish(fut, value)
            return
        await self._give_up(msg, fut, exc, budget=False)

    async def _give_up(
        self, msg: Any, fut: asyncio.Future[Any] | None, exc: BaseException, *, budget: bool
    ) -> None:
        rt = self.runtime
        self._fut = None
        self._active = False
        why = "exceeded its restart budget" if budget else "kept failing on a message"
        err = ActorFailed(
            f"actor {self.id!r} {why}: {type(exc).__name__}: {exc}; the message is in "
            "the dead-letter log (rt.dead_letters())",
            actor=self.id,
        )
        err.__cause__ = exc
        _fail(fut, err)
        await rt._dead_letter(self.id, msg, exc)
        if budget:
            parent = self.parent
            rt._stop_cell(self)
            if parent is not None and not parent._stopped:
                parent.self.send(ChildFailed(self.id, f"{type(exc).__name__}: {exc}"))


class ActorRef(CellRef):
    """The address of an actor: ``send`` (fire-and-forget), ``put`` and ``ask``.

    ``ActorRef(runtime, actor_id, cell=None)``; its fields are native (a
    :class:`~openheim._core.CellRef`), and so is ``send`` in the common case.
    A reference to a virtual actor (``rt.ref("kind/id")``) stays valid while
    the actor is passivated: the next message activates it again.
    """

    __slots__ = ()

    # The native fields, typed (annotations only: the values live in the CellRef).
    runtime: Runtime
    id: str
    _cell: ActorContext | None

    def __repr__(self) -> str:
        return f"ActorRef({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.id == self.id and other.runtime is self.runtime

    def __hash__(self) -> int:
        return hash(self.id)

    def _live(self) -> ActorContext:
        cell = self._cell
        if cell is None or cell._stopped:
            cell = self._cell = self.runtime._resolve(self.id)
        return cell

    def _send_slow(self, msg: Any) -> None:
        """``send`` (native, see CellRef) when the cell is not live yet or stopped, the
        runtime is traced, an inline ask holds sends, or the mailbox is full.

        A full mailbox raises :class:`~openheim.errors.MailboxFull` (policies
        ``wait`` and ``fail``; with ``wait``, ``await ref.put(msg)`` waits for
        room) or drops the oldest queued message (``drop_oldest``).
        """
        cell = self._cell
        if cell is None or cell._stopped:
            cell = self._live()
        if self.runtime._traced:
            msg = telemetry.carry(msg)
        if cell._held is not None:
            cell._hold(msg)
            return
        try:
            cell._send(msg)
        except MailboxFull:
            self.runtime._overflow(cell, msg)

    async def put(self, msg: Any) -> None:
        """Queue ``msg``, waiting for room if the mailbox is full and its policy is ``wait``."""
        cell = self._live()
        if cell._held is None and self.runtime._policy_of(cell) == "wait":
            await cell._put(telemetry.carry(msg) if self.runtime._traced else msg)
        else:
            self.send(msg)

    async def ask(self, msg: Any, *, timeout: float | None = None) -> Any:
        """Send ``msg`` and wait for the reply (``ctx.reply(...)`` or the handler's result).

        :class:`~openheim.errors.AskTimeout` after ``timeout`` seconds;
        :class:`~openheim.errors.ActorFailed` if the handler kept failing.
        """
        cell = self._cell
        if cell is None or cell._stopped:
            cell = self._live()
        rt = self.runtime
        rt._asked += 1
        if not rt._asked & 63:  # inline asks never yield: let others run now and then
            await _yield()
            if cell._stopped:
                cell = self._live()
        if (
            not cell._active
            and cell._eager
            and not cell._loading
            and not cell._skip
            and cell._qsize() == 0
            and not rt._traced  # a traced ask goes through the mailbox, in its span
        ):
            got = cell._inline(msg)
            if type(got) is not _Waiting:  # answered without waiting
                return got
            fut: asyncio.Future[Any] = got.fut
        else:
            fut = rt._loop.create_future()
            ask: Any = _Ask(msg, fut)
            if rt._traced:
                ask = telemetry.carry(ask)
            if cell._held is not None:
                cell._hold(ask)
            else:
                try:
                    cell._send(ask)
                except MailboxFull:
                    if rt._policy_of(cell) == "wait":
                        await cell._put(ask)
                    else:
                        rt._overflow(cell, ask)
        return await _await_reply(rt, fut, self.id, timeout)

    def stop(self) -> None:
        """Stop the actor now: queued messages are dropped, it takes no more."""
        cell = self.runtime._live.get(self.id) or self._cell
        if cell is not None:
            self.runtime._stop_cell(cell)


async def _await_reply(
    rt: Runtime, fut: asyncio.Future[Any], actor: str, timeout: float | None
) -> Any:
    pending = rt._asks
    pending.add(fut)
    if timeout is None:
        try:
            return await fut
        finally:
            pending.discard(fut)
    handle = rt._loop.call_later(timeout, _time_out, fut, actor, timeout)
    try:
        return await fut
    finally:
        handle.cancel()
        pending.discard(fut)


@types.coroutine
def _yield() -> Generator[None, None, None]:
    yield  # a bare yield: the Task steps again on the loop's next pass (asyncio.sleep(0))


def _time_out(fut: asyncio.Future[Any], actor: str, timeout: float) -> None:
    _fail(fut, AskTimeout(f"no reply from actor {actor!r} within {timeout} s"))


def _stopped(actor: str) -> ActorStopped:
    return ActorStopped(f"actor {actor!r} is stopped and takes no more messages")
