"""The worker's backend when its queue and its store are the same Redis.

Claims of many deliveries are one Lua script, commits of many are another
(each commit checks its fencing token, writes the key and appends the record
to the run's log atomically, so nothing can come between them), and the
settles (new tasks de-duplicated and added, acks, run ends) are one pipeline.

The keys are those of :class:`~openheim.stores.redis.RedisStore` and
:class:`~openheim.workflow.queues.redis.RedisQueue`, so a worker on the
generic backend reads and writes the same state. A committed fencing key
holds ``b"C"`` only: its record is in the log already.

A chain's next task, put by the commit of its predecessor's result (which
happens once per committed record), goes on the committing worker's own
stream (it takes it first: its view of the run is current; see
``queues.redis``) and is marked put once (stream field ``o``).
Its first delivery (``XREADGROUP >`` hands an entry out once) writes no
fencing key: its token is 0, and its commit expects the key unwritten. Any
other delivery claims as before (token = the key's version + 1), so a
reclaimed delivery fences the first one out, and a first one that committed
already is seen as committed. The claim sends nothing at all when the
worker's view of the run is current (the common case of a chain).
"""

from __future__ import annotations

from typing import Any

import msgspec

from openheim.stores.redis import LUA_READ_LOG, retrying
from openheim.workflow._backends import Records, _Backend, _Claim, _Commit, _Finish
from openheim.workflow._batch import CLAIM, CLAIM_TTL, ENDS, Batch
from openheim.workflow.queues import Delivery
from openheim.workflow.queues.redis import GROUP

__all__ = ["RedisBackend"]

_enc = msgspec.msgpack.Encoder()

# ARGV: ttl ms, msgpack [[claim key, log counter, log hash, after, first], ...] (one
# argument: far cheaper for the client to send than five per item), the claim value
# ('W' + who). A first delivery of a task put once (first = 1) only reads the log.
# -> per item {token (0: committed, or a first delivery), committed?, {seq, record, ...}},
# or just the token when nothing was committed and no record follows `after`.
_CLAIM = (
    LUA_READ_LOG
    + """
local out = {}
local ttl, mark = ARGV[1], ARGV[3]
for _, it in ipairs(cmsgpack.unpack(ARGV[2])) do
  local ck, sk, lk, after = it[1], it[2], it[3], it[4]
  local token = 0
  local committed = false
  if it[5] ~= 1 then
    local cur = redis.call('HMGET', ck, 'v', 'ver')
    if cur[1] and string.sub(cur[1], 1, 1) == 'C' then
      committed = string.sub(cur[1], 2)
    else
      token = tonumber(cur[2] or '0') + 1
      redis.call('HSET', ck, 'v', mark, 'ver', token)
      redis.call('PEXPIRE', ck, ttl)
    end
  end
  local recs = {}
  read_after(sk, lk, after, recs)
  if committed or #recs > 0 then
    out[#out + 1] = {token, committed, recs}
  else
    out[#out + 1] = token
  end
end
return out
"""
)

