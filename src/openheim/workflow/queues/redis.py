"""``redis://``: a :class:`TaskQueue` on a Redis Stream with one consumer group.

Keys (``{p}`` is ``ohq:<name>:``): the stream ``{p}stream`` (group
``workers``; an entry's field ``t`` is the task, ``o`` marks a task put once
by a worker's fenced commit, ``Delivery.once``), the dead letters ``{p}dead`` (a stream too), the counter
``{p}redeliveries`` and one ``{p}dedup:<id>`` per task put (``SET NX`` with a
TTL, in the same Lua script as the ``XADD``, so a task is de-duplicated
atomically). ``take`` reads new entries with ``XREADGROUP`` and, at most every
``reclaim_every`` seconds, takes over entries idle for longer than the
visibility timeout with ``XAUTOCLAIM``; a reclaimed entry delivered more than
``max_deliveries`` times moves to the dead letters in the same script.
``extend`` is ``XCLAIM ... JUSTID`` (it resets the idle time without counting
a delivery) and only for entries the consumer still owns; ``ack`` is ``XACK``
+ ``XDEL`` (the stream holds only unfinished work: its length is depth plus
in flight).

Entries survive a Redis restart as far as Redis persists them (AOF or RDB).
The client never sends a command twice by itself; every call but ``take`` is
repeated after a connection error until the server is back (``retrying`` of
``openheim.stores.redis``; a worker repeats ``take`` itself, between checks of
its stop flag), and each is safe to repeat: ``put`` is de-duplicated, ``ack``
and ``extend`` are idempotent, ``release`` and ``dead_letter`` move an entry
only if their ``XACK`` still acked it, and an entry whose delivery reply was
lost stays pending and is reclaimed. Scripts are loaded again on ``NOSCRIPT``
and a consumer group lost with its stream is created again.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from openheim.errors import ConfigError, StorageError
from openheim.stores.redis import is_transient, new_client, retrying
from openheim.workflow.queues._base import DeadLetter, Delivery, QueueStats, Task

__all__ = ["RedisQueue"]

GROUP = "workers"
_enc = msgspec.msgpack.Encoder()
_dec_task = msgspec.msgpack.Decoder(Task)

# KEYS: stream, dedup keys...; ARGV: dedup ttl ms, payloads... -> how many were added.
_PUT = """
local ttl = ARGV[1]
local n = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ttl) then
    redis.call('XADD', KEYS[1], '*', 't', ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: stream, dead, redeliveries; ARGV: group, consumer, min idle ms, count, max deliveries.
# -> {id, payload, deliveries, ...} of the reclaimed entries still to run.
_RECLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
local maxd = tonumber(ARGV[5])
local n = 0
for _, e in ipairs(r[2]) do
  local id = e[1]
  local fields = e[2]
  if fields then
    local payload = fields[2]
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local count = 1
    if p[1] then count = tonumber(p[1][4]) end
    n = n + 1
    if count > maxd then
      redis.call('XADD', KEYS[2], '*', 't', payload, 'id', id, 'n', count,
                 'why', 'delivered ' .. count .. ' times without being acked',
                 'at', ARGV[6])
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
    else
      table.insert(out, id)
      table.insert(out, payload)
      table.insert(out, count)
    end
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
if n > 0 then redis.call('INCRBY', KEYS[3], n) end
return out
"""

# KEYS: stream; ARGV: group, consumer, ids... -> how many were still owned (and extended).
_EXTEND = """
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: stream; ARGV: group, payload, id -> the new id (the old entry is acked and dropped),
# or 0 when the entry was acked already (a repeat: it was released then).
_RELEASE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[3])
return redis.call('XADD', KEYS[1], '*', 't', ARGV[2])
"""

# KEYS: stream, dead; ARGV: group, id, payload, deliveries, reason, at -> 1 if moved.
_DEAD = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 't', ARGV[3], 'id', ARGV[2], 'n', ARGV[4], 'why', ARGV[5],
           'at', ARGV[6])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, dead; ARGV: dead letter id -> 1 if it was put back.
_RETRY = """
local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if not e[1] then return 0 end
local f = e[1][2]
for i = 1, #f, 2 do
  if f[i] == 't' then redis.call('XADD', KEYS[1], '*', 't', f[i + 1]) end
