"""The actor runtime: spawn, address, publish, passivate, supervise, stop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from openheim import telemetry
from openheim._core import Scheduler
from openheim.errors import ActorStopped, ConfigError, MailboxFull, MessageDropped
from openheim.runtime._actor import ActorContext, ActorRef, Handler, _Ask, _fail
from openheim.runtime._records import (
    DEAD_LETTERS,
    DeadLetter,
    RestartPolicy,
    decode_dead_letter,
    decode_state,
    encode_dead_letter,
    encode_state,
    state_key,
)

if TYPE_CHECKING:
    from openheim.stores import Store

__all__ = ["Overflow", "Runtime"]

_Function = types.FunctionType
Overflow = Literal["wait", "fail", "drop_oldest"]
_OVERFLOWS = ("wait", "fail", "drop_oldest")


def _check_overflow(policy: str) -> Overflow:
    if policy not in _OVERFLOWS:
        raise ConfigError(f"overflow must be one of {', '.join(_OVERFLOWS)}; got {policy!r}")
    return policy  # type: ignore[return-value]


def _check_id(actor_id: object) -> str:
    if not isinstance(actor_id, str) or not actor_id or actor_id != actor_id.strip():
        raise ConfigError(
            f"an actor id is a non-empty string without surrounding spaces, got {actor_id!r}"
        )
    return actor_id


def _topic_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches one dot-separated segment, ``>`` (last) the rest (one or more)."""
    parts = pattern.split(".")
    out = []
    for i, part in enumerate(parts):
        if part == ">" and i == len(parts) - 1:
            out.append(r"[^.]+(?:\.[^.]+)*")
        elif part == "*":
            out.append(r"[^.]+")
        elif not part or "*" in part or ">" in part:
            raise ConfigError(
                f"bad topic pattern {pattern!r}: segments are names, '*' (one segment) "
                "or a final '>' (the rest)"
            )
        else:
            out.append(re.escape(part))
    return re.compile(r"\.".join(out) + r"\Z")


class _Kind:
    __slots__ = ("eager", "factory", "name", "state_type")

    def __init__(self, name: str, factory: Callable[[str], Any], state_type: Any, eager: bool):
        self.name = name
        self.factory = factory
        self.state_type = state_type
        self.eager = eager


def _state_type(cell: ActorContext) -> Any:
    kind = cell._kind
    return None if kind is None else kind.state_type


def _handler_of(actor: Any) -> tuple[Handler, Any, bool]:
    """(handler, object, eager) for a function, a ``receive`` object or an Agent."""
    if type(actor) is _Function:
        return actor, None, True
    if type(actor).__module__.startswith("openheim.agent"):
        from openheim.agent import Agent

        if isinstance(actor, Agent):
            return _agent_handler(actor), actor, False
    receive = getattr(actor, "receive", None)
    if receive is not None and callable(receive):
        return receive, actor, True
    if callable(actor):
        return actor, None, True
    raise ConfigError(
        f"an actor is an `async def handler(msg, ctx)`, an object with "
        f"`async def receive(self, msg, ctx)`, or an openheim Agent; got {actor!r}"
    )


def _agent_handler(agent: Any) -> Handler:
    from openheim.stores.history import InMemoryHistory

    own_history = not isinstance(agent.history, InMemoryHistory)

    async def run_agent(msg: Any, ctx: ActorContext) -> Any:
        if own_history:  # the agent keeps its sessions itself: the session is the actor id
            return await agent.run(msg, session=ctx.id)
        history = ctx.runtime.history
        past = await history.load(ctx.id)
        result = await agent.run(msg, message_history=past)
        await history.append(ctx.id, result.new_messages, result.usage, run_id=result.run_id)
        return result

    return run_agent