# KEYS: stream, ends counter, ends log, the worker's own stream (where a chained settle puts
# the successors), the workers; ARGV: claim ttl ms, group, dedup ttl ms, msgpack
# [[claim key, log counter, log hash, token, record, after, settle], ...], repeat ('1': this
# call was sent before and its reply lost: a key committed at token + 1 was committed by
# it, reported committed and not settled, as settling again is harmless) where settle is
# nil or [[dedup key, payload, ...], ack id or '', run end or '']: done only if nothing
# was recorded in the run after `after`. Binary values (records, payloads, run ends) are
# the indexes of further ARGV entries (Redis' cmsgpack reads no msgpack bin); ARGV[6]: the
# prefix of the workers' own streams (an ack id '<id>@<worker>' is an entry of one); ARGV[7]:
# the worker (listed among the workers if a task went on its own stream and it was not:
# a worker dropped from the list as gone, whose tasks the others must still see).
# -> per item {1, settled 1 | 0, {seq, record, ...}}, or one number: 0 refused, else
# seq * 4 + settled * 2 + 1 when this record is the only one after `after` (no tables).
_COMMIT = (
    LUA_READ_LOG
    + """
local out = {}
local ttl, group, dttl, again = ARGV[1], ARGV[2], ARGV[3], ARGV[5] == '1'
local own = false
local acks, order = {}, {}  -- stream -> ids, acked and deleted at the end (one call each)
local function stream_of(id)
  local at = string.find(id, '@', 1, true)
  if at then return ARGV[6] .. string.sub(id, at + 1), string.sub(id, 1, at - 1) end
  return KEYS[1], id
end
for _, it in ipairs(cmsgpack.unpack(ARGV[4])) do
  local ck, sk, lk, token, rec, after, st = it[1], it[2], it[3], it[4], ARGV[it[5]], it[6], it[7]
  local cur = redis.call('HMGET', ck, 'v', 'ver')
  local v, ver = cur[1], tonumber(cur[2] or '0')
  if ver ~= token or (v and string.sub(v, 1, 1) == 'C') then
    if again and ver == token + 1 and v == 'C' then
      local recs = {}
      read_after(sk, lk, after, recs)
      out[#out + 1] = {1, 0, recs}
    else
      out[#out + 1] = 0
    end
  else
    -- (a claim gave the key its TTL and HSET keeps it; a first delivery's did not claim)
    redis.call('HSET', ck, 'v', 'C', 'ver', ver + 1)
    if token == 0 then redis.call('PEXPIRE', ck, ttl) end
    local seq = redis.call('INCR', sk)
    redis.call('HSET', lk, seq, rec)
    local settled = 0
    if type(st) == 'table' and seq == after + 1 then
      settled = 1
      local tasks = st[1]
      for j = 1, #tasks, 2 do
        if redis.call('SET', tasks[j], '1', 'NX', 'PX', dttl) then
          if not own then  -- (the group first: the stream may be new, or lost its group)
            redis.pcall('XGROUP', 'CREATE', KEYS[4], group, '0', 'MKSTREAM')
            own = true
          end
          redis.call('XADD', KEYS[4], '*', 't', ARGV[tasks[j + 1]], 'o', '1')
        end
      end
      local ack = st[2]
      if ack ~= '' then
        local ak, aid = stream_of(ack)
        local ids = acks[ak]
        if not ids then
          ids = {}
          acks[ak] = ids
          order[#order + 1] = ak
        end
        ids[#ids + 1] = aid
      end
      local e = st[3]
      if e > 0 then
        e = ARGV[e]
        local es = redis.call('INCR', KEYS[2])
        redis.call('HSET', KEYS[3], es, e)
      end
    end
    if seq == after + 1 or after < 0 and seq == 1 then
      out[#out + 1] = seq * 4 + settled * 2 + 1  -- the only new record is this one
    else
      local recs = {}
      read_after(sk, lk, after, recs)
      out[#out + 1] = {1, settled, recs}
    end
  end
end
for _, ak in ipairs(order) do
  local ids = acks[ak]
  for i = 1, #ids, 4000 do  -- (unpack's limit on arguments)
    local part = {unpack(ids, i, math.min(#ids, i + 3999))}
    redis.call('XACK', ak, group, unpack(part))
    redis.call('XDEL', ak, unpack(part))
  end
end
if own and ARGV[7] ~= '' then redis.call('ZADD', KEYS[5], 'NX', 0, ARGV[7]) end
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

    fast_settle = True

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

    def first(self, d: Delivery) -> bool:
        """A task put once, on its first delivery (see the module docstring)."""
        return d.once and d.deliveries == 1

    def claim_at_once(self, c: _Claim) -> tuple[int, bytes | None, Records] | None:
        return (0, None, []) if c.first and not c.read else None

    async def claim_many(self, items: list[_Claim]) -> list[tuple[int, bytes | None, Any]]:
        out: list[Any] = [self.claim_at_once(c) for c in items]
        sent = [c for c, o in zip(items, out, strict=True) if o is None]
        if not sent:
            return out
        who = sent[0].who
        if any(c.who != who for c in sent):  # (one worker claims as one consumer)
            got = []
            for c in sent:
                got += await self.claim_many([c])
        else:
            got = await self._claim_group(sent, who)
        it = iter(got)
        return [o if o is not None else next(it) for o in out]

    async def _claim_group(self, items: list[_Claim], who: str) -> list[Any]:
        packed = _enc.encode(
            [(*self._keys(c.ns, c.run_id, c.task), c.after, int(c.first)) for c in items]
        )
        args = [self.ttl_ms, packed, "W" + who]
        raw = await retrying(
            lambda _: self._claim_script(keys=[], args=args), "claim tasks", self.q.url
        )
        out: list[Any] = []
        for r in raw:
            if type(r) is int:
                out.append((r, None, []))
            else:
                token, committed, recs = r
                out.append(
                    (int(token), bytes(committed) if committed is not None else None, _pairs(recs))
                )
        return out

    async def claim(self, c: _Claim) -> tuple[int, bytes | None, Any]:
        return (await self.claim_many([c]))[0]

    async def commit_many(self, items: list[_Commit]) -> list[tuple[bool, bool, Any]]:
        q = self.q
        rows = []
        blobs: list[Any] = [
            self.ttl_ms,
            GROUP,
            max(1, round(q.dedup_ttl * 1000)),
            b"",
            "0",
            q.own_prefix,
            self.consumer or "",
        ]
        for c in items:
            f = c.settle
            st: Any = None
            if f is not None:
                flat: list[Any] = []
                for t in f.tasks:
                    blobs.append(q.encode(t))
                    flat += (q.dedup_key(t), len(blobs))
                end = 0
                if f.ends:
                    blobs.append(f.ends[0])
                    end = len(blobs)
                st = (flat, f.acks[0].id if f.acks else "", end)
            blobs.append(c.data)
            rows.append((*self._keys(c.ns, c.run_id, c.task), c.token, len(blobs), c.after, st))
        blobs[3] = _enc.encode(rows)
        keys = [
            q.stream,
            *self._ends,
            q.own(self.consumer) if self.consumer else q.stream,
            q.workers,
        ]

        async def call(n: int) -> Any:
            await q._ensure_group()
            if n:
                blobs[4] = "1"
            return await self._commit_script(keys=keys, args=blobs)

        raw = await retrying(call, "commit results", q.url)
        out: list[tuple[bool, bool, Any]] = []
        for c, r in zip(items, raw, strict=True):
            if type(r) is int:  # 0: refused; else this commit's record is the only new one
                out.append((True, bool(r & 2), [(r >> 2, c.data)]) if r else (False, False, []))
            else:
                ok, st, recs = r
                out.append((bool(ok), bool(st), _pairs(recs)))
        return out

    async def commit(self, c: _Commit) -> tuple[bool, bool, Any]:
        return (await self.commit_many([c]))[0]

    async def finish(self, f: _Finish) -> None:
        await retrying(lambda _: self._finish(f), "put and ack tasks", self.q.url)

    async def _finish(self, f: _Finish) -> None:
        q = self.q
        pipe = self.client.pipeline(transaction=False)
        if f.tasks:
            keys = [q.stream] + [q.dedup_key(t) for t in f.tasks]
            args = [max(1, round(q.dedup_ttl * 1000))] + [q.encode(t) for t in f.tasks]
            await q._put(keys=keys, args=args, client=pipe)
        if f.ends:
            await self._append_script(keys=list(self._ends), args=f.ends, client=pipe)
        if f.acks:
            q.ack_into(pipe, [d.id for d in f.acks])
        await q._ensure_group()
        await pipe.execute()