end
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisQueue:
    """A :class:`TaskQueue` on a Redis Stream (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "openheim",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        dedup_ttl: float = 7 * 24 * 3600.0,
        reclaim_every: float | None = None,
        _client: Any = None,
    ) -> None:
        if not name or any(c in name for c in " {}*?"):
            raise ConfigError(f"a queue name is a non-empty word, got {name!r}")
        if not visibility_timeout > 0:
            raise ConfigError(
                f"visibility_timeout must be positive seconds, got {visibility_timeout!r}"
            )
        if max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be >= 1, got {max_deliveries!r}")
        self.url = url
        self.name = name
        self.visibility_timeout = float(visibility_timeout)
        self.max_deliveries = int(max_deliveries)
        self.dedup_ttl = dedup_ttl
        self.reclaim_every = (
            min(1.0, self.visibility_timeout / 4) if reclaim_every is None else reclaim_every
        )
        self.client: Any = _client if _client is not None else new_client(url)
        p = f"ohq:{name}:"
        self.prefix = p
        self.stream = p + "stream"
        self.dead = p + "dead"
        self.counter = p + "redeliveries"
        c = self.client
        self._put = c.register_script(_PUT)
        self._reclaim = c.register_script(_RECLAIM)
        self._extend = c.register_script(_EXTEND)
        self._release = c.register_script(_RELEASE)
        self._dead = c.register_script(_DEAD)
        self._retry = c.register_script(_RETRY)
        self._group_ready = False
        self._last_reclaim: dict[str, float] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisQueue({self.url!r}, name={self.name!r})"

    # -- helpers -----------------------------------------------------------------------

    def encode(self, task: Task) -> bytes:
        return _enc.encode(task)

    def dedup_key(self, task: Task) -> str:
        return self.prefix + "dedup:" + task.dedup_id()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _do(self, call: Any, what: str) -> Any:
        """``call()`` with the group in place, again after a connection error (a restart)."""
        return await retrying(
            lambda _: self._grouped(call), what, self.url, closed=lambda: self._closed
        )

    async def _grouped(self, call: Any) -> Any:
        """Run ``call()``, creating the group again if Redis lost it (a restart)."""
        await self._ensure_group()
        try:
            return await call()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            await self._ensure_group()
            return await call()

    # -- the protocol ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(
                f"{self!r} was closed; stop the workers that use a queue before closing it"
            )

    async def put(self, tasks: builtins.list[Task]) -> int:
        self._check_open()
        if not tasks:
            return 0
        keys = [self.stream] + [self.dedup_key(t) for t in tasks]
        args = [max(1, round(self.dedup_ttl * 1000))] + [_enc.encode(t) for t in tasks]
        return int(await self._do(lambda: self._put(keys=keys, args=args), "put tasks"))

    async def take(
        self, consumer: str, count: int = 1, *, timeout: float = 1.0
    ) -> builtins.list[Delivery]:
        self._check_open()
        out: list[Delivery] = []
        now = time.monotonic()
        if now - self._last_reclaim.get(consumer, 0.0) >= self.reclaim_every:
            self._last_reclaim[consumer] = now
            out = await self._take_reclaimed(consumer, count)
        if len(out) >= count:
            return out
        block = None if out else max(1, round(timeout * 1000))

        async def read() -> Any:
            return await self.client.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count - len(out), block=block
            )

        got = await self._grouped(read)
        if got:
            for _stream, entries in got:
                for eid, fields in entries:
                    payload = fields.get(b"t")
                    if payload is None:
                        continue
                    out.append(
                        Delivery(
                            id=_s(eid),
                            task=_dec_task.decode(payload),
                            handle=consumer,
                            once=b"o" in fields,
                        )
                    )
        return out

    async def _take_reclaimed(self, consumer: str, count: int) -> builtins.list[Delivery]:
        ms = max(1, round(self.visibility_timeout * 1000))

        async def reclaim() -> Any:
            return await self._reclaim(
                keys=[self.stream, self.dead, self.counter],
                args=[GROUP, consumer, ms, count, self.max_deliveries, repr(time.time())],
            )

        raw = await self._grouped(reclaim)
        out = []
        for i in range(0, len(raw), 3):
            out.append(
                Delivery(
                    id=_s(raw[i]),
                    task=_dec_task.decode(raw[i + 1]),
                    deliveries=int(raw[i + 2]),
                    handle=consumer,
                )
            )
        return out

    async def extend(self, delivery: Delivery) -> None:
        await self.extend_many([delivery])

    async def extend_many(self, deliveries: builtins.list[Delivery]) -> int:
        """Heartbeat several deliveries in one round trip; how many were still ours."""
        if not deliveries:
            return 0
        by: dict[str, list[str]] = {}
        for d in deliveries:
            by.setdefault(str(d.handle), []).append(d.id)
        n = 0
        for consumer, ids in by.items():
            args: list[Any] = [GROUP, consumer, *ids]
            n += int(
                await self._do(lambda a=args: self._extend(keys=[self.stream], args=a), "extend")
            )
        return n

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery.id])

    async def ack_many(self, ids: builtins.list[str]) -> None:
        if not ids:
            return

        async def call() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            return await pipe.execute()

        await self._do(call, "ack")

    async def release(self, delivery: Delivery) -> None:
        args: list[Any] = [GROUP, _enc.encode(delivery.task), delivery.id]
        await self._do(lambda: self._release(keys=[self.stream], args=args), "release a task")

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        args: list[Any] = [
            GROUP,
            delivery.id,
            _enc.encode(delivery.task),
            delivery.deliveries,
            reason,
            repr(time.time()),
        ]
        await self._do(
            lambda: self._dead(keys=[self.stream, self.dead], args=args), "dead-letter a task"
        )

    async def dead_letters(self) -> builtins.list[DeadLetter]:
        out = []
        got = await retrying(
            lambda _: self.client.xrange(self.dead, "-", "+"), "read the dead letters", self.url
        )
        for eid, f in got:
            out.append(
                DeadLetter(
                    id=_s(eid),
                    task=_dec_task.decode(f[b"t"]),
                    deliveries=int(f.get(b"n", b"0")),
                    reason=_s(f.get(b"why", b"")),
                    at=float(f.get(b"at", b"0")),
                )
            )
        return out

    async def retry_dead_letter(self, dead_letter_id: str) -> bool:
        try:
            got = await self._do(
                lambda: self._retry(keys=[self.stream, self.dead], args=[dead_letter_id]),
                "retry a dead letter",
            )
        except ResponseError as exc:
            if "Invalid stream ID" in str(exc):
                return False
            raise
        return bool(got)

    async def stats(self) -> QueueStats:

        async def call() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, GROUP)
            pipe.get(self.counter)
            pipe.xlen(self.dead)
            return await pipe.execute()

        length, pending, redeliveries, dead = await self._do(call, "read the queue's stats")
        in_flight = int(pending["pending"]) if pending else 0
        return QueueStats(
            depth=max(0, int(length) - in_flight),
            in_flight=in_flight,
            redeliveries=int(redeliveries or 0),
            dead_letters=int(dead),
        )

    async def purge(self) -> None:
        await retrying(lambda _: self._purge(), "purge the queue", self.url)
        self._group_ready = False

    async def _purge(self) -> None:
        keys = [self.stream, self.dead, self.counter]
        async for k in self.client.scan_iter(match=self.prefix + "dedup:*", count=1000):
            keys.append(k)
            if len(keys) >= 1000:
                await self.client.delete(*keys)
                keys = []
        if keys:
            await self.client.delete(*keys)

    async def aclose(self) -> None:
        # (redis-py would open new connections for calls made after aclose(), and
        # nothing would close them: a closed queue refuses calls instead)
        self._closed = True
        await self.client.aclose()

    # -- waiting out a restart ---------------------------------------------------------

    async def wait_until_up(self, deadline: float = 30.0) -> None:
        """Ping until the server answers (after a restart), at most ``deadline`` s."""
        end = time.monotonic() + deadline
        delay = 0.05
        while True:
            try:
                await self.client.ping()
                return
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > end:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
