"""The worker's backend when its queue and its store are the same Redis.

Claims of many deliveries are one Lua script, commits of many are another
(each commit checks its fencing token, writes the key and appends the record
to the run's log atomically, so nothing can come between them), and the
settles (new tasks de-duplicated and added, acks, run ends) are one pipeline.
The keys are those of :class:`~openheim.stores.redis.RedisStore` and
:class:`~openheim.workflow.queues.redis.RedisQueue`, so a worker on the
generic backend reads and writes the same state. A committed fencing key
holds ``b"C"`` only: its record is in the log already.
"""

from __future__ import annotations

from typing import Any

from openheim.workflow._batch import CLAIM, CLAIM_TTL, ENDS, Batch
from openheim.workflow._worker import _Backend, _Claim, _Commit, _Finish
from openheim.workflow.queues.redis import GROUP

__all__ = ["RedisBackend"]

# Records of a log after ARGV `after` (log hash lk, counter sk), into `out`, and its last seq.
_READ = """
local function read_after(sk, lk, after, out)
  local last = tonumber(redis.call('GET', sk) or '0')
  if after < 0 then after = 0 end
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
  return last
end
"""

# KEYS: (claim key, log counter, log hash) per item; ARGV: ttl ms, then (who, after) per item.
# -> per item {token (0: committed), committed?, {seq, record, ...}}
_CLAIM = (
    _READ
    + """
local out = {}
local ttl = ARGV[1]
for i = 0, #KEYS / 3 - 1 do
  local ck, sk, lk = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local who, after = ARGV[i * 2 + 2], tonumber(ARGV[i * 2 + 3])
  local cur = redis.call('HMGET', ck, 'v', 'ver')
  local token = 0
  local committed = false
  if cur[1] and string.sub(cur[1], 1, 1) == 'C' then
    committed = string.sub(cur[1], 2)
  else
    token = tonumber(cur[2] or '0') + 1
    redis.call('HSET', ck, 'v', 'W' .. who, 'ver', token)
    redis.call('PEXPIRE', ck, ttl)
  end
  local recs = {}
  read_after(sk, lk, after, recs)
  out[#out + 1] = {token, committed, recs}
end
return out
"""
)

# KEYS: (claim key, log counter, log hash) per item; ARGV: ttl ms, then (token, record, after).
# -> per item {1 | 0, {seq, record, ...}}
_COMMIT = (
    _READ
    + """
local out = {}
local ttl = ARGV[1]
for i = 0, #KEYS / 3 - 1 do
  local ck, sk, lk = KEYS[i * 3 + 1], KEYS[i * 3 + 2], KEYS[i * 3 + 3]
  local token, rec, after = tonumber(ARGV[i * 3 + 2]), ARGV[i * 3 + 3], tonumber(ARGV[i * 3 + 4])
  local ver = tonumber(redis.call('HGET', ck, 'ver') or '0')
  local v = redis.call('HGET', ck, 'v')
  if ver ~= token or (v and string.sub(v, 1, 1) == 'C') then
    out[#out + 1] = {0, {}}
  else
    redis.call('HSET', ck, 'v', 'C', 'ver', ver + 1)
    redis.call('PEXPIRE', ck, ttl)
    local seq = redis.call('INCR', sk)
    redis.call('HSET', lk, seq, rec)
    local recs = {}
    read_after(sk, lk, after, recs)
    out[#out + 1] = {1, recs}
  end
end
return out
"""
)

# KEYS: log counter, log hash (the run-ends log); ARGV: records.
_APPEND_MANY = """
for i = 1, #ARGV do
  local seq = redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[2], seq, ARGV[i])
end
return #ARGV
"""


def _pairs(flat: list[Any]) -> list[tuple[int, bytes]]:
    return [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


class RedisBackend(_Backend):
    """Claims and commits as Lua scripts, settles as one pipeline (see the module docstring)."""

    keeps_records = False

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        from openheim.stores.redis import RedisStore
        from openheim.workflow.queues.redis import RedisQueue

        q = batch.queue
        s = batch.store
        assert isinstance(q, RedisQueue)
        assert isinstance(s, RedisStore)
        self.q = q
        self.client = q.client
        self.prefix = s.prefix
        self._claim_script = self.client.register_script(_CLAIM)
        self._commit_script = self.client.register_script(_COMMIT)
        self._append_script = self.client.register_script(_APPEND_MANY)
        self.ttl_ms = int(CLAIM_TTL * 1000)
        ends = f"{s.prefix}{s.ns}:"
        self._ends = (ends + "seq:" + ENDS + q.name, ends + "log:" + ENDS + q.name)

    def _keys(self, ns: str, run_id: str, task: str) -> tuple[str, str, str]:
        base = f"{self.prefix}{ns}:"
        log = "wf/" + run_id
        return f"{base}kv:{CLAIM}{run_id}/{task}", base + "seq:" + log, base + "log:" + log

    async def claim_many(self, items: list[_Claim]) -> list[tuple[int, bytes | None, Any]]:
        keys: list[str] = []
        args: list[Any] = [self.ttl_ms]
        for c in items:
            keys += self._keys(c.ns, c.run_id, c.task)
            args += (c.who, c.after)
        raw = await self._claim_script(keys=keys, args=args)
        out: list[tuple[int, bytes | None, Any]] = []
        for token, committed, recs in raw:
            out.append(
                (int(token), bytes(committed) if committed is not None else None, _pairs(recs))
            )
        return out

    async def claim(self, c: _Claim) -> tuple[int, bytes | None, Any]:
        return (await self.claim_many([c]))[0]

    async def commit_many(self, items: list[_Commit]) -> list[tuple[bool, Any]]:
        keys: list[str] = []
        args: list[Any] = [self.ttl_ms]
        for c in items:
            keys += self._keys(c.ns, c.run_id, c.task)
            args += (c.token, c.data, c.after)
        raw = await self._commit_script(keys=keys, args=args)
        return [(bool(int(ok)), _pairs(recs)) for ok, recs in raw]

    async def commit(self, c: _Commit) -> tuple[bool, Any]:
        return (await self.commit_many([c]))[0]

    async def finish(self, f: _Finish) -> None:
        q = self.q
        pipe = self.client.pipeline(transaction=False)
        if f.tasks:
            keys = [q.stream] + [q.dedup_key(t) for t in f.tasks]
            args = [max(1, round(q.dedup_ttl * 1000))] + [q.encode(t) for t in f.tasks]
            await q._put(keys=keys, args=args, client=pipe)
        if f.ends:
            await self._append_script(keys=list(self._ends), args=f.ends, client=pipe)
        if f.acks:
            ids = [d.id for d in f.acks]
            pipe.xack(q.stream, GROUP, *ids)
            pipe.xdel(q.stream, *ids)
        await q._ensure_group()
        await pipe.execute()
