"""``redis://``: a :class:`TaskQueue` on Redis Streams with one consumer group.

Keys (``{p}`` is ``ohq:<name>:``): the shared stream ``{p}stream`` (group
``workers``; an entry's field ``t`` is the task, ``o`` marks a task put once
by a worker's fenced commit, ``Delivery.once``), each worker's own stream
``{p}own:<worker>`` (same group), the list of workers ``{p}workers`` (a sorted
set: worker -> when it last took, ms), the dead letters ``{p}dead`` (a stream
too), the counter ``{p}redeliveries`` and one ``{p}dedup:<id>`` per task put
(``SET NX`` with a TTL, in the same Lua script as the ``XADD``, so a task is
de-duplicated atomically).

``put`` adds to the shared stream. A worker's own stream holds the next tasks
of the runs it just moved (its fused commit puts a chain's successor there,
``_redis_fused``), so a run's chain stays with the worker whose view of it is
current. ``take`` (one script) reads new entries of the worker's own stream
first, then of the shared one, then of other workers' own streams (what they
have not taken: idle workers take work over); with nothing to take, it
blocks on the worker's own stream and the shared one. At most every
``reclaim_every`` seconds it also takes over entries of any of these streams
idle for longer than the visibility timeout (``XAUTOCLAIM``; one delivered
more than ``max_deliveries`` times moves to the dead letters in the same
script), and the untaken entries of a worker that has not taken anything for
``gone_after`` seconds (its emptied stream is dropped). A stopping worker
puts its own untaken entries back on the shared stream (``leave``).

A delivery's id is the entry's id, followed by ``@<worker>`` for an entry of
that worker's own stream. ``extend`` is ``XCLAIM ... JUSTID`` (it resets the
idle time without counting a delivery) and only for entries the consumer
still owns; ``ack`` is ``XACK`` + ``XDEL`` (the streams hold only unfinished
work: their length is depth plus in flight).

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

# KEYS: stream, dead, redeliveries, workers; ARGV: group, consumer, min idle ms, count, max
# deliveries, now (s, for the dead letters), own-stream prefix, ms after which a silent
# worker's own stream is taken over (by the server's clock: hosts' clocks may differ).
# -> {owner ('' for the shared stream), id, payload, deliveries, ...} of the entries to run:
# entries of any stream idle too long (redelivered), and the untaken entries of the own
# streams of workers silent too long (their first delivery; an emptied one is dropped).
_RECLAIM = """
local g, me, maxd, want = ARGV[1], ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now, prefix, gone = t[1] * 1000 + math.floor(t[2] / 1000), ARGV[7], tonumber(ARGV[8])
local out = {}
local n = 0
local streams = {{KEYS[1], ''}}
local workers = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #workers, 2 do
  streams[#streams + 1] = {prefix .. workers[i], workers[i], tonumber(workers[i + 1])}
end
for _, st in ipairs(streams) do
  local key, owner = st[1], st[2]
  if #out >= want * 4 then break end
  local ok, r = pcall(redis.call, 'XAUTOCLAIM', key, g, me, ARGV[3], '0-0', 'COUNT',
                      want - #out / 4)
  if ok then
    for _, e in ipairs(r[2]) do
      local id = e[1]
      local fields = e[2]
      if fields then
        local payload = fields[2]
        local p = redis.call('XPENDING', key, g, id, id, 1)
        local count = 1
        if p[1] then count = tonumber(p[1][4]) end
        n = n + 1
        if count > maxd then
          redis.call('XADD', KEYS[2], '*', 't', payload, 'id', id, 'n', count,
                     'why', 'delivered ' .. count .. ' times without being acked',
                     'at', ARGV[6])
          redis.call('XACK', key, g, id)
          redis.call('XDEL', key, id)
        else
          out[#out + 1] = owner
          out[#out + 1] = id
          out[#out + 1] = payload
          out[#out + 1] = count
        end
      else
        redis.call('XACK', key, g, id)
      end
    end
  end
  if owner ~= '' and owner ~= me and st[3] < now - gone then
    -- a worker silent too long: its untaken entries are ours, its emptied stream goes
    if #out < want * 4 then
      local got = redis.pcall('XREADGROUP', 'GROUP', g, me, 'COUNT', want - #out / 4,
                              'STREAMS', key, '>')
      if type(got) == 'table' and got[1] then
        for _, e in ipairs(got[1][2]) do
          out[#out + 1] = owner
          out[#out + 1] = e[1]
          out[#out + 1] = e[2][2]
          out[#out + 1] = 1
        end
      end
    end
    if redis.call('XLEN', key) == 0 then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[4], owner)
    end
  end
end
if n > 0 then redis.call('INCRBY', KEYS[3], n) end
return out
"""

# KEYS: own stream, shared stream, workers; ARGV: group, consumer, count, own-stream prefix
# -> {owner ('' shared), id, payload, put once (1 | 0), ...}: new entries of the
# worker's own stream first (the next steps of its runs), then of the shared one, then of
# other workers' own streams (work they have not taken yet), at most `count` in all.
_TAKE = """
local g, me, want, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')  -- (the server's clock: hosts' clocks may differ)
redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000), me)
local out = {}
local function take(key, owner, strict)
  local k = want - #out / 4
  if k <= 0 then return end
  local got
  if strict then
    got = redis.call('XREADGROUP', 'GROUP', g, me, 'COUNT', k, 'STREAMS', key, '>')
  else
    got = redis.pcall('XREADGROUP', 'GROUP', g, me, 'COUNT', k, 'STREAMS', key, '>')
    if type(got) ~= 'table' then return end
  end
  if not got or not got[1] then return end
  for _, e in ipairs(got[1][2]) do
    local f = e[2]
    out[#out + 1] = owner
    out[#out + 1] = e[1]
    out[#out + 1] = f[2]
    out[#out + 1] = f[3] == 'o' and 1 or 0
  end
end
take(KEYS[1], me, true)
take(KEYS[2], '', true)
if #out / 4 < want then
  for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    if w ~= me then take(prefix .. w, w, false) end
    if #out / 4 >= want then break end
  end
end
return out
"""

# KEYS: own stream, workers; ARGV: group, consumer, shared stream -> how many entries went
# back: a stopping worker puts its own stream's untaken entries on the shared stream, and
# drops the stream (and leaves the workers) if nothing of it is left in flight.
_LEAVE = """
local g, me = ARGV[1], ARGV[2]
local n = 0
local ok, got = pcall(redis.call, 'XREADGROUP', 'GROUP', g, me, 'COUNT', 100000,
                      'STREAMS', KEYS[1], '>')
if ok and got and got[1] then
  for _, e in ipairs(got[1][2]) do
    local f = e[2]
    redis.call('XADD', ARGV[3], '*', unpack(f))
    redis.call('XACK', KEYS[1], g, e[1])
    redis.call('XDEL', KEYS[1], e[1])
    n = n + 1
  end
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], me)
end
return n
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

# KEYS: the entry's stream, the shared stream; ARGV: group, payload, id -> the new id (the
# old entry is acked and dropped), or 0 when the entry was acked already (a repeat).
_RELEASE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[3])
return redis.call('XADD', KEYS[2], '*', 't', ARGV[2])
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
        self.workers = p + "workers"
        self.own_prefix = p + "own:"
        # a worker silent this long (no take) has its own stream's untaken entries taken
        self.gone_after = max(3 * self.visibility_timeout, 10.0)
        c = self.client
        self._put = c.register_script(_PUT)
        self._take = c.register_script(_TAKE)
        self._leave = c.register_script(_LEAVE)
        self._reclaim = c.register_script(_RECLAIM)
        self._extend = c.register_script(_EXTEND)
        self._release = c.register_script(_RELEASE)
        self._dead = c.register_script(_DEAD)
        self._retry = c.register_script(_RETRY)
        self._group_ready = False
        self._own_ready: set[str] = set()  # consumers whose own stream has its group
        self._last_reclaim: dict[str, float] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisQueue({self.url!r}, name={self.name!r})"

    # -- helpers -----------------------------------------------------------------------

    def encode(self, task: Task) -> bytes:
        return _enc.encode(task)

    def dedup_key(self, task: Task) -> str:
        return self.prefix + "dedup:" + task.dedup_id()

    def own(self, consumer: str) -> str:
        """The stream of a worker's own next tasks (see the module docstring)."""
        return self.own_prefix + consumer

    def where(self, delivery_id: str) -> tuple[str, str]:
        """(stream, entry id) of a delivery id: ``<entry id>@<worker>`` is an entry of
        that worker's own stream, a bare entry id one of the shared stream."""
        eid, at, owner = delivery_id.partition("@")
        return (self.own(owner), eid) if at else (self.stream, eid)

    def _id(self, owner: Any, eid: Any) -> str:
        owner = _s(owner)
        return f"{_s(eid)}@{owner}" if owner else _s(eid)

    def ack_into(self, pipe: Any, ids: builtins.list[str]) -> None:
        """Queue the ``XACK`` + ``XDEL`` of ``ids`` on ``pipe``, stream by stream."""
        by: dict[str, list[str]] = {}
        for i in ids:
            stream, eid = self.where(i)
            by.setdefault(stream, []).append(eid)
        for stream, eids in by.items():
            pipe.xack(stream, GROUP, *eids)
            pipe.xdel(stream, *eids)

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
        """Run ``call()``, creating the groups again if Redis lost them (a restart)."""
        await self._ensure_group()
        try:
            return await call()
        except ResponseError as exc:
            # (UNBLOCKED: a stream a take waited on was dropped, as a worker's own stream
            # is when the others found it silent too long)
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            self._group_ready = False
            self._own_ready.clear()
            await self._ensure_group()
            return await call()

    async def _ensure_own(self, consumer: str) -> None:
        if consumer in self._own_ready:
            return
        try:
            await self.client.xgroup_create(self.own(consumer), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._own_ready.add(consumer)

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
        if "@" in consumer:
            raise ConfigError(f"a consumer name has no '@', got {consumer!r}")
        out: list[Delivery] = []
        now = time.monotonic()
        if now - self._last_reclaim.get(consumer, 0.0) >= self.reclaim_every:
            self._last_reclaim[consumer] = now
            out = await self._take_reclaimed(consumer, count)
        if len(out) >= count:
            return out
        own = self.own(consumer)

        async def take() -> Any:
            await self._ensure_own(consumer)
            return await self._take(
                keys=[own, self.stream, self.workers],
                args=[GROUP, consumer, count - len(out), self.own_prefix],
            )

        raw = await self._grouped(take)
        for i in range(0, len(raw), 4):
            out.append(
                Delivery(
                    id=self._id(raw[i], raw[i + 1]),
                    task=_dec_task.decode(raw[i + 2]),
                    handle=consumer,
                    once=raw[i + 3] == 1,
                )
            )
        if out:
            return out

        # Nothing to take: wait for the next task of the shared stream or of this
        # worker's own (its running tasks' successors), half the count from each.
        async def read() -> Any:
            await self._ensure_own(consumer)
            return await self.client.xreadgroup(
                GROUP,
                consumer,
                {own: ">", self.stream: ">"},
                count=max(1, count // 2),
                block=max(1, round(timeout * 1000)),
            )

        got = await self._grouped(read)
        for stream, entries in got or ():
            owner = consumer if _s(stream) == own else ""
            for eid, fields in entries:
                payload = fields.get(b"t")
                if payload is None:
                    continue
                out.append(
                    Delivery(
                        id=self._id(owner, eid),
                        task=_dec_task.decode(payload),
                        handle=consumer,
                        once=b"o" in fields,
                    )
                )
        # Both streams had entries by the time the read arrived (it returns what each
        # has, half the count of each): what is beyond the count goes back at once.
        for extra in out[count:]:
            await self.release(extra)
        return out[:count]

    async def _take_reclaimed(self, consumer: str, count: int) -> builtins.list[Delivery]:
        ms = max(1, round(self.visibility_timeout * 1000))

        async def reclaim() -> Any:
            return await self._reclaim(
                keys=[self.stream, self.dead, self.counter, self.workers],
                args=[
                    GROUP,
                    consumer,
                    ms,
                    count,
                    self.max_deliveries,
                    repr(time.time()),
                    self.own_prefix,
                    round(self.gone_after * 1000),
                ],
            )

        raw = await self._grouped(reclaim)
        out = []
        for i in range(0, len(raw), 4):
            out.append(
                Delivery(
                    id=self._id(raw[i], raw[i + 1]),
                    task=_dec_task.decode(raw[i + 2]),
                    deliveries=int(raw[i + 3]),
                    handle=consumer,
                )
            )
        return out

    async def leave(self, consumer: str) -> int:
        """A stopping worker's own untaken tasks go back on the shared stream (and its
        own stream goes, unless some of it is still in flight); how many went back."""
        args = [GROUP, consumer, self.stream]
        return int(
            await retrying(
                lambda _: self._leave(keys=[self.own(consumer), self.workers], args=args),
                "give back a worker's own tasks",
                self.url,
            )
        )

    async def extend(self, delivery: Delivery) -> None:
        await self.extend_many([delivery])

    async def extend_many(self, deliveries: builtins.list[Delivery]) -> int:
        """Heartbeat several deliveries in one round trip; how many were still ours."""
        if not deliveries:
            return 0
        by: dict[tuple[str, str], list[str]] = {}
        for d in deliveries:
            stream, eid = self.where(d.id)
            by.setdefault((str(d.handle), stream), []).append(eid)
        n = 0
        for (consumer, stream), ids in by.items():
            args: list[Any] = [GROUP, consumer, *ids]
            n += int(
                await self._do(
                    lambda a=args, k=[stream]: self._extend(keys=k, args=a),
                    "extend",
                )
            )
        return n

    async def ack(self, delivery: Delivery) -> None:
        await self.ack_many([delivery.id])

    async def ack_many(self, ids: builtins.list[str]) -> None:
        if not ids:
            return

        async def call() -> Any:
            pipe = self.client.pipeline(transaction=False)
            self.ack_into(pipe, ids)
            return await pipe.execute()

        await self._do(call, "ack")

    async def release(self, delivery: Delivery) -> None:
        stream, eid = self.where(delivery.id)
        args: list[Any] = [GROUP, _enc.encode(delivery.task), eid]
        await self._do(
            lambda: self._release(keys=[stream, self.stream], args=args), "release a task"
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        stream, eid = self.where(delivery.id)
        args: list[Any] = [
            GROUP,
            eid,
            _enc.encode(delivery.task),
            delivery.deliveries,
            reason,
            repr(time.time()),
        ]
        await self._do(
            lambda: self._dead(keys=[stream, self.dead], args=args), "dead-letter a task"
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
            owners = await self.client.zrange(self.workers, 0, -1)
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.counter)
            pipe.xlen(self.dead)
            for stream in [self.stream, *(self.own(_s(o)) for o in owners)]:
                pipe.xlen(stream)
                pipe.xpending(stream, GROUP)
            return await pipe.execute(raise_on_error=False)

        redeliveries, dead, *streams = await self._do(call, "read the queue's stats")
        length = in_flight = 0
        for n, pending in zip(streams[::2], streams[1::2], strict=True):
            if isinstance(n, int) and isinstance(pending, dict):
                length += n
                in_flight += int(pending["pending"])
        return QueueStats(
            depth=max(0, length - in_flight),
            in_flight=in_flight,
            redeliveries=int(redeliveries or 0),
            dead_letters=int(dead),
        )

    async def purge(self) -> None:
        await retrying(lambda _: self._purge(), "purge the queue", self.url)
        self._group_ready = False

    async def _purge(self) -> None:
        keys: list[Any] = [self.stream, self.dead, self.counter, self.workers]
        for pattern in ("dedup:*", "own:*"):
            async for k in self.client.scan_iter(match=self.prefix + pattern, count=1000):
                keys.append(k)
                if len(keys) >= 1000:
                    await self.client.delete(*keys)
                    keys = []
        if keys:
            await self.client.delete(*keys)
        self._own_ready.clear()

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
