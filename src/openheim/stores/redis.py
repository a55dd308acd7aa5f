"""``redis://host:port/db``: a :class:`~openheim.stores.Store` on Redis (redis-py asyncio).

A key is a Redis hash ``{prefix}{ns}:kv:{key}`` with fields ``v`` (value) and
``ver`` (version); compare-and-set and version bumps are Lua scripts, so they
are atomic on the server. TTL uses Redis' own expiry. A log is a hash
``...:log:{name}`` of sequence number -> record, numbered by a counter key
``...:seq:{name}`` that trimming leaves alone.
"""

from __future__ import annotations

import builtins
from typing import Any

import redis.asyncio as aioredis

from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
)

__all__ = ["RedisStore"]

# KEYS[1] key; ARGV: value, expected version (-1: any), ttl ms (0: none).
# Returns the new version, or -(1 + actual version) on a conflict.
_PUT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local want = tonumber(ARGV[2])
if want >= 0 and want ~= cur then return -1 - cur end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', cur + 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return cur + 1
"""

# KEYS[1] key; ARGV[1] expected version (-1: any). 1 deleted, 0 absent, -(1+actual) conflict.
_DELETE = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
local want = tonumber(ARGV[1])
if want >= 0 and want ~= cur then return -1 - cur end
return redis.call('DEL', KEYS[1])
"""

# KEYS: counter, log hash; ARGV[1] record.
_APPEND = """
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], seq, ARGV[1])
return seq
"""

# KEYS[1] log hash; ARGV[1] upto.
_TRIM = """
local upto = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if tonumber(f) <= upto then redis.call('HDEL', KEYS[1], f) end
end
return 0
"""


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
        self._client: Any = (
            _client if _client is not None else aioredis.Redis.from_url(url, decode_responses=False)
        )
        if _scripts is None:
            c = self._client
            _scripts = (
                c.register_script(_PUT),
                c.register_script(_DELETE),
                c.register_script(_APPEND),
                c.register_script(_TRIM),
            )
        self._scripts = _scripts
        self._put, self._delete, self._append, self._trim = _scripts
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

    async def get(self, key: str) -> tuple[bytes, int] | None:
        value, ver = await self._client.hmget(self._kv(key), ["v", "ver"])
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
        got = int(await self._put(keys=[self._kv(key)], args=[value, want, ms]))
        if got < 0:
            raise conflict(self.ns, key, want, -1 - got)
        return got

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        want = -1 if expect_version is None else expect_version
        got = int(await self._delete(keys=[self._kv(key)], args=[want]))
        if got < 0:
            raise conflict(self.ns, key, want, -1 - got)
        return got > 0

    async def list(self, prefix: str = "") -> builtins.list[str]:
        head = self._base + "kv:"
        pattern = _glob_escape(head + prefix) + "*"
        keys = set()
        async for name in self._client.scan_iter(match=pattern, count=500):
            keys.add(bytes(name).decode()[len(head) :])
        return sorted(k for k in keys if k.startswith(prefix))

    def _log(self, log: str) -> tuple[str, str]:
        check_key(log, "log name")
        return self._base + "seq:" + log, self._base + "log:" + log

    async def append(self, log: str, record: bytes) -> int:
        record = check_value(record)
        return int(await self._append(keys=list(self._log(log)), args=[record]))

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        raw = await self._client.hgetall(self._log(log)[1])
        items = sorted((int(s), bytes(r)) for s, r in raw.items())
        return [(s, r) for s, r in items if s > after]

    async def trim_log(self, log: str, upto: int) -> None:
        await self._trim(keys=[self._log(log)[1]], args=[upto])

    async def delete_log(self, log: str) -> None:
        await self._client.delete(*self._log(log))

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        head = self._base + "seq:"
        names = set()
        async for name in self._client.scan_iter(
            match=_glob_escape(head + prefix) + "*", count=500
        ):
            names.add(bytes(name).decode()[len(head) :])
        return sorted(n for n in names if n.startswith(prefix))

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, ns={self.ns!r})"