class Runtime:
    """Actors on the native scheduler of one event loop, with state in a store.

    ``async with Runtime(store="sqlite:///state.db") as rt:`` (a URL or a
    :class:`~openheim.stores.Store`; ``memory://`` by default). Actors are
    functions ``async def handler(msg, ctx)``, objects with ``async def
    receive(self, msg, ctx)`` or agents; each handles one message at a time,
    in order per sender. ``register(kind, factory)`` declares virtual actors,
    addressed by ``ref("kind/id")`` whether live or not: idle ones (longer than
    ``passivate_after`` s, or the least recently used beyond
    ``max_live_actors``) are snapshotted to the store and evicted. Mailboxes
    hold ``mailbox_size`` messages; ``overflow`` says what a send to a full one
    does (``wait``, ``fail``, ``drop_oldest``). ``restart`` is the supervision
    policy. ``namespace`` separates runtimes sharing a store.

    A handler runs up to its first real wait inline: in the scheduler's pass
    for a sent message, and in the caller for an ask to an idle actor with an
    empty mailbox (no mailbox trip at all when it does not wait; if it does,
    the rest of it goes through the mailbox ahead of later messages). Until
    that first wait the current Task is none or the caller's, so a handler
    that starts with ``asyncio.timeout()`` (or anything else needing its own
    ``asyncio.current_task()``) is spawned or registered with ``eager=False``.
    Agents always run in a Task.
    """

    def __init__(
        self,
        store: Store | str = "memory://",
        *,
        namespace: str = "actors",
        passivate_after: float | None = None,
        max_live_actors: int | None = None,
        mailbox_size: int = 1024,
        overflow: Overflow = "wait",
        restart: RestartPolicy | None = None,
    ) -> None:
        if passivate_after is not None and not passivate_after > 0:
            raise ConfigError(f"passivate_after is seconds > 0 (or None), got {passivate_after!r}")
        if max_live_actors is not None and max_live_actors < 1:
            raise ConfigError(f"max_live_actors is >= 1 (or None), got {max_live_actors!r}")
        if mailbox_size < 1:
            raise ConfigError(f"mailbox_size is >= 1, got {mailbox_size!r}")
        self._store_arg = store
        self._namespace = namespace
        self.passivate_after = passivate_after
        self.max_live_actors = max_live_actors
        self.mailbox_size = mailbox_size
        self.overflow: Overflow = _check_overflow(overflow)
        self.restart_policy = restart if restart is not None else RestartPolicy()
        self._live: dict[str, ActorContext] = {}
        self._lru: collections.OrderedDict[str, ActorContext] = collections.OrderedDict()
        self._kinds: dict[str, _Kind] = {}
        self._policies: dict[str, Overflow] = {}
        self._saving: dict[str, asyncio.Future[None]] = {}
        self._asks: set[asyncio.Future[Any]] = set()
        self._subs: dict[str, list[tuple[str, re.Pattern[str] | None, ActorRef]]] = {}
        self._route_cache: dict[str, list[ActorRef]] = {}
        self._children = 0
        self._asked = 0
        self._dropped = 0
        self._failures = 0
        self._passivated = 0
        self._sched: Scheduler | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._trimmer: asyncio.TimerHandle | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._traced = False
        self._owns_store = isinstance(store, str)
        self.store: Store = None  # type: ignore[assignment]  # set on start
        self._history: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind to the running loop and open the store (``async with`` does this)."""
        if self._sched is not None:
            raise ConfigError("this Runtime is already started")
        self._loop = asyncio.get_running_loop()
        store = self._store_arg
        if isinstance(store, str):
            from openheim.stores import open_store

            store = open_store(store, namespace=self._namespace)
        else:
            store = store.namespace(self._namespace)
        self.store = store
        self._sched = Scheduler(on_error=self._on_error)
        self._traced = telemetry.tracing()  # decided once: sends then pay one attribute check
        telemetry.watch_runtime(self)
        if self.passivate_after is not None:
            self._arm_sweeper()

    async def stop(self, deadline: float | None = 10.0) -> None:
        """Stop: let queued messages be handled for up to ``deadline`` seconds, snapshot
        every live actor with state, then drop what is left (failing its asks)."""
        sched = self._sched
        if sched is None or self._closing:
            return
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._trimmer is not None:
            self._trimmer.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sched.wait_idle(), deadline)
        for cell in list(self._live.values()):
            if cell.state is not None and not cell._loading and not cell._active:
                await self._save_state(cell)
        if self._saving:
            await asyncio.gather(*self._saving.values(), return_exceptions=True)
        sched.close()
        for fut in list(self._asks):
            _fail(fut, MessageDropped("the runtime stopped before the message was handled"))
        for task in list(self._bg):
            task.cancel()
        self._live.clear()
        self._lru.clear()
        if self._owns_store:
            await self.store.aclose()

    # -- spawning and addressing ------------------------------------------------------------

    def spawn(
        self,
        actor: Any,
        *,
        id: str | None = None,
        state: Any = None,
        mailbox_size: int | None = None,
        overflow: Overflow | None = None,
        eager: bool = True,
    ) -> ActorRef:
        """Start an actor: ``async def handler(msg, ctx)``, an object with ``async def
        receive(self, msg, ctx)``, or an Agent (then the actor is the agent's session
        ``id`` and an ask returns its RunResult). ``state`` is its initial ``ctx.state``."""
        sched = self._sched
        if (  # the common case, inlined: a function with an id and the defaults
            type(actor) is _Function
            and type(id) is str
            and mailbox_size is None
            and overflow is None
            and sched is not None
            and not self._closing
            and id
            and id[0] != " "
            and id[-1] != " "
            and id not in self._live
        ):
            cell = sched.spawn_cell(
                ActorContext, self.mailbox_size, id, self, actor, None, None, state, None, eager
            )
            if self._traced:
                cell._traced = True
            self._live[id] = cell
            return ActorRef(self, id, cell)
        return self._spawn(actor, id, state, mailbox_size, overflow, None, eager)

    def _spawn(
        self,
        actor: Any,
        actor_id: str | None,
        state: Any,
        mailbox_size: int | None,
        overflow: Overflow | None,
        parent: ActorContext | None,
        eager: bool = True,
    ) -> ActorRef:
        sched = self._sched
        if sched is None or self._closing:
            sched = self._running()  # raises
        handler, obj, inline = _handler_of(actor)
        eager = eager and inline
        if actor_id is None:
            self._children += 1
            prefix = parent.id if parent is not None else "actor"
            actor_id = f"{prefix}/{self._children}"
        elif type(actor_id) is not str or not actor_id or actor_id[0] == " " or actor_id[-1] == " ":
            _check_id(actor_id)
        live = self._live
        if actor_id in live:
            raise ConfigError(f"an actor with id {actor_id!r} is already running; stop it first")
        if mailbox_size is not None and mailbox_size < 1:
            raise ConfigError(f"mailbox_size is >= 1, got {mailbox_size!r}")
        if overflow is not None:
            self._policies[actor_id] = _check_overflow(overflow)
        cell = sched.spawn_cell(
            ActorContext,
            mailbox_size or self.mailbox_size,
            actor_id,
            self,
            handler,
            obj,
            None,
            state,
            parent,
            eager,
        )
        if self._traced:
            cell._traced = True
        live[actor_id] = cell
        return ActorRef(self, actor_id, cell)

    def register(
        self,
        kind: str,
        factory: Callable[[str], Any],
        *,
        state_type: Any = None,
        overflow: Overflow | None = None,
        eager: bool = True,
    ) -> None:
        """Declare a kind of virtual actor: ``factory(id)`` makes the actor (function,
        receive object or Agent) for ``ref("kind/...")`` when a message activates it;
        its ``ctx.state`` comes from its snapshot (decoded as ``state_type`` if given)."""
        if not isinstance(kind, str) or not kind or "/" in kind:
            raise ConfigError(f"a kind is a non-empty name without '/', got {kind!r}")
        if not callable(factory):
            raise ConfigError(f"the factory of kind {kind!r} must be callable, got {factory!r}")
        self._kinds[kind] = _Kind(kind, factory, state_type, eager)
        if overflow is not None:
            self._policies["kind:" + kind] = _check_overflow(overflow)

    def ref(self, actor_id: str) -> ActorRef:
        """A reference to ``actor_id``: a live actor, or a virtual one ``kind/key`` of a
        registered kind (activated by its first message)."""
        actor_id = _check_id(actor_id)
        cell = self._live.get(actor_id)
        if cell is None:
            kind = actor_id.partition("/")[0]
            if kind not in self._kinds:
                raise ConfigError(
                    f"no actor {actor_id!r} is running and {kind!r} is not a registered kind; "
                    f"spawn it or rt.register({kind!r}, factory) first"
                )
        return ActorRef(self, actor_id, cell)

    def _resolve(self, actor_id: str) -> ActorContext:
        cell = self._live.get(actor_id)
        if cell is not None:
            return cell
        sched = self._running()
        kind = self._kinds.get(actor_id.partition("/")[0])
        if kind is None:
            raise ActorStopped(f"actor {actor_id!r} is stopped and takes no more messages")
        # Activation: the cell exists now; its state loads before its first message.
        cell = sched.spawn_cell(
            ActorContext,
            self.mailbox_size,
            actor_id,
            self,
            _not_loaded,
            None,
            kind,
            None,
            None,
            kind.eager,
            True,
        )
        cell.last_used = time.monotonic()
        if self._traced:
            cell._traced = True
        self._live[actor_id] = cell
        self._lru[actor_id] = cell
        limit = self.max_live_actors
        if limit is not None and len(self._lru) > limit and self._trimmer is None:
            # (With the trimmer armed, the last scan found every live actor busy: the
            # trimmer scans again shortly, rather than every activation meanwhile.)
            self._evict(len(self._lru) - limit)
        return cell

    async def _activate(self, cell: ActorContext) -> None:
        saving = self._saving.get(cell.id)
        if saving is not None:
            await saving
        handler, obj, eager = _handler_of(cell._kind.factory(cell.id))
        cell._handler, cell.obj, cell._eager = handler, obj, eager and cell._kind.eager
        got = await self.store.get(state_key(cell.id))
        if got is not None:
            cell.state = decode_state(got[0], _state_type(cell))

    async def _restart(self, cell: ActorContext) -> None:
        """One-for-one restart: a new object from the factory, state from the last snapshot."""
        if cell._kind is not None:
            handler, obj, eager = _handler_of(cell._kind.factory(cell.id))
            cell._handler, cell.obj, cell._eager = (
                handler,
                obj,
                eager and cell._kind.eager and cell._kind.eager,
            )
        got = await self.store.get(state_key(cell.id))
        cell.state = decode_state(got[0], _state_type(cell)) if got is not None else None

    def _running(self) -> Scheduler:
        sched = self._sched
        if sched is None or self._closing:
            raise ConfigError(
                "the runtime is not running: use `async with Runtime(...) as rt:` "
                "(or await rt.start())"
            )
        return sched

    def _stop_cell(self, cell: ActorContext) -> None:
        cell._stop()
        live = self._live
        if live.get(cell.id) is cell:
            del live[cell.id]
            if not live:  # a dict keeps its table when emptied: clear() gives it back
                live.clear()
        if self._lru.pop(cell.id, None) is not None and not self._lru:
            self._lru.clear()

    # -- passivation -------------------------------------------------------------------------

    def _touch(self, cell: ActorContext) -> None:
        lru = self._lru
        if lru.get(cell.id) is cell:
            lru.move_to_end(cell.id)

    def _idle(self, cell: ActorContext) -> bool:
        return not cell._active and not cell._loading and cell._qsize() == 0

    def _evict(self, n: int) -> None:
        """Passivate the ``n`` least recently used idle actors (scanning from the
        oldest, no further than needed)."""
        idle = self._idle
        victims = []
        for cell in self._lru.values():
            if idle(cell):
                victims.append(cell)
                if len(victims) >= n:
                    break
        for cell in victims:
            self._passivate(cell)
        n -= len(victims)
        if n > 0 and self._trimmer is None and not self._closing:
            # All the others are busy (a burst of activations): try again shortly, so
            # the live count comes back to max_live_actors once they are idle.
            self._trimmer = self._loop.call_later(0.005, self._trim)

    def _trim(self) -> None:
        self._trimmer = None
        limit = self.max_live_actors
        if limit is not None and len(self._lru) > limit and not self._closing:
            self._evict(len(self._lru) - limit)

    def _passivate(self, cell: ActorContext) -> None:
        """Evict ``cell`` now; its snapshot is written in the background, and an
        activation of the same id waits for that write."""
        self._stop_cell(cell)
        self._passivated += 1
        if cell.state is None:
            return
        data = encode_state(cell.state)
        fut: asyncio.Future[None] = self._loop.create_future()
        self._saving[cell.id] = fut
        self._background(self._write_snapshot(cell.id, data, fut))

    async def _write_snapshot(self, actor_id: str, data: bytes, fut: asyncio.Future[None]) -> None:
        try:
            await self.store.put(state_key(actor_id), data)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            if self._saving.get(actor_id) is fut:
                del self._saving[actor_id]
                if not self._saving:
                    self._saving.clear()

    def _background(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        bg = self._bg
        bg.discard(task)
        if not bg:  # a set keeps its table when emptied: clear() gives it back
            bg.clear()

    def _arm_sweeper(self) -> None:
        assert self.passivate_after is not None
        period = max(self.passivate_after / 2, 0.01)
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        if self._closing:
            return
        assert self.passivate_after is not None
        cutoff = time.monotonic() - self.passivate_after  # the clock of last_used
        for cell in list(self._lru.values()):
            if cell.last_used >= cutoff:
                break  # the LRU order is by last use
            if self._idle(cell):
                self._passivate(cell)
        self._arm_sweeper()

    async def _save_state(self, cell: ActorContext) -> None:
        await self.store.put(state_key(cell.id), encode_state(cell.state))

    # -- backpressure ------------------------------------------------------------------------

    def _policy_of(self, cell: ActorContext) -> Overflow:
        policies = self._policies
        if not policies:
            return self.overflow
        got = policies.get(cell.id)
        if got is None and cell._kind is not None:
            got = policies.get("kind:" + cell._kind.name)
        return got if got is not None else self.overflow

    def _overflow(self, cell: ActorContext, msg: Any) -> None:
        """A send found the mailbox full: fail, or drop the oldest message.

        ``drop_oldest`` marks the oldest queued message to be skipped when it
        comes up and parks the new one in a spill queue that moves into the
        mailbox as the skipped ones leave it, so order holds and at most
        ``2 * mailbox_size`` messages are ever held.
        """
        policy = self._policy_of(cell)
        if policy == "drop_oldest":
            spill = getattr(cell, "_spill", None)
            if spill is None:
                spill = cell._spill = collections.deque()
            if cell._skip < cell._qsize():
                cell._skip += 1
            else:  # every queued message is already to be skipped: drop the oldest spilled
                self._dropped += 1
                old = spill.popleft()
                if type(old) is telemetry.Carried:  # sent with its trace context
                    old = old.msg
                if type(old) is _Ask:
                    _fail(old.fut, MessageDropped(f"actor {cell.id!r}: mailbox overflowed"))
            spill.append(msg)
            return
        hint = (
            " (its policy is 'wait': `await ref.put(msg)` waits for room)"
            if policy == "wait"
            else ""
        )
        raise MailboxFull(
            f"the mailbox of actor {cell.id!r} is full ({cell._maxsize} messages){hint}; "
            "slow down, or give it a larger mailbox_size"
        )

    # -- topics ------------------------------------------------------------------------------

    def subscribe(self, ref: ActorRef, pattern: str) -> None:
        """Deliver messages published on topics matching ``pattern`` to ``ref``
        (``orders.*``: one more segment; ``orders.>``: any number)."""
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"a topic pattern is a non-empty string, got {pattern!r}")
        wild = "*" in pattern or ">" in pattern
        regex = _topic_regex(pattern) if wild else None
        if not wild:
            _topic_regex(pattern)  # validates the segments
        subs = self._subs.setdefault(pattern, [])
        if all(r != ref for _, _, r in subs):
            subs.append((pattern, regex, ref))
        self._route_cache.clear()

    def unsubscribe(self, ref: ActorRef, pattern: str) -> None:
        subs = self._subs.get(pattern)
        if subs:
            subs[:] = [s for s in subs if s[2] != ref]
            if not subs:
                del self._subs[pattern]
        self._route_cache.clear()

    def publish(self, topic: str, msg: Any) -> int:
        """Send ``msg`` to every actor subscribed to a pattern matching ``topic``; returns
        how many got it."""
        refs = self._route_cache.get(topic)
        if refs is None:
            refs = []
            for pattern, entries in self._subs.items():
                for _, regex, ref in entries:
                    if (
                        regex.match(topic) if regex is not None else pattern == topic
                    ) and ref not in refs:
                        refs.append(ref)
            if len(self._route_cache) > 10_000:
                self._route_cache.clear()
            self._route_cache[topic] = refs
        for ref in refs:
            ref.send(msg)
        return len(refs)

    # -- failures and dead letters -----------------------------------------------------------

    def _on_error(self, actor: Any, msg: Any, exc: BaseException) -> None:
        # Handlers' errors are caught by supervision; this sees only the runtime's own.
        import logging

        logging.getLogger("openheim.runtime").error(
            "actor %r failed on %.200r", actor, msg, exc_info=exc
        )

    async def _dead_letter(self, actor_id: str, msg: Any, exc: BaseException) -> None:
        await self.store.append(DEAD_LETTERS, encode_dead_letter(actor_id, msg, exc))

    async def dead_letters(self, after: int = 0) -> list[DeadLetter]:
        """The dead-letter log: messages that kept failing, with their errors."""
        return [
            decode_dead_letter(data, seq)
            for seq, data in await self.store.read_log(DEAD_LETTERS, after)
        ]

    # -- introspection -----------------------------------------------------------------------

    @property
    def history(self) -> Any:
        """The runtime's conversation store (agent actors' sessions live here)."""
        if self._history is None:
            from openheim.stores.history import StoreHistory

            self._history = StoreHistory(self.store)
        return self._history

    async def wait_idle(self) -> None:
        """Wait until no actor has a queued message or a running handler."""
        await self._running().wait_idle()

    def live(self) -> list[str]:
        """The ids of the live (not passivated) actors."""
        return list(self._live)

    def stats(self) -> dict[str, int]:
        """Totals for metrics: live actors, queued messages, dropped, failures, passivations."""
        queued = sum(c._qsize() for c in self._live.values())
        return {
            "live": len(self._live),
            "queued": queued,
            "dropped": self._dropped,
            "failures": self._failures,
            "passivated": self._passivated,
            "pending_asks": len(self._asks),
        }

    def mailbox_depth(self, actor_id: str) -> int:
        """Messages waiting for ``actor_id`` (0 if it is not live)."""
        cell = self._live.get(actor_id)
        return 0 if cell is None else cell._qsize()


async def _not_loaded(msg: Any, ctx: ActorContext) -> None:  # pragma: no cover - never called
    raise AssertionError("an actor ran before its state was loaded")
