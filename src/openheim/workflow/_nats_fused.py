"""The worker's backend when its queue is NATS JetStream and its store the NATS KV store.

The generic backend (:class:`~openheim.workflow._backends._Backend`) makes
each call through the Store protocol: a claim is a read of the fencing key, a
compare-and-set write and a read of the run's log, one after the other. Here
the same keys and subjects of :class:`~openheim.stores.nats.NatsStore` are
written directly, with fewer round trips, and every delivery of a group is in
flight at once:

- *claim*: the fencing key is written at once with
  ``Nats-Expected-Last-Subject-Sequence`` set to what this process last saw
  of it (nothing, for a task it never met), while the run's log is read; only
  a refused write reads the key (committed? then it is a duplicate; claimed
  by another delivery? then it is taken over with its sequence). A task's
  *first* delivery writes nothing: its commit expects the fencing key to be
  empty, so any later delivery's claim (which writes the key) refuses it just
  as a newer token would. The token is the fencing key's stream sequence + 1.
- *commit*: the record goes into the fencing key (``b"C"`` + record) with the
  expected last sequence = the token's, then it is appended to the run's log
  (the store's cached revision of the log, no read). A refused write is a
  claim taken over: nothing is appended.
- *settle*: for the commits that chain (see ``Worker._chain_settle``), the
  successors of the whole group are published together (pub-acks awaited
  together, ``Nats-Msg-Id`` = the task's de-duplication id), the run ends of
  the group are one record of the ends log, then the deliveries are acked
  without waiting for the server (a lost ack only means a redelivery that
  finds the task committed).

- *reading the run's log*: once its views of runs keep falling behind (other
  workers run their steps too), a worker keeps the runs' latest records, as stored,
  from an ordered consumer of the log stream (new messages only, in memory on
  the server), so a claim that finds its view a few records behind (the run's
  last steps ran on another worker) reads only the log's last message and
  takes the rest from there. They are used only if the kept copy of that last
  message has the server's stream sequence (then everything before it on that
  log was delivered too, in stream order); otherwise the log is read from the
  server.

A crash between a commit and its append is repaired as on the generic backend:
the fencing key keeps the committed record, and the next delivery appends it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from openheim.workflow._backends import Records, _Backend, _Claim, _Commit, _Finish
from openheim.workflow._batch import CLAIM, CLAIM_TTL, Batch

__all__ = ["NatsBackend"]

log = logging.getLogger("openheim.worker")

_KEEP = 32  # records kept per log (the latest)
_STEP_READ = 16  # records read one by one when a view is behind (else the store reads)
_TAIL_AFTER = 16  # log reads a few records behind before the tail starts
_KEEP_BYTES = 64 * 2**20  # records kept in all (their payload bytes)


class _LogTail:
    """The latest stored records of every run log, from an ordered consumer."""

    def __init__(self, shared: Any) -> None:
        self.s = shared
        self.logs: collections.OrderedDict[str, dict[int, tuple[int, bytes]]] = (
            collections.OrderedDict()
        )
        self.bytes = 0
        self.hits = 0  # log reads the tail answered (beyond the log's last message)
        self.misses = 0  # log reads that went to the server for them
        self.sub: Any = None
        self.started = False

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        from nats.js import api

        try:
            await self.s.ready()
            js = await self.s.conn.jetstream()
            self.sub = await js.subscribe(
                self.s.log_prefix + ">",
                stream=self.s.log_stream,
                cb=self._on,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.NEW,
            )
        except Exception as exc:  # the claims read the log from the server instead
            log.info("NATS worker: no log tail (%r); reading logs from the server", exc)

    async def _on(self, msg: Any) -> None:
        try:
            h = msg.headers or {}
            if h.get("Oh-Trim"):
                self.logs.pop(msg.subject, None)
                return
            # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
            seq = int(msg.reply.split(".")[-4])
            self.put(msg.subject, int(h.get("Oh-Seq", "0")), seq, msg.data)
        except Exception as exc:  # a callback must not raise into the client
            log.debug("NATS worker: log tail: %r", exc)

    def put(self, subject: str, number: int, seq: int, data: bytes) -> None:
        recs = self.logs.get(subject)
        if recs is None:
            recs = self.logs[subject] = {}
        else:
            self.logs.move_to_end(subject)
        old = recs.get(number)
        if old is not None:
            if old[0] > seq:
                return  # a newer message of that number is kept already
            self.bytes -= len(old[1])
        recs[number] = (seq, data)
        self.bytes += len(data)
        if len(recs) > _KEEP:
            low = min(recs)
            self.bytes -= len(recs.pop(low)[1])
        while self.bytes > _KEEP_BYTES and self.logs:
            _, gone = self.logs.popitem(last=False)
            self.bytes -= sum(len(d) for _, d in gone.values())

    def records(self, subject: str, after: int, top: int, top_seq: int) -> Records | None:
        """Records after..top of a log whose last message is ``top`` at ``top_seq``, if
        every one is kept (and the kept ``top`` is that message), else None."""
        recs = self.logs.get(subject)
        if recs is None:
            return None
        last = recs.get(top)
        if last is None or last[0] != top_seq:
            return None
        out = []
        for n in range(after + 1, top + 1):
            got = recs.get(n)
            if got is None or got[0] > top_seq:
                return None
            out.append((n, got[1]))
        return out

    async def stop(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class NatsBackend(_Backend):
    """Claims, commits and settles on NATS with few round trips (see the module docstring)."""

    keeps_records = True
    fast_settle = True

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        from openheim.stores import nats as nats_store
        from openheim.workflow.queues.nats import NatsQueue

        assert isinstance(batch.store, nats_store.NatsStore)
        assert isinstance(batch.queue, NatsQueue)
        self._m = nats_store
        self.s = batch.store._s
        q = batch.queue
        conn = self.s.conn
        if (
            batch._own_queue
            and batch._own_store
            and q._conn.client is None
            and q._conn.url.split("?")[0] == conn.url
        ):
            # One connection for the queue and the store: the requests of a group go
            # out in one write, and their answers come back in one read loop.
            q._conn = conn
        self.tail = _LogTail(self.s)
        self._starting: asyncio.Future[None] | None = None

    async def read_log(self, store: Any, name: str, after: int) -> Records:
        """The records of log ``name`` after ``after``: the log's last message from the
        server, the ones before it from the tail when it has them all."""
        m = self._m
        s = self.s
        subject = store._log_subject(name)
        last = await s.last(s.log_stream, subject)
        if last is None:
            return []
        top = int(last.headers.get(m.H_SEQ, "0"))
        if top <= after or last.headers.get(m.H_TRIM):
            return []
        s.note_position(subject, top, last.seq)
        if top == after + 1:
            return [(top, last.data)]
        tail = self.tail
        got = tail.records(subject, after, top, last.seq)
        if got is not None:
            tail.hits += 1
            return got
        tail.misses += 1
        if tail.misses == _TAIL_AFTER and self._starting is None:
            # Views fall behind: other workers run these runs' steps too. Keep the
            # records from now on (a worker alone never pays for the tail).
            self._starting = asyncio.ensure_future(tail.start())
        start = 0 if after == 0 else s.position(subject, after)
        if start is not None and top - after <= _STEP_READ:
            # From the last record this process saw to the log's last message, one by one.
            out: Records = []
            seq = start + 1
            while seq < last.seq:
                msg = await s.next_on(s.log_stream, subject, seq)
                if msg is None or msg.seq >= last.seq:
                    break
                n = int(msg.headers.get(m.H_SEQ, "0"))
                if not msg.headers.get(m.H_TRIM):
                    s.note_position(subject, n, msg.seq)
                    if n > after:
                        out.append((n, msg.data))
                seq = msg.seq + 1
            out.append((top, last.data))
            if [n for n, _ in out] == list(range(after + 1, top + 1)):
                return out
        records: Records = await store.read_log(name, after)
        return records

    async def aclose(self) -> None:
        if self._starting is not None:
            with contextlib.suppress(BaseException):
                await self._starting
        await self.tail.stop()

    def _fence(self, ns: str, run_id: str, task: str) -> tuple[Any, str]:
        store: Any = self.batch.scoped(ns)
        return store, store._key_subject(f"{CLAIM}{run_id}/{task}")

    # -- claims --------------------------------------------------------------------------

    async def claim_many(self, items: list[_Claim]) -> list[Any]:
        return await _each(self._claim_one, items)

    async def claim(self, c: _Claim) -> tuple[int, bytes | None, Records]:
        return await self._claim_one(c)

    async def _claim_one(self, c: _Claim) -> tuple[int, bytes | None, Records]:
        store, subject = self._fence(c.ns, c.run_id, c.task)
        log = "wf/" + c.run_id
        after = max(0, c.after)
        if c.first:
            # Nothing to write: the commit expects the fencing key empty (token 1).
            return 1, None, await self.read_log(store, log, after)
        reading = asyncio.ensure_future(self.read_log(store, log, after))
        try:
            token, committed = await self._take(subject, c.who)
            records: Records = await reading
        except BaseException:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            raise
        if not c.read and committed is None:
            return token, committed, []
        return token, committed, records

    async def _take(self, subject: str, who: str) -> tuple[int, bytes | None]:
        """Write this delivery's claim into the fencing key: (token, None), or (0, the
        committed record), or (-1, None) if another delivery claimed it meanwhile."""
        m = self._m
        s = self.s
        last = s.cache.get(subject)
        if last is not None and last.data[:1] not in (b"W", b"C"):
            last = None  # not a claim or commit we know the content of: ask the server
        for attempt in (1, 2, 3):
            now = time.time()
            live = last is not None and last.live(now)
            if live and last is not None and last.data[:1] == b"C":
                if last.data == b"C":  # what this process wrote: read the record back
                    last = await s.last(s.kv_stream, subject)
                    continue
                return 0, last.data[1:]
            headers = {
                m.EXPECT_LAST: str(last.seq if last is not None else 0),
                m.H_VER: str((last.version() if live and last is not None else 0) + 1),
                m.H_EXP: repr(now + CLAIM_TTL),
            }
            seq = await s.publish(subject, b"W" + who.encode(), headers)
            if seq is not None:
                s.remember(subject, m._Last(seq, headers, b"W"))
                return seq + 1, None
            if attempt > 1:
                return -1, None  # claimed by another delivery between our read and write
            last = await s.last(s.kv_stream, subject)
        return -1, None

    # -- commits -------------------------------------------------------------------------

    async def commit_many(self, items: list[_Commit]) -> list[Any]:
        results = await _each(self._commit_one, items)
        settle = _Finish(tasks=[], acks=[], ends=[])
        chained: list[int] = []
        for i, (c, r) in enumerate(zip(items, results, strict=True)):
            if (
                c.settle is not None
                and isinstance(r, tuple)
                and r[0]
                and r[2] == [(c.after + 1, c.data)]
            ):
                settle.tasks += c.settle.tasks
                settle.acks += c.settle.acks
                settle.ends += c.settle.ends
                chained.append(i)
        if chained:
            try:
                await self.finish(settle)
            except Exception:
                return results  # not settled: each worker task settles on its own
            for i in chained:
                ok, _, records = results[i]
                results[i] = (ok, True, records)
        return results

    async def commit(self, c: _Commit) -> tuple[bool, bool, Records]:
        return await self._commit_one(c)

    async def _commit_one(self, c: _Commit) -> tuple[bool, bool, Records]:
        m = self._m
        s = self.s
        store, subject = self._fence(c.ns, c.run_id, c.task)
        expect = c.token - 1
        last = s.cache.get(subject)
        headers = {m.EXPECT_LAST: str(expect), m.H_EXP: repr(time.time() + CLAIM_TTL)}
        if expect == 0:
            headers[m.H_VER] = "1"
        elif last is not None and last.seq == expect:
            headers[m.H_VER] = str(last.version() + 1)
        seq = await s.publish(subject, b"C" + c.data, headers)
        if seq is None:
            return False, False, []  # the claim was taken over
        s.remember(subject, m._Last(seq, headers, b"C"))
        log = "wf/" + c.run_id
        n = await store.append(log, c.data)
        if n == c.after + 1:
            return True, False, [(n, c.data)]
        return True, False, await self.read_log(store, log, c.after)


async def _each(fn: Any, items: list[Any]) -> list[Any]:
    """``fn`` of every item at once; an item's exception is its result (the caller's
    batcher raises it to that item's waiter alone)."""
    if len(items) == 1:
        try:
            return [await fn(items[0])]
        except Exception as exc:
            return [exc]
    return list(await asyncio.gather(*(fn(i) for i in items), return_exceptions=True))
