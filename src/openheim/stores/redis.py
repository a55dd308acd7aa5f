"""``redis://host:port/db``: a :class:`~openheim.stores.Store` on Redis (redis-py asyncio).

A key is a Redis hash ``{prefix}{ns}:kv:{key}`` with fields ``v`` (value) and
``ver`` (version); compare-and-set and version bumps are Lua scripts, so they
are atomic on the server. TTL uses Redis' own expiry. A log is a hash
``...:log:{name}`` of sequence number -> record, numbered by a counter key
``...:seq:{name}`` that trimming leaves alone.

Restarts: the client does not retry by itself (redis-py would send any command
again, an append too); :func:`retrying` repeats a call that failed on a
connection error until the server answers again (up to ``RETRY_DEADLINE``
seconds, then :class:`StorageError`), and the calls that are not idempotent
make their repeat safe: a compare-and-set whose first attempt did land (the
reply was lost) is recognised by its value at the next version, and a repeated
append first looks for its record among the log's last entries.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from openheim.errors import StorageError
from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
)

__all__ = [
    "LUA_READ_LOG",
    "RETRY_DEADLINE",
    "RedisStore",
    "is_transient",
    "new_client",
    "retrying",
]

T = TypeVar("T")

# How long a call keeps trying while the server is away (a restart takes seconds).
RETRY_DEADLINE = 30.0


def new_client(url: str) -> aioredis.Redis:
    """A client on ``url`` that never sends a command twice by itself (see :func:`retrying`)."""
    return aioredis.Redis.from_url(
        url, decode_responses=False, retry=Retry(NoBackoff(), 0), health_check_interval=10
    )


def is_transient(exc: BaseException) -> bool:
    """A connection error of a server going away or coming back (not a refused command)."""
    return isinstance(
        exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
    ) and not isinstance(exc, StorageError)


async def retrying(
    call: Callable[[int], Awaitable[T]],
    what: str,
    url: str,
    *,
    closed: Callable[[], bool] | None = None,
    deadline: float = RETRY_DEADLINE,
) -> T:
    """``await call(attempt)`` (attempt 0, 1, ...), again after each connection error,
    until the server answers or ``deadline`` seconds have passed (then StorageError)."""
    try:
        return await call(0)
    except Exception as exc:
        if not is_transient(exc):
            raise
        first: BaseException = exc
    end = time.monotonic() + deadline
    delay = 0.02
    attempt = 0
    while True:
        if closed is not None and closed():
            raise first
        if time.monotonic() > end:
            raise StorageError(
                f"Redis at {url} did not answer while trying to {what} for {deadline:g} s "
                f"({first!r}); is redis-server running?"
            ) from first
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
        attempt += 1
        try:
            return await call(attempt)
        except Exception as exc:
            if not is_transient(exc):
                raise
            first = exc


# KEYS[1] key; ARGV: value, expected version (-1: any), ttl ms (0: none), repeat (1: this
# call was sent before and its reply lost). Returns the new version, or -(1 + actual
# version) on a conflict; a repeat that finds its own value at the next version returns it.
_PUT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local want = tonumber(ARGV[2])
if want >= 0 and want ~= cur then
  if ARGV[4] == '1' and cur == want + 1 and redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
    return cur
  end
  return -1 - cur
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', cur + 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return cur + 1
"""

# KEYS[1] key; ARGV: expected version (-1: any), repeat (1: sent before, reply lost).
# 1 deleted, 0 absent, -(1+actual) conflict (a repeat finding the key gone: deleted).
_DELETE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local want = tonumber(ARGV[1])
if want >= 0 and want ~= cur then
  if ARGV[2] == '1' and cur == 0 then return 1 end
  return -1 - cur
