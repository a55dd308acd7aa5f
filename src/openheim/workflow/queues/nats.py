"""``nats://``: a :class:`TaskQueue` on a JetStream work-queue stream with one durable pull consumer.

Per queue name ``q`` the server holds the stream ``OHQ_q`` (subjects
``ohq.q.tasks`` and ``ohq.q.own.*``, work-queue retention, file storage) with
the durable pull consumer ``workers`` on ``ohq.q.tasks`` (explicit acks,
``AckWait`` = visibility timeout, ``MaxDeliver`` = max_deliveries + 1), one
durable ``own_<w>`` on ``ohq.q.own.<w>`` per worker ``w`` that took from it
(its name as a subject token, see :func:`own_token`), and the dead letters in
the stream ``OHQ_q_DEAD`` (subject ``ohq.q.dead``; ``ohq.q.redelivered`` holds
one empty message per redelivery handed out, which the stats count).

Own consumers: a worker's settle puts a run's next tasks on its own subject
(:meth:`NatsQueue.own_subject`, then :meth:`NatsQueue.note_own`), so the worker
whose view of the run is current takes them, before the shared tasks. A take
pulls its own consumer (when this process put something there since it last
came back short, or a second has passed), then the shared one; with nothing
there, other workers' untaken own tasks (an idle worker helps a busy one, taking
at most half of each one's);
with nothing at all, it waits on the shared consumer, and wakes early when this
process puts an own task. Every ``gone_after / 2`` seconds (``gone_after`` =
the visibility timeout) a take also pulls from the own consumers that
delivered nothing for ``gone_after`` while they had tasks: a worker gone,
stuck or busy with long steps. A pull hands out only what nobody holds (the
tasks it has not taken, and those whose AckWait ran out), so a live worker's
claims stay its own, and a dead worker's come back about as soon as a shared
task's would. It also makes again a consumer the server deleted
(an own consumer nobody pulls from for an hour goes) if its subject has tasks.
A stopping worker (:meth:`NatsQueue.leave`) puts its untaken own tasks back on
the shared subject and deletes its consumer.

- ``put`` publishes each task (JSON) with ``Nats-Msg-Id`` = ``Task.dedup_id()``;
  the stream's duplicate window (``dedup_window``, by default the longer of
  2 minutes and twice visibility_timeout x max_deliveries) drops a repeat.
- ``take`` pulls with its own requests: a ``no_wait`` request for ``count``
  returns what is ready at once; only if nothing is, one request for a single
  task waits up to ``timeout`` (a sparse queue is not held up waiting for a
  full batch, and no request stays open after take returns). Only a taker
  sets the consumer's AckWait and MaxDeliver (the last worker's settings
  win; a submitter's defaults never override them). An un-acked delivery
  comes back after ``AckWait`` to whichever worker pulls next. A delivery numbered above
  ``max_deliveries`` is not handed out: ``take`` moves it to the dead letters.
  The one extra delivery ``MaxDeliver`` allows exists for that; should the
  worker die while moving it, the server's MAX_DELIVERIES advisory (sent once
  AckWait ran out, when a worker next pulls) makes any live queue object of
  that name move it instead.
- ``extend`` is an in-progress ack (``+WPI``: AckWait starts again), ``ack`` an
  ack (sent without waiting, in order on the connection), ``release``
  publishes the task again as new and acks the old message (so a task a
  draining worker gives back does not count a delivery, as on Redis).
- ``stats``: depth = the consumers' ``num_pending``, in flight = their
  ``num_ack_pending``, redeliveries = the messages on ``ohq.q.redelivered``,
  dead letters = the messages on ``ohq.q.dead``.
- ``purge`` deletes both streams (with their de-duplication memory); any queue
  object of that name creates them again on its next call.

A NATS acknowledgement names the message by its stream sequence, not by the
delivery: an ack or heartbeat from a worker whose claim was taken over would
act on the new claim. So a queue object acks and extends only the claims it
still holds by its own clock (a claim starts when the message arrives and is
renewed by each extend; it counts as lapsed a margin before the visibility
timeout); a lapsed claim's ack is dropped and the task comes back to a worker
that finds its result committed. (An ack is sent only for a committed task, so
a late one that slipped through would not lose work either.)

``ack_many`` takes deliveries or their ids (ids of deliveries this object
handed out), ``extend_many`` deliveries; both are what ``openheim worker``
uses when a backend has them.

Pulls, acks and heartbeats go over the connection's lean twin
(:mod:`openheim.stores._nats_wire`) while it is up, else through nats-py: a
delivery is named by its ack subject, which either connection can answer. A
pull whose lean connection is lost returns at once; what it had pulled and
not received comes back after ``AckWait``, as after any disconnect.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import hashlib
import json
import logging
import time
import uuid
from functools import partial
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from openheim.errors import ConfigError
from openheim.stores._nats import NatsConnection, retrying, scan
from openheim.stores._nats_wire import Wire, parse_headers
from openheim.workflow.queues._base import DeadLetter, Delivery, QueueStats, Task

__all__ = ["NatsQueue"]

log = logging.getLogger("openheim.workflow.queues.nats")

DURABLE = "workers"
OWN = "own_"  # a worker's own consumer is own_<token> on subject ohq.<q>.own.<token>
_BY_WORKER = "openheim queue: settings of the last worker that took from it"
_BY_DEFAULT = "openheim queue: default settings (no worker has taken from it yet)"
NO_MESSAGE = 10057  # JSNoMessageFoundErr
_PAGE = 256  # consumers per page of a consumer list
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_enc = msgspec.json.Encoder()
_dec_task = msgspec.json.Decoder(Task)
_dec_dead = msgspec.json.Decoder(DeadLetter)
_ACK = b"+ACK"
_NAK = b"-NAK"
_WPI = b"+WPI"
_TERM = b"+TERM"


class Pulled:
    """A message pulled from the queue's stream: its ack subject, payload and headers
    (a raw header block from the lean connection, a dict from nats-py, or None)."""

    __slots__ = ("data", "headers", "reply")

    def __init__(
        self, reply: str, data: bytes, headers: bytes | dict[str, str] | None = None
    ) -> None:
        self.reply = reply
        self.data = data
        self.headers = headers

    def header(self, name: str) -> str | None:
        h = self.headers
        if h is None:
            return None
        if isinstance(h, bytes):
            if not self.has(name):
                return None
            h = self.headers = parse_headers(h)
        return h.get(name)

    def has(self, name: str) -> bool:
        """Whether the message has header ``name`` (a raw block is not parsed for it)."""
        h = self.headers
        if h is None:
            return False
        if isinstance(h, bytes):
            return b"\r\n%s:" % name.encode() in h
        return name in h

    def meta(self) -> tuple[int, int]:
        """(times delivered, stream sequence), from the ack subject: ``$JS.ACK.<stream>.
        <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``, or with
        ``<domain>.<account hash>.`` after ``$JS.ACK.`` (and a token at the end)."""
        tokens = self.reply.split(".")
        if len(tokens) == 9 and tokens[0] == "$JS":
            return int(tokens[4]), int(tokens[5])
        if len(tokens) >= 11 and tokens[0] == "$JS":
            return int(tokens[6]), int(tokens[7])
        raise ValueError(f"not a JetStream ack subject: {self.reply!r}")


class NatsQueue:
    """A :class:`TaskQueue` on NATS JetStream (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "openheim",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        dedup_window: float | None = None,
        max_ack_pending: int = 20_000,
    ) -> None:
        if not isinstance(name, str) or not name or not set(name) <= _NAME_OK:
            raise ConfigError(
                f"a NATS queue name is letters, digits, '-' and '_' (it names a stream), "
                f"got {name!r}"
            )
        if not visibility_timeout > 0:
            raise ConfigError(
                f"visibility_timeout must be positive seconds, got {visibility_timeout!r}"
            )
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be an int >= 1, got {max_deliveries!r}")
        self.url = url
        self.name = name
        self.visibility_timeout = float(visibility_timeout)
        self.max_deliveries = max_deliveries
        self.dedup_window = (
            float(dedup_window)
            if dedup_window is not None
            else max(120.0, 2 * self.visibility_timeout * max_deliveries)
        )
        self.max_ack_pending = max_ack_pending
        self.stream = f"OHQ_{name}"
        self.subject = f"ohq.{name}.tasks"
        self.dead_stream = f"OHQ_{name}_DEAD"
        self.dead_subject = f"ohq.{name}.dead"
        self.own_prefix = f"ohq.{name}.own."
        self.redelivered_subject = f"ohq.{name}.redelivered"
        # A worker whose own consumer delivers nothing this long while it has tasks is
        # gone, stuck or busy: the others take what it has not taken, or let lapse.
        self.gone_after = self.visibility_timeout
        self._conn = NatsConnection(url)
        self._ready = False
        self._configured = False  # the consumer carries this object's settings
        self._lock = asyncio.Lock()
        self._advisory: Subscription | None = None
        # Pulling (see take): one wildcard inbox, request n answers on <inbox>.<n>.
        self._inbox: str | None = None
        self._inbox_sub: Subscription | None = None
        self._requests = 0
        self._finished: dict[str, str] = {}  # request token -> its final status
        self._buffer: collections.deque[tuple[Pulled, float]] = collections.deque()
        # The same on the lean connection: its inbox, and which Wire it is on.
        self._wire: Wire | None = None
        self._wire_inbox = b""
        # Deliveries handed out and not yet acked: id -> [message, when the claim started
        # or was last extended]. A claim older than the lapse age may be someone else's now.
        self._held: dict[str, list[Any]] = {}
        self._lapse = self.visibility_timeout - min(1.0, 0.2 * self.visibility_timeout)
        self._wake: asyncio.Future[None] | None = None
        # Own consumers (see take): consumer name -> its durable, made on this server.
        self._owns: dict[str, str] = {}
        # Per consumer: the tasks this process put on its own subject (landed), that
        # count when its own pull last came back short, and when that pull was last
        # made without a hint; and all puts (a waiting pull wakes on any).
        self._own_put: dict[str, int] = {}
        self._own_seen: dict[str, int] = {}
        self._own_checked: dict[str, float] = {}
        self._own_puts = 0
        self._stole = 0.0  # when the idle steal pass last looked
        self._gone_pass = time.monotonic()
        # other own consumers: durable -> (delivered consumer seq, when it last moved)
        self._moved: dict[str, tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"NatsQueue({self.url!r}, name={self.name!r})"

    # -- set-up ------------------------------------------------------------------------

    async def _js(self) -> JetStreamContext:
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    await self._create()
        return await self._conn.jetstream()

    async def _create(self) -> None:
        js = await self._conn.jetstream()
        streams = (
            api.StreamConfig(
                name=self.stream,
                subjects=[self.subject, self.own_prefix + "*"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=self.dedup_window,
            ),
            api.StreamConfig(
                name=self.dead_stream,
                subjects=[self.dead_subject, self.redelivered_subject],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                duplicate_window=self.dedup_window,
            ),
        )
        for config in streams:
            try:
                await retrying(self._conn, partial(js.add_stream, config), "create queue streams")
            except nats.js.errors.BadRequestError:
                # It exists with another configuration (another window: keep it), or from
                # before the own subjects: add those.
                info = await retrying(
                    self._conn, partial(js.stream_info, str(config.name)), "read queue streams"
                )
                have = list(info.config.subjects or [])
                if not set(config.subjects or []) <= set(have):
                    info.config.subjects = have + [
                        x for x in config.subjects or [] if x not in have
                    ]
                    await retrying(
                        self._conn,
                        partial(js.update_stream, info.config),
                        "add subjects to the queue streams",
                    )
        # A queue object that only puts (a submitter) leaves an existing consumer as the
        # workers configured it; take() sets this object's settings (see _configure).
        try:
            await retrying(
                self._conn, partial(js.consumer_info, self.stream, DURABLE), "read the consumer"
            )
        except nats.js.errors.NotFoundError:
            await self._configure(js, taker=False)
        nc = await self._conn.connect()
        if self._inbox_sub is None:
            self._inbox = nc.new_inbox()
            self._inbox_sub = await nc.subscribe(self._inbox + ".*", cb=self._on_pulled)
        if self._advisory is None:
            self._advisory = await nc.subscribe(
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*",
                cb=self._on_max_deliveries,
            )
        self._ready = True

    def _consumer_config(self, taker: bool) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=DURABLE,
            description=_BY_WORKER if taker else _BY_DEFAULT,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.visibility_timeout,
            max_deliver=self.max_deliveries + 1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.subject,
            deliver_policy=api.DeliverPolicy.ALL,
        )

    def own_subject(self, consumer: str) -> str:
        """The subject of ``consumer``'s own tasks (see :meth:`take`)."""
        return self.own_prefix + own_token(consumer)

    async def _own(self, consumer: str) -> str:
        """The durable of ``consumer``'s own consumer, made if this object has not yet."""
        durable = self._owns.get(consumer)
        if durable is None:
            durable = await self._make_own(own_token(consumer))
            self._owns[consumer] = durable
        return durable

    async def _make_own(self, token: str) -> str:
        """Create (or update to this object's settings) the own consumer of ``token``.

        The server deletes one nobody pulled from for an hour (a worker gone while the
        others were gone too); its tasks stay and the next look at the queue makes it
        again (see _steal)."""
        js = await self._js()
        config = api.ConsumerConfig(
            durable_name=OWN + token,
            description="openheim queue: one worker's own next tasks",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.visibility_timeout,
            max_deliver=self.max_deliveries + 1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.own_prefix + token,
            deliver_policy=api.DeliverPolicy.ALL,
            inactive_threshold=max(3600.0, 100 * self.visibility_timeout),
        )
        await retrying(
            self._conn, partial(js.add_consumer, self.stream, config), "create a worker's consumer"
        )
        return OWN + token

    def note_own(self, consumer: str, n: int) -> None:
        """``n`` tasks landed on ``consumer``'s own subject: its next take looks there."""
        self._own_put[consumer] = self._own_put.get(consumer, 0) + n
        self._own_puts += n
        self._wake_up()

    async def _configure(self, js: JetStreamContext, *, taker: bool = True) -> None:
        """Create the consumer, or update it to this object's visibility timeout and
        max deliveries (the server keeps one setting per queue: the last worker's)."""
        config = self._consumer_config(taker)
        try:
            info = await js.consumer_info(self.stream, DURABLE)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            have = info.config
            if (have.ack_wait, have.max_deliver, have.description) == (
                config.ack_wait,
                config.max_deliver,
                config.description,
            ):
                self._configured = taker
                return
            if have.description == _BY_WORKER and (have.ack_wait, have.max_deliver) != (
                config.ack_wait,
                config.max_deliver,
            ):
                log.warning(
                    "queue %s: workers disagree: the visibility timeout was %s s and max "
                    "deliveries %s; now %s s and %s (give every worker the same settings)",
                    self.name,
                    have.ack_wait,
                    (have.max_deliver or 0) - 1,
                    config.ack_wait,
                    self.max_deliveries,
                )
        await retrying(
            self._conn, partial(js.add_consumer, self.stream, config), "create the consumer"
        )
        self._configured = taker

    async def _reset(self) -> None:
        """The streams or the consumer are gone (a purge elsewhere, a server that lost them)."""
        self._ready = False
        self._configured = False
        self._owns.clear()

    # -- the protocol ------------------------------------------------------------------

    async def put(self, tasks: builtins.list[Task]) -> int:
        if not tasks:
            return 0
        js = await self._js()
        if len(tasks) == 1:
            return 0 if await self._publish(js, tasks[0], tasks[0].dedup_id()) else 1
        futures = [
            await js.publish_async(
                self.subject, _enc.encode(t), headers={"Nats-Msg-Id": t.dedup_id()}
            )
            for t in tasks
        ]
        new = 0
        for task, future in zip(tasks, futures, strict=True):
            try:
                ack = await asyncio.wait_for(future, 5.0)
                new += 0 if ack.duplicate else 1
            except Exception as exc:  # a reconnect in between: publish it again (same id)
                log.debug("queue %s: put again after %r", self.name, exc)
                new += 0 if await self._publish(js, task, task.dedup_id()) else 1
        return new

    async def _publish(self, js: JetStreamContext, task: Task, msg_id: str) -> bool:
        """Publish ``task`` with ``msg_id``; True if the server had it already."""
        payload = _enc.encode(task)

        async def call() -> bool:
            ack = await js.publish(self.subject, payload, headers={"Nats-Msg-Id": msg_id})
            return bool(ack.duplicate)

        try:
            return await retrying(self._conn, call, "put tasks")
        except nats.js.errors.NoStreamResponseError:
            await self._reset()
            js = await self._js()
            return await retrying(self._conn, call, "put tasks")

    async def take(
        self, consumer: str, count: int = 1, *, timeout: float = 1.0
    ) -> builtins.list[Delivery]:
        """Pull from the consumer: first what is there now, else wait for one task.

        A ``no_wait`` request for ``count`` returns at once with what is ready;
        only when nothing is, a request for a single task waits up to
        ``timeout`` (so a sparse queue is not held up waiting for a full batch,
        and no request stays open after take returns).
        """
        if count < 1:
            raise ConfigError(f"take count must be >= 1, got {count!r}")
        for attempt in (1, 2):
            try:
                js = await self._js()
                if not self._configured:
                    await self._configure(js)
                break
            except nats.js.errors.NotFoundError:  # the stream is gone: make it again
                if attempt == 2:
                    raise
                await self._reset()
        msgs = self._drain(count)
        if not msgs:
            try:
                msgs = await self._take(consumer, count, timeout)
            except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError):
                await asyncio.sleep(min(timeout, 0.25))
                return []
        out = []
        again: builtins.list[tuple[int, int]] = []
        for msg, pulled in msgs:
            try:
                n, seq = msg.meta()
            except ValueError:
                log.warning("queue %s: dropped a message that is no delivery", self.name)
                continue
            try:
                task = _dec_task.decode(msg.data)
            except msgspec.DecodeError as exc:
                await self._bury(msg, seq, None, n, f"the message is not a task: {exc}")
                continue
            if n > 1:
                again.append((seq, n))
            if n > self.max_deliveries:
                reason = f"delivered {n} times without being acked"
                await self._bury(msg, seq, task, n, reason)
                continue
            delivery = Delivery(id=str(seq), task=task, deliveries=n, handle=msg)
            self._held[delivery.id] = [msg, pulled]
            out.append(delivery)
        if len(self._held) > 50_000:  # deliveries nobody acked: forget the long-lapsed ones
            old = time.monotonic() - 10 * self.visibility_timeout
            self._held = {k: v for k, v in self._held.items() if v[1] > old}
        if again:
            await self._count_redeliveries(again)
        return out

    async def _take(
        self, consumer: str, count: int, timeout: float
    ) -> builtins.list[tuple[Pulled, float]]:
        """What take hands out, in this order, until ``count``: the worker's own tasks
        (the next steps of the runs it moves: its views of them are current), the shared
        ones, then (idle, or from a worker gone silent) other workers' untaken own tasks;
        with none anywhere, wait up to ``timeout`` for a shared one (or an own one this
        process puts meanwhile)."""
        own = await self._own(consumer)
        now = time.monotonic()
        msgs: builtins.list[tuple[Pulled, float]] = []
        if self._own_hint(consumer) or now - self._own_checked.get(consumer, 0) >= 1:
            # (an own task comes back by itself only after a lost delivery's AckWait)
            self._own_checked[consumer] = now
            msgs = await self._fetch_own(consumer, own, count)
        if len(msgs) < count:
            msgs += await self._fetch(DURABLE, count - len(msgs))
        if now - self._gone_pass >= self.gone_after / 2 or (not msgs and now - self._stole >= 0.5):
            msgs += await self._steal(own, count - len(msgs), idle=not msgs)
        if not msgs:
            await self._pull(DURABLE, 1, max(timeout, 0.01))
            msgs = self._drain(count)
            if not msgs and self._own_hint(consumer):
                msgs = await self._fetch_own(consumer, own, count)
        return msgs

    def _own_hint(self, consumer: str) -> bool:
        """Whether this process put tasks on ``consumer``'s own subject since its own
        pull last came back short."""
        return self._own_put.get(consumer, 0) > self._own_seen.get(consumer, 0)

    async def _fetch_own(
        self, consumer: str, own: str, count: int
    ) -> builtins.list[tuple[Pulled, float]]:
        """Up to ``count`` of ``consumer``'s own tasks (its own consumer ``own``)."""
        put = self._own_put.get(consumer, 0)
        msgs = await self._fetch(own, count)
        if len(msgs) < count:
            self._own_seen[consumer] = put  # (what was put before the pull is in hand)
        return msgs

    async def _fetch(self, durable: str, count: int) -> builtins.list[tuple[Pulled, float]]:
        """Up to ``count`` tasks consumer ``durable`` has now (a ``no_wait`` pull)."""
        await self._pull(durable, count, None)
        return self._drain(count)

    async def _steal(
        self, own: str, want: int, *, idle: bool
    ) -> builtins.list[tuple[Pulled, float]]:
        """Other workers' own tasks: untaken ones if this worker is idle, and (every
        ``gone_after / 2``) the untaken and lapsed ones of a worker whose own consumer
        delivered nothing for ``gone_after`` while it had tasks (gone, stuck or busy).
        Nothing is taken from a claim another worker holds: a pull hands out only
        undelivered tasks and those whose AckWait ran out."""
        now = time.monotonic()
        self._stole = now
        gone_pass = now - self._gone_pass >= self.gone_after / 2
        if gone_pass:
            self._gone_pass = now
        js = await self._js()
        infos = await self._consumers(js)
        names = set()
        msgs: builtins.list[tuple[Pulled, float]] = []
        for info in infos:
            name = info.name or ""
            names.add(name)
            if name == own or not name.startswith(OWN):
                continue
            seq = int(info.delivered.consumer_seq or 0) if info.delivered else 0
            moved = self._moved.get(name)
            if moved is None or moved[0] != seq:
                moved = self._moved[name] = (seq, now)
            pending, held = int(info.num_pending or 0), int(info.num_ack_pending or 0)
            gone = now - moved[1] >= self.gone_after and (pending or held)
            if want > len(msgs) and ((idle and pending) or (gone_pass and gone)):
                if gone:
                    log.info(
                        "queue %s: taking over the tasks of silent consumer %s", self.name, name
                    )
                n = want - len(msgs)
                if not gone:  # (a busy worker keeps half of what it has not taken yet)
                    n = min(n, max(1, pending // 2))
                msgs += await self._fetch(name, n)
        for name in [k for k in self._moved if k not in names]:
            del self._moved[name]
        if gone_pass and want > len(msgs):
            # Tasks on a subject whose consumer the server deleted (every worker was gone
            # for an hour): make the consumer again, and take them.
            subjects = await retrying(
                self._conn,
                partial(js.stream_info, self.stream, subjects_filter=self.own_prefix + "*"),
                "read the queue's subjects",
            )
            for subject in subjects.state.subjects or {}:
                token = subject[len(self.own_prefix) :]
                if OWN + token not in names and want > len(msgs):
                    name = await self._make_own(token)
                    msgs += await self._fetch(name, want - len(msgs))
        return msgs

    async def _consumers(self, js: JetStreamContext) -> builtins.list[api.ConsumerInfo]:
        """The queue stream's consumers (the server lists them a page at a time)."""
        out: builtins.list[api.ConsumerInfo] = []
        while True:
            page = await retrying(
                self._conn,
                partial(js.consumers_info, self.stream, len(out)),
                "read the queue's consumers",
            )
            out += page
            if len(page) < _PAGE:
                return out

    async def _count_redeliveries(self, again: builtins.list[tuple[int, int]]) -> None:
        """One message per delivery beyond the first (on the dead-letter stream, named
        by message and delivery so a publish made again counts once): the stats read
        their number, as the queue's consumers come and go."""
        js = await self._js()
        for seq, n in again:
            with contextlib.suppress(Exception):  # (a count, not a task: never fail take)
                await js.publish(
                    self.redelivered_subject, b"", headers={"Nats-Msg-Id": f"again:{seq}:{n}"}
                )

    def _drain(self, count: int) -> builtins.list[tuple[Pulled, float]]:
        buf = self._buffer
        return [buf.popleft() for _ in range(min(count, len(buf)))]

    async def _pull(self, durable: str, batch: int, wait: float | None) -> None:
        """One pull request from consumer ``durable``: ``no_wait`` (wait None) or
        lingering ``wait`` seconds.

        Returns once ``batch`` messages are buffered, the request ended (a
        404/408 status on its own reply subject), the wait ran out, the lean
        connection the request went out on was lost, or (a lingering one) this
        process put a task on its own subject.
        """
        self._requests += 1
        token = str(self._requests)
        req: dict[str, Any] = {"batch": batch}
        if wait is None:
            req["no_wait"] = True
        else:
            req["expires"] = int(wait * 1e9)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}"
        payload = json.dumps(req).encode()
        wire = self._conn.wire_now() or await self._conn.wire()
        nc = await self._conn.connect()
        if wire is not None:
            if self._wire is not wire:
                self._wire_inbox = f"_INBOX.{uuid.uuid4().hex}.".encode()
                wire.subscribe(self._wire_inbox.decode() + "*", self._on_wire)
                wire.lost.add_done_callback(self._wake_up)
                self._wire = wire
            wire.publish(subject, payload, reply=self._wire_inbox + token.encode())
        else:
            await nc.publish(subject, payload, reply=f"{self._inbox}.{token}")
        end = time.monotonic() + (wait if wait is not None else 0.0) + 2.0
        answered = False
        put = self._own_puts
        try:
            while len(self._buffer) < batch and token not in self._finished:
                if wire is not None and wire.closed:
                    return
                if wait is not None and self._own_puts != put:
                    answered = True  # (it stays open: what it gets waits for the next take)
                    return
                left = end - time.monotonic()
                if left <= 0:
                    return
                if self._wake is None or self._wake.done():
                    self._wake = asyncio.get_running_loop().create_future()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._wake), left)
            answered = True
        finally:
            status = self._finished.pop(token, None)
            lost = wire is not None and wire.closed
            if not answered and not self._buffer and nc.is_connected and not lost:
                # Connected, and not even a status back: the stream or consumer is gone
                # (deleted, or a server restarted without its data). Set them up again.
                await self._reset()
        if status == "409":
            # The consumer was deleted (a purge elsewhere) or the server lost it.
            await self._reset()

    def _wake_up(self, *_: Any) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _status(self, token: str, status: str) -> None:
        if status != "100":  # 100 is a heartbeat
            self._finished[token] = status
            if len(self._finished) > 10_000:  # statuses of requests nobody waits for
                self._finished.clear()

    async def _on_pulled(self, msg: Msg) -> None:
        hdrs = msg.headers
        if hdrs and not msg.reply and "Status" in hdrs:
            self._status(msg.subject.rpartition(".")[2], hdrs["Status"])
        else:
            self._buffer.append((Pulled(msg.reply, msg.data, msg.headers), time.monotonic()))
        self._wake_up()

    def _on_wire(self, subject: bytes, reply: bytes, hdr: bytes | None, payload: bytes) -> None:
        """A message on the lean connection's pull inbox (as _on_pulled)."""
        if hdr is not None and not reply:
            status = parse_headers(hdr).get("Status")
            if status is not None:
                self._status(subject.rpartition(b".")[2].decode(), status)
                self._wake_up()
                return
        self._buffer.append((Pulled(reply.decode(), payload, hdr), time.monotonic()))
        self._wake_up()

    async def _send(self, msg: Pulled, what: bytes) -> None:
        """Ack, nak, extend or end a message (on the lean connection if it is up)."""
        wire = self._conn.wire_now()
        if wire is not None:
            wire.publish(msg.reply, what)
            return
        nc = await self._conn.connect()
        await nc.publish(msg.reply, what)

    # A NATS ack names the message (its stream sequence), not the delivery: an ack
    # or heartbeat sent for a claim that lapsed would act on whoever holds the task
    # now. So this process only acks and extends claims it still holds by its own
    # clock (started when the message arrived, renewed by each extend, minus a
    # margin); a lapsed claim is left alone and the task comes back to someone who
    # finds its result committed and acks it then.

    def _live(self, delivery: Delivery | str) -> Pulled | None:
        """The message of a delivery this process still holds, else None."""
        key = delivery if isinstance(delivery, str) else delivery.id
        held = self._held.get(key)
        if held is None:
            if isinstance(delivery, Delivery):
                _msg(delivery)  # a clear error for a delivery from elsewhere
            return None
        if isinstance(delivery, Delivery) and held[0] is not delivery.handle:
            return None  # an older delivery of a message this process took again
        if time.monotonic() - held[1] > self._lapse:
            del self._held[key]
            return None
        msg: Pulled = held[0]
        return msg

    async def extend(self, delivery: Delivery) -> None:
        await self.extend_many([delivery])

    async def extend_many(self, deliveries: builtins.list[Delivery]) -> int:
        """Heartbeat several deliveries; how many were still held (and extended)."""
        n = 0
        now = time.monotonic()
        for d in deliveries:
            msg = self._live(d)
            if msg is not None:
                await self._send(msg, _WPI)
                self._held[d.id][1] = now
                n += 1
        return n

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery])

    async def ack_many(self, deliveries: builtins.list[Delivery] | builtins.list[str]) -> None:
        """Ack deliveries (or the ids of deliveries this queue object handed out)."""
        for d in deliveries:
            msg = self._live(d)
            if msg is not None:
                self._held.pop(d if isinstance(d, str) else d.id, None)
                await self._send(msg, _ACK)

    async def release(self, delivery: Delivery) -> None:
        msg = self._live(delivery)
        if msg is None:
            return  # lapsed: the server hands it out again anyway
        self._held.pop(delivery.id, None)
        js = await self._js()
        await self._publish(js, delivery.task, f"release:{delivery.id}:{uuid.uuid4().hex}")
        nc = await self._conn.connect()
        await nc.request(msg.reply, _ACK, timeout=5)  # (acked for sure: it was put again)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._held.pop(delivery.id, None)
        await self._bury(
            _msg(delivery), int(delivery.id), delivery.task, delivery.deliveries, reason
        )

    async def _bury(
        self, msg: Pulled | None, seq: int, task: Task | None, deliveries: int, reason: str
    ) -> None:
        """Move stream message ``seq`` to the dead letters (idempotent per message)."""
        js = await self._js()
        if task is None:
            task = Task(workflow="?", run_id="?", task=f"undecodable message {seq}")
        record = DeadLetter(
            id=str(seq), task=task, deliveries=deliveries, reason=reason, at=time.time()
        )
        payload = _enc.encode(record)

        async def publish() -> None:
            await js.publish(self.dead_subject, payload, headers={"Nats-Msg-Id": f"dead:{seq}"})

        await retrying(self._conn, publish, "move a task to the dead letters")
        if msg is not None:
            await self._send(msg, _TERM)
        await _delete_msg(js, self.stream, seq)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """The server gave up on a message (its last delivery was never acked): bury it."""
        try:
            event = json.loads(msg.data)
            seq = int(event["stream_seq"])
            js = await self._conn.jetstream()
            try:
                raw = await js.get_msg(self.stream, seq)
            except nats.js.errors.NotFoundError:
                return  # acked or buried already
            task = _dec_task.decode(raw.data or b"")
            n = int(event.get("deliveries", self.max_deliveries + 1))
            await self._bury(None, seq, task, n, f"delivered {n} times without being acked")
        except Exception as exc:  # a callback must not raise into the client
            log.warning("queue %s: could not bury an over-delivered task: %r", self.name, exc)

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        await self._js()
        found = await retrying(
            self._conn, partial(scan, self._conn, self.dead_stream, self.dead_subject), "read"
        )
        out = []
        for _subject, seq, _hdrs, data in found:
            record = _dec_dead.decode(data)
            out.append(
                DeadLetter(
                    id=str(seq),
                    task=record.task,
                    deliveries=record.deliveries,
                    reason=record.reason,
                    at=record.at,
                )
            )
        return out

    async def retry_dead_letter(self, dead_letter_id: str) -> bool:
        try:
            seq = int(dead_letter_id)
        except (TypeError, ValueError):
            return False
        if seq < 1:
            return False
        js = await self._js()
        try:
            raw = await retrying(
                self._conn, partial(js.get_msg, self.dead_stream, seq), "read a dead letter"
            )
        except nats.js.errors.NotFoundError:
            return False
        if raw.subject != self.dead_subject:
            return False  # (a redelivery count, no dead letter)
        record = _dec_dead.decode(raw.data or b"")
        # One id per dead letter: two retries racing put it back once.
        await self._publish(js, record.task, f"retry:{self.dead_stream}:{seq}")
        return await _delete_msg(js, self.dead_stream, seq)

    async def stats(self) -> QueueStats:
        js = await self._js()
        infos = await self._consumers(js)
        dead = await retrying(
            self._conn,
            partial(js.stream_info, self.dead_stream, subjects_filter=f"ohq.{self.name}.*"),
            "read queue stats",
        )
        counts = dead.state.subjects or {}
        return QueueStats(
            depth=sum(int(i.num_pending or 0) for i in infos),
            in_flight=sum(int(i.num_ack_pending or 0) for i in infos),
            redeliveries=int(counts.get(self.redelivered_subject, 0)),
            dead_letters=int(counts.get(self.dead_subject, 0)),
        )

    async def leave(self, consumer: str) -> int:
        """A stopping worker's own untaken tasks go back on the shared subject (and its
        own consumer goes, unless some of its tasks are still in flight); how many went
        back."""
        durable = self._owns.get(consumer)
        if durable is None:
            return 0
        js = await self._js()
        try:
            await js.consumer_info(self.stream, durable)
        except nats.js.errors.NotFoundError:
            return 0  # (deleted: whoever looks for silent workers next takes its tasks)
        # Pulled from its own consumer and not handed out (the ack subject names it), and
        # all it has left there.
        kept: collections.deque[tuple[Pulled, float]] = collections.deque()
        mine: builtins.list[Pulled] = []
        for m in self._buffer:
            if m[0].reply.split(".")[3:4] == [durable]:
                mine.append(m[0])
            else:
                kept.append(m)
        self._buffer = kept
        while got := await self._fetch(durable, 256):
            mine += [m for m, _ in got]
        moved = 0
        for msg in mine:
            try:
                _, seq = msg.meta()
                task = _dec_task.decode(msg.data)
            except (ValueError, msgspec.DecodeError):
                await self._send(msg, _NAK)  # (take buries it, from the own consumer)
                continue
            await self._publish(js, task, f"leave:{seq}")
            nc = await self._conn.connect()
            await nc.request(msg.reply, _ACK, timeout=5)  # (acked for sure: it was put again)
            moved += 1
        for _ in range(10):  # (this worker's last acks may still be on their way)
            info = await retrying(
                self._conn, partial(js.consumer_info, self.stream, durable), "read a consumer"
            )
            if not info.num_pending and not info.num_ack_pending:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_consumer(self.stream, durable)
                self._owns.pop(consumer, None)
                break
            await asyncio.sleep(0.05)
        return moved

    async def purge(self) -> None:
        js = await self._js()
        await self._reset()
        for stream in (self.stream, self.dead_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await retrying(self._conn, partial(js.delete_stream, stream), "purge the queue")

    async def aclose(self) -> None:
        await self._reset()
        # Pulled but never handed out: give them back at once instead of after AckWait.
        while self._buffer:
            with contextlib.suppress(Exception):
                await self._send(self._buffer.popleft()[0], _NAK)
        self._wire = None
        sub, self._inbox_sub = self._inbox_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        advisory, self._advisory = self._advisory, None
        if advisory is not None:
            with contextlib.suppress(Exception):
                await advisory.unsubscribe()
        await self._conn.close()


def _msg(delivery: Delivery) -> Pulled:
    msg: Any = delivery.handle
    if not isinstance(msg, Pulled):
        raise ConfigError(
            f"delivery {delivery.id} was not taken from a NATS queue (its handle is "
            f"{type(msg).__name__}); ack, extend and release the deliveries take() returned"
        )
    return msg


async def _delete_msg(js: JetStreamContext, stream: str, seq: int) -> bool:
    """Delete message ``seq``; False if it was gone already."""
    try:
        return bool(await js.delete_msg(stream, seq))
    except nats.js.errors.APIError as exc:
        if exc.err_code == NO_MESSAGE or isinstance(exc, nats.js.errors.NotFoundError):
            return False
        raise


def own_token(consumer: str) -> str:
    """``consumer`` as a subject token and consumer name: letters, digits, '-' and '_'
    (anything else becomes '_', and a short hash of the name keeps it unique)."""
    token = "".join(ch if ch in _NAME_OK else "_" for ch in consumer)[:64]
    if token != consumer or not token:
        token += "_" + hashlib.blake2s(consumer.encode(), digest_size=4).hexdigest()
    return token