end
return redis.call('DEL', KEYS[1])
"""

# KEYS: counter, log hash; ARGV: record, look back (a repeat: how many of the last
# entries to search for the record first; its seq if found).
_APPEND = """
local back = tonumber(ARGV[2])
if back > 0 then
  local last = tonumber(redis.call('GET', KEYS[1]) or '0')
  for s = last, math.max(1, last - back + 1), -1 do
    if redis.call('HGET', KEYS[2], s) == ARGV[1] then return s end
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1])
return seq
"""

# Lua functions for scripts that read a log (also the fused batch backend's):
# read_range appends seq, record, ... of log hash `lk`'s fields after+1..last to `out`
# (HMGET, 256 a call; trimmed fields are skipped); read_after reads up to counter `sk`.
LUA_READ_LOG = """
local function read_range(lk, after, last, out)
  local s = after + 1
  while s <= last do
    local e = math.min(last, s + 255)
    local fields = {}
    for i = s, e do fields[#fields + 1] = i end
    local vals = redis.call('HMGET', lk, unpack(fields))
    for j = 1, #fields do
      if vals[j] then
        out[#out + 1] = fields[j]
        out[#out + 1] = vals[j]
      end
    end
    s = e + 1
  end
end
local function read_after(sk, lk, after, out)
  if after < 0 then after = 0 end
  read_range(lk, after, tonumber(redis.call('GET', sk) or '0'), out)
end
"""

# KEYS: counter, log hash; ARGV[1] after -> {seq, record, ...} of the records after `after`
# (all fields, filtered, when that range is much longer than the log trimming left).
_READ = (
    LUA_READ_LOG
    + """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if after < 0 then after = 0 end
local out = {}
if last <= after then return out end
if last - after > 2 * redis.call('HLEN', KEYS[2]) + 256 then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if tonumber(all[i]) > after then
      out[#out + 1] = tonumber(all[i])
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
read_range(KEYS[2], after, last, out)
return out
"""
)

# KEYS[1] log hash; ARGV[1] upto.
_TRIM = """
local upto = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(f) <= upto then redis.call('HDEL', KEYS[1], f) end
end
return 0
"""


# How many of a log's last entries a repeated append searches for its own record.
_LOOK_BACK = 64


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    """Keys and logs on a Redis server; ``prefix`` (default ``"oh:"``) scopes every name."""

    def __init__(
        self,
        url: str,
        ns: str = "default",
        *,
        prefix: str = "oh:",
        _client: Any = None,
        _scripts: Any = None,
    ) -> None:
        self.url = url
        self.ns = ns
        self.prefix = prefix
        self._client: Any = _client if _client is not None else new_client(url)
        self._closed = False
        if _scripts is None:
            c = self._client
            _scripts = (
                c.register_script(_PUT),
                c.register_script(_DELETE),
                c.register_script(_APPEND),
                c.register_script(_TRIM),
                c.register_script(_READ),
            )
        self._scripts = _scripts
        self._put, self._delete, self._append, self._trim, self._read = _scripts
        self._base = f"{prefix}{ns}:"

    def namespace(self, ns: str) -> RedisStore:
        return RedisStore(
            self.url,
            check_key(ns, "namespace"),
            prefix=self.prefix,
            _client=self._client,
            _scripts=self._scripts,
        )

    def _kv(self, key: str) -> str:
        return self._base + "kv:" + check_key(key)

    def _retrying(self, call: Callable[[int], Awaitable[T]], what: str) -> Awaitable[T]:
        return retrying(call, what, self.url, closed=lambda: self._closed)

    async def get(self, key: str) -> tuple[bytes, int] | None:
        k = self._kv(key)
        value, ver = await self._retrying(
            lambda _: self._client.hmget(k, ["v", "ver"]), f"read key {key!r}"
        )
        if value is None or ver is None:
            return None
        return bytes(value), int(ver)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        value = check_value(value)
        check_ttl(ttl)
        want = -1 if expect_version is None else expect_version
        ms = 0 if ttl is None else max(1, round(ttl * 1000))
        keys = [self._kv(key)]
        got = int(
            await self._retrying(
                lambda n: self._put(keys=keys, args=[value, want, ms, 1 if n else 0]),
                f"write key {key!r}",
            )
        )
        if got < 0:
            raise conflict(self.ns, key, want, -1 - got)
        return got

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        want = -1 if expect_version is None else expect_version
        keys = [self._kv(key)]
        got = int(
            await self._retrying(
                lambda n: self._delete(keys=keys, args=[want, 1 if n else 0]),
                f"delete key {key!r}",
            )
        )
        if got < 0:
            raise conflict(self.ns, key, want, -1 - got)
        return got > 0

    async def _scan(self, pattern: str, head: str) -> set[str]:
        out = set()
        async for name in self._client.scan_iter(match=pattern, count=500):
            out.add(bytes(name).decode()[len(head) :])
        return out

    async def list(self, prefix: str = "") -> builtins.list[str]:
        head = self._base + "kv:"
        pattern = _glob_escape(head + prefix) + "*"
        keys = await self._retrying(lambda _: self._scan(pattern, head), "list keys")
        return sorted(k for k in keys if k.startswith(prefix))

    def _log(self, log: str) -> tuple[str, str]:
        check_key(log, "log name")
        return self._base + "seq:" + log, self._base + "log:" + log

    async def append(self, log: str, record: bytes) -> int:
        record = check_value(record)
        keys = list(self._log(log))
        return int(
            await self._retrying(
                lambda n: self._append(keys=keys, args=[record, _LOOK_BACK if n else 0]),
                f"append to log {log!r}",
            )
        )

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        keys = list(self._log(log))
        flat = await self._retrying(
            lambda _: self._read(keys=keys, args=[after]), f"read log {log!r}"
        )
        items = [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]
        items.sort()  # (in order already but after a whole-hash read; linear then)
        return items

    async def last_seq(self, log: str) -> int:
        key = self._log(log)[0]
        got = await self._retrying(lambda _: self._client.get(key), f"read log {log!r}")
        return int(got) if got is not None else 0

    async def trim_log(self, log: str, upto: int) -> None:
        keys = [self._log(log)[1]]
        await self._retrying(lambda _: self._trim(keys=keys, args=[upto]), f"trim log {log!r}")

    async def delete_log(self, log: str) -> None:
        keys = self._log(log)
        await self._retrying(lambda _: self._client.delete(*keys), f"delete log {log!r}")

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        head = self._base + "seq:"
        pattern = _glob_escape(head + prefix) + "*"
        names = await self._retrying(lambda _: self._scan(pattern, head), "list logs")
        return sorted(n for n in names if n.startswith(prefix))

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, ns={self.ns!r})"
