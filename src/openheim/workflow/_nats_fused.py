"""The worker's backend when its queue is NATS JetStream and its store the NATS KV store.

The generic backend (:class:`~openheim.workflow._backends._Backend`) makes
each call through the Store protocol: a claim is a read of the fencing key, a
compare-and-set write and a read of the run's log, one after the other. Here
the run's log in :class:`~openheim.stores.nats.NatsStore` is written directly,
with fewer round trips, every delivery of a group is in flight at once, and the
log itself is the fence (a fused worker does not fence with the generic
backend's keys: every worker on one NATS queue and store runs this backend):

- *fencing in the run's log*: a step's commit is one append to its run's log
  with ``Nats-Expected-Last-Subject-Sequence`` = the log's last message as this
  process knows it, so it lands only if the worker had seen everything before
  it. A claim that must fence out other deliveries of its task writes a *mark*
  into the same log (see ``openheim.stores.nats``: a message that is no record;
  every later message names the newest mark, and each mark the one before, so
  the marks are a chain). Its token is the mark's sequence + 1, and a commit
  lands only if the log holds no mark of its task at or above its token: a
  stale delivery's append either expects a position before the newer mark (and
  is refused by the server) or finds the mark when it looks again. One write per
  step, where a fencing key would take a second (and a KV subject per task).
- *claim*: a task put once (``Oh-Once``: by the chained settle of its
  predecessor's commit, which happens once per committed record) writes
  nothing on its first delivery: its token is 1, and any mark of the task
  refuses its commit. Any other delivery (a redelivery, a task put by a submit,
  an approval, a fan-out or a retry, which may be put twice) reads the log and
  marks it right after the last message read, so a commit of its task made
  before the mark is among the records the worker folds (its view shows the
  task done), and one made after it can only be a later delivery's, with a
  newer mark. The log is read only if the worker's view may be behind
  (``_Claim.read``: the view is not at the task's one-node superstep).
- *commit*: the append is sent at once when the marks up to the log's last
  message are known to this process and none fences the claim; else (or if
  the server refuses it) the log's last message is read, the marks this
  process has not seen are read back along their chain, and it is tried again.
- *settle*: for the commits that chain (see ``Worker._chain_settle``), the
  successors of the whole group are published together (pub-acks awaited
  together, ``Nats-Msg-Id`` = the task's de-duplication id), the run ends of
  the group are one record of the ends log, then the deliveries are acked
  without waiting for the server (a lost ack only means a redelivery that
  finds the task committed).
- *carried records*: each successor a chained settle puts carries the last
  few records of its run's log (``Oh-Prev``: the last one's number and stream
  sequence, and the newest mark before it; ``Oh-Rec``: up to ``_TAIL``
  records, ``_CARRY`` bytes; ``Oh-Marked``: the log's marks, if few), the ones
  this process appended, read or was brought. A worker whose view lacks only
  those (or that has no view of the run, and is brought all of its log: a
  short run's) folds them in and knows the log's last message (its next append
  expects it) without a read: with several workers, a run's steps alternate
  between them, and a view is mostly a record or two behind. They are copies
  of records in the log, so nothing is decided on them that the commit's
  position check would not catch.
- *reading the run's log*: a claim reads the log's last message (one direct
  get); a view that is more than one record behind (the run's last steps ran
  on another worker) reads the records it lacks back from there: each record
  carries the stream sequence of the one before it (the expected last
  sequence it was appended with), so each is one direct get by sequence, not
  a scan of the stream for the next message on the subject.

The requests go out on the lean connection (:mod:`openheim.stores._nats_wire`)
while it is up: a group's requests are sent at once (no task per item) and
their futures awaited in turn. A request that fails there (the connection
lost, no answer in ``_TIMEOUT`` seconds) is made again through nats-py, the
store's way, with the same ``Nats-Msg-Id``: a write the server had stored is
then acked as a duplicate, so nothing is written twice. Successors put by a
settle carry their de-duplication id the same way, and go through the queue's
own ``put`` if their answer is missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import os
import time
from typing import Any

import msgspec

from openheim.stores._nats_wire import Reply, encode_headers, parse_headers
from openheim.workflow._backends import Records, _Backend, _Claim, _Commit, _Finish
from openheim.workflow._batch import ENDS, Batch, encode_ends
from openheim.workflow.queues import Delivery
from openheim.workflow.queues.nats import Pulled

__all__ = ["NatsBackend"]

_STEP_READ = 64  # records read one by one when a view is behind (else the store reads)
_TIMEOUT = 5.0  # seconds before a request without an answer is made again the store's way
_enc_task = msgspec.json.Encoder()
H_PREV = "Oh-Prev"  # a successor's predecessor record: "<its number> <its stream sequence>"
H_REC = "Oh-Rec"  # ... it and the records before it (base64 of a msgpack list)
_CARRY = 2048  # bytes of records that may ride along with a successor
_TAIL = 32  # at most this many of a run's last records are kept to ride along
_TAILS = 10_000  # logs whose last records are kept (each at most _CARRY bytes)
H_ONCE = "Oh-Once"  # a task put once: by the chained settle of its predecessor's commit
_MARK_TRIES = 8  # a claim's marks that find the log moved on before it is given up
_NO_MARKS: dict[str, int] = {}  # (never written to)
H_MARKED = "Oh-Marked"  # ... and every mark of its log up to there (task -> sequence)
_MARKS = 16  # at most this many marks ride along
_Carry = tuple[int, int, Records, "dict[str, int] | None"]
_enc_marks = msgspec.msgpack.Encoder()
_dec_marks = msgspec.msgpack.Decoder(dict[str, int])
_enc_recs = msgspec.msgpack.Encoder()
_dec_recs = msgspec.msgpack.Decoder(list[bytes])


class _Replies:
    """Requests answered on one wildcard inbox, with no timer per request.

    On the lean connection (:mod:`openheim.stores._nats_wire`) while it is up
    (:meth:`send` puts a request out at once and gives its future); else on
    nats-py, where one watchdog fails the requests left unanswered for
    ``_TIMEOUT`` seconds. Either way a failed request is made again the
    store's way by the caller (with retries), so a group of requests costs a
    publish and a future each.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sub: Any = None
        self.prefix = ""
        self.waiting: dict[str, tuple[asyncio.Future[Any], float]] = {}
        self.n = 0
        self.watch: asyncio.Future[None] | None = None
        self.lock = asyncio.Lock()

    def send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None
    ) -> asyncio.Future[Reply] | None:
        """The request sent on the lean connection (its answer's future), or None if
        that connection is not up (or cannot take this message)."""
        wire = self.conn.wire_now()
        if wire is None:
            return None
        try:
            fut: asyncio.Future[Reply] = wire.request(
                subject, payload, encode_headers(headers) if headers else None
            )
            return fut
        except (ConnectionError, ValueError):
            return None

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, sent: Any = None
    ) -> tuple[dict[str, str], bytes]:
        """(headers, payload) of the answer; ``sent`` is the future :meth:`send` gave."""
        if sent is None:
            sent = self.send(subject, payload, headers)
            if sent is None and await self.conn.wire() is not None:
                sent = self.send(subject, payload, headers)
        if sent is not None:
            hdr, data = await sent
            return parse_headers(hdr), data
        nc = await self.conn.connect()
        if self.sub is None:
            async with self.lock:
                if self.sub is None:
                    prefix = nc.new_inbox() + "."
                    self.sub = await nc.subscribe(prefix + "*", cb=self._on)
                    self.prefix = prefix
        self.n += 1
        token = str(self.n)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[token] = (fut, time.monotonic())
        if self.watch is None or self.watch.done():
            self.watch = asyncio.ensure_future(self._watchdog())
        try:
            await nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            msg = await fut
        finally:
            self.waiting.pop(token, None)
        return msg.headers or {}, msg.data or b""

    async def _on(self, msg: Any) -> None:
        got = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if got is not None and not got[0].done():
            got[0].set_result(msg)

    async def _watchdog(self) -> None:
        while self.waiting:
            await asyncio.sleep(1.0)
            old = time.monotonic() - _TIMEOUT
            for fut, at in list(self.waiting.values()):
                if at < old and not fut.done():
                    fut.set_exception(TimeoutError("no answer from NATS"))

    async def aclose(self) -> None:
        watch, self.watch = self.watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class NatsBackend(_Backend):
    """Claims, commits and settles on NATS with few round trips (see the module docstring)."""

    fast_settle = True

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch)
        from openheim.stores import nats as nats_store
        from openheim.workflow.queues.nats import NatsQueue

        assert isinstance(batch.store, nats_store.NatsStore)
        assert isinstance(batch.queue, NatsQueue)
        self._m = nats_store
        self.s = batch.store._s
        q = self.q = batch.queue
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
        self.replies = _Replies(conn)
        self._ids = os.urandom(8).hex() + "-"  # Nats-Msg-Id: this backend's prefix + a count
        self._count = 0
        # log subject -> its last few records this process saw (consecutive numbers)
        self._tail: collections.OrderedDict[str, Records] = collections.OrderedDict()
        # log subject -> (the newest mark this process knows of, task -> its newest mark)
        self._marks: collections.OrderedDict[str, tuple[int, dict[str, int]]] = (
            collections.OrderedDict()
        )

    def _saw(self, subject: str, records: Records) -> None:
        """Note records of a log (ascending, consecutive, what the server holds now)
        among its last ones: they extend the ones kept, or replace them."""
        if not records:
            return
        tail = self._tail.get(subject)
        if tail:
            first = records[0][0]
            if tail[-1][0] == first - 1:  # (a chain's next record: the common case)
                records = tail + records
            else:
                known = [r for r in tail if r[0] >= first]
                if known and known == records[: len(known)]:
                    records = [r for r in tail if r[0] < first] + records
        # Keep the longest run of last records within _CARRY bytes, at most _TAIL of them.
        if len(records) > _TAIL:
            records = records[-_TAIL:]
        size = sum([len(r[1]) for r in records])
        drop = 0
        while size > _CARRY:
            size -= len(records[drop][1])
            drop += 1
        if drop == len(records):
            self._tail.pop(subject, None)
            return
        self._tail[subject] = records[drop:]  # (a copy: never the caller's list)
        self._tail.move_to_end(subject)
        if len(self._tail) > _TAILS:
            self._tail.popitem(last=False)

    async def aclose(self) -> None:
        await self.replies.aclose()

    # -- requests ------------------------------------------------------------------------

    def _send_last(self, stream: str, subject: str) -> Any:
        """A direct get of ``subject``'s last message, sent now if it can be (see _last)."""
        s = self.s
        if not s._ready or not s.direct.get(stream):
            return None
        return self.replies.send(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", None)

    async def _last(self, stream: str, subject: str, sent: Any = None) -> Any:
        """The last message on ``subject`` (a direct get), as ``_Shared.last``."""
        s = self.s
        await s.ready()
        if s.direct.get(stream):
            try:
                hdrs, data = await self.replies.request(
                    f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", None, sent
                )
            except Exception:
                hdrs = None
            if hdrs is not None:
                status = hdrs.get("Status")
                if status == "404":
                    s.remember(subject, None)
                    return None
                if not status:
                    got = self._m._Last(int(hdrs["Nats-Sequence"]), hdrs, data)
                    s.remember(subject, got)
                    return got
        return await s.last(stream, subject)  # the store's way: retries, streams made again

    async def _next_on(self, stream: str, subject: str, seq: int) -> Any:
        """The first message on ``subject`` at or after stream sequence ``seq`` (a direct
        get), as ``_Shared.next_on``."""
        s = self.s
        if s.direct.get(stream):
            req = b'{"seq":%d,"next_by_subj":"%s"}' % (seq, subject.encode())
            try:
                hdrs, data = await self.replies.request(f"$JS.API.DIRECT.GET.{stream}", req, None)
            except Exception:
                hdrs = None
            if hdrs is not None:
                status = hdrs.get("Status")
                if status == "404":
                    return None
                if not status:
                    return self._m._Last(int(hdrs["Nats-Sequence"]), hdrs, data)
        return await s.next_on(stream, subject, seq)

    def _send_pub(self, subject: str, payload: bytes, headers: dict[str, str]) -> Any:
        """Give ``headers`` this write's Nats-Msg-Id and send it now if it can be."""
        self._count += 1
        headers[self._m.MSG_ID] = self._ids + str(self._count)
        if not self.s._ready:
            return None
        return self.replies.send(subject, payload, headers)

    async def _publish(
        self, subject: str, payload: bytes, headers: dict[str, str], sent: Any = None
    ) -> int | None:
        """Publish with ``headers``: the stream sequence, or None if the expected last
        sequence was wrong (as ``_Shared.publish``, one Nats-Msg-Id for every try);
        ``sent``: the future of _send_pub, which sent it already."""
        m = self._m
        s = self.s
        if m.MSG_ID not in headers:
            self._count += 1
            headers[m.MSG_ID] = self._ids + str(self._count)
        await s.ready()
        try:
            hdrs, data = await self.replies.request(subject, payload, headers, sent)
            if not hdrs.get("Status"):
                ack = m._dec_ack.decode(data)
                if ack.error is None:
                    return int(ack.seq)
                if ack.error.get("err_code") in m.WRONG_LAST:
                    return None
        except Exception:
            pass
        # No answer, no stream, an error: again the store's way, with the same id (a
        # write that was stored after all is then a duplicate the server acks as such).
        return await s.publish(subject, payload, headers, timeout=_TIMEOUT)

    def _send_append(self, subject: str, record: bytes) -> Any:
        """An append to the log ``subject`` after the last message this process knows
        of, sent now: (its headers, the future), or None."""
        s = self.s
        last = s.cache.get(subject)
        if last is None or s.lock(subject).locked():
            return None
        headers = self._m.after_headers(last)
        sent = self._send_pub(subject, record, headers)
        return (headers, sent) if sent is not None else None

    def _appended(self, subject: str, headers: dict[str, str], seq: int) -> int:
        """Note an append that landed at stream sequence ``seq``: its record number."""
        s = self.s
        number = int(headers[self._m.H_SEQ])
        s.remember(subject, self._m._Last(seq, headers, b""))
        s.note_position(subject, number, seq)
        return number

    async def _append(
        self, subject: str, record: bytes, sent: Any = None, fence: _Commit | None = None
    ) -> int:
        """Append to the log ``subject``, as ``NatsStore.append`` (the cached last
        message, else a read): the record's number; ``sent``: what _send_append sent
        already. With ``fence`` (a commit), only while no mark of its task at or above
        its token is in the log (else 0: taken over by a later delivery)."""
        s = self.s
        if sent is not None:
            headers, fut = sent
            seq = await self._publish(subject, record, headers, fut)
            if seq is not None:
                return self._appended(subject, headers, seq)
            s.cache.pop(subject, None)  # someone else appended: read the log's last
        async with s.lock(subject):
            last = s.cache.get(subject)
            while True:
                if last is None:
                    last = await self._last(s.log_stream, subject)
                if fence is not None:
                    marks = await self._marks_to(subject, self._m.newest_mark(last))
                    if marks is None or marks.get(fence.task, 0) >= fence.token:
                        return 0
                headers = self._m.after_headers(last)
                seq = await self._publish(subject, record, headers)
                if seq is None:
                    last = None
                    continue
                return self._appended(subject, headers, seq)

    async def read_log(self, store: Any, name: str, after: int, sent: Any = None) -> Records:
        """The records of log ``name`` after ``after``: the log's last message, and the
        ones before it read back from there (see the module docstring); ``sent``: the
        direct get of the last message, sent already."""
        records = await self._read_log(store, name, after, sent)
        self._saw(store._log_subject(name), records)
        return records

    async def _read_log(self, store: Any, name: str, after: int, sent: Any) -> Records:
        m = self._m
        s = self.s
        subject = store._log_subject(name)
        last = await self._last(s.log_stream, subject, sent)
        if last is None:
            return []
        top = int(last.headers.get(m.H_SEQ, "0"))
        if top <= after or last.headers.get(m.H_TRIM):
            return []
        if top - after <= _STEP_READ:
            # Back from the last message, one direct get by sequence per message (the
            # marks among them are stepped over).
            out: Records = []
            msg = last
            n = top
            while True:
                h = msg.headers
                if h.get(m.H_TRIM) or (not h.get(m.H_MARK) and int(h.get(m.H_SEQ, "0")) != n):
                    break
                if not h.get(m.H_MARK):
                    s.note_position(subject, n, msg.seq)
                    out.append((n, msg.data))
                    n -= 1
                    if n == after:
                        out.reverse()
                        return out
                prev = int(h.get(m.EXPECT_LAST, "0"))
                if prev <= 0 or len(out) > _STEP_READ:
                    break
                # (next_on from `prev` is the message at `prev`: it is on this subject)
                got = await self._next_on(s.log_stream, subject, prev)
                if got is None or got.seq != prev:
                    break
                msg = got
        records: Records = await store.read_log(name, after)
        return records

    # -- marks ---------------------------------------------------------------------------

    async def _marks_to(self, subject: str, newest: int) -> dict[str, int] | None:
        """Each task marked in log ``subject`` at or before stream sequence ``newest``
        (a newest mark) -> the sequence of its newest mark; the marks this process has
        not seen yet are read back along their chain (one direct get each). None if a
        mark of the chain is gone (the log was trimmed or deleted)."""
        tasks = self._known_marks(subject, newest)
        if tasks is not None:
            return tasks
        known = self._marks.get(subject)
        have, tasks = known if known is not None else (0, _NO_MARKS)
        found: dict[str, int] = {}
        seq = newest
        while seq > have:
            msg = await self._next_on(self.s.log_stream, subject, seq)
            if msg is None or msg.seq != seq or not msg.headers.get(self._m.H_MARK):
                return None
            found.setdefault(msg.data.decode("utf-8", "replace"), seq)  # newest first
            seq = int(msg.headers.get(self._m.H_MARKS, "0"))
        tasks = {**tasks, **{t: max(q, tasks.get(t, 0)) for t, q in found.items()}}
        self._note_marks(subject, newest, tasks)
        return tasks

    def _note_marks(self, subject: str, newest: int, tasks: dict[str, int]) -> None:
        self._marks[subject] = (newest, tasks)
        self._marks.move_to_end(subject)
        if len(self._marks) > _TAILS:
            self._marks.popitem(last=False)

    def _known_marks(self, subject: str, newest: int) -> dict[str, int] | None:
        """The marks up to the newest mark ``newest`` if this process knows them all
        (without a read)."""
        if newest <= 0:
            return _NO_MARKS
        known = self._marks.get(subject)
        return known[1] if known is not None and known[0] >= newest else None

    # -- claims --------------------------------------------------------------------------

    def first(self, d: Delivery) -> bool:
        """A task put once, by the chained settle of its predecessor's commit, on its
        first delivery (see the module docstring): its claim writes nothing."""
        msg = d.handle
        return d.deliveries == 1 and isinstance(msg, Pulled) and msg.has(H_ONCE)

    def claim_at_once(self, c: _Claim) -> tuple[int, bytes | None, Records] | None:
        # (token 1: the commit expects no mark of the task)
        return (1, None, []) if c.first and not c.read else None

    async def claim_many(self, items: list[_Claim]) -> list[Any]:
        """Every claim of the group at once: a first delivery writes nothing (and reads
        nothing if its view is current), the others mark the run's log."""
        out: list[Any] = [None] * len(items)
        reads = []
        later = []
        for i, c in enumerate(items):
            if not c.first:
                later.append(i)
            elif not c.read:
                out[i] = self.claim_at_once(c)
            else:
                store: Any = self.batch.scoped(c.ns)
                subject = store._log_subject("wf/" + c.run_id)
                reads.append((i, c, store, self._send_last(self.s.log_stream, subject)))
        taking = asyncio.ensure_future(_each(self._claim_one, [items[i] for i in later]))
        try:
            for i, c, store, sent in reads:
                try:
                    records = await self.read_log(store, "wf/" + c.run_id, max(0, c.after), sent)
                    out[i] = (1, None, records)
                except Exception as exc:
                    out[i] = exc
        finally:
            taken = await taking
        for i, r in zip(later, taken, strict=True):
            out[i] = r
        return out

    async def claim(self, c: _Claim) -> tuple[int, bytes | None, Records]:
        return await self._claim_one(c)

    async def _claim_one(self, c: _Claim) -> tuple[int, bytes | None, Records]:
        """A first delivery writes nothing (token 1: its commit expects no mark of the
        task in the run's log). Any other reads the log (unless the worker's view is
        current) and marks it right after the last message read: its token is the
        mark's sequence + 1. The records read come back; a committed task is among
        them (the view shows it done), as this claim read up to its mark."""
        store: Any = self.batch.scoped(c.ns)
        log = "wf/" + c.run_id
        after = max(0, c.after)
        if c.first:
            return 1, None, await self.read_log(store, log, after) if c.read else []
        m = self._m
        s = self.s
        subject = store._log_subject(log)
        records: Records = []
        for attempt in range(_MARK_TRIES):
            last = s.cache.get(subject)
            if c.read or attempt or last is None or last.headers.get(m.KV_OP):
                got = await self.read_log(store, log, after)
                if got:
                    records += got
                    after = got[-1][0]
                last = s.cache.get(subject)
            if last is None:  # (dropped from the cache meanwhile)
                last = await self._last(s.log_stream, subject)
            headers = m.after_headers(last)
            # A mark is no record: it keeps the number of the last one.
            headers[m.H_SEQ] = last.headers.get(m.H_SEQ, "0") if last is not None else "0"
            headers[m.H_MARK] = "1"
            seq = await self._publish(subject, c.task.encode(), headers)
            if seq is not None:
                s.remember(subject, m._Last(seq, headers, b""))
                known = self._marks.get(subject)
                prev = m.newest_mark(last)
                if prev == 0 or (known is not None and known[0] >= prev):
                    tasks = dict(known[1]) if known is not None else {}
                    tasks[c.task] = seq
                    self._note_marks(subject, seq, tasks)
                return seq + 1, None, records
            s.cache.pop(subject, None)  # appended to meanwhile: read what came
        return -1, None, records  # the log moved under every try: redelivered later

    # -- commits -------------------------------------------------------------------------

    async def commit_many(self, items: list[_Commit]) -> list[Any]:
        results = await self._commits(items)
        settle = _Finish(tasks=[], acks=[], ends=[])
        carry: dict[tuple[str, str], _Carry] = {}
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
                if c.settle.tasks:
                    carry[(c.ns, c.run_id)] = self._carry(c)
        if chained:
            try:
                await self.finish(settle, carry)
            except Exception:
                return results  # not settled: each worker task settles on its own
            for i in chained:
                ok, _, records = results[i]
                results[i] = (ok, True, records)
        return results

    def _carry(self, c: _Commit) -> _Carry:
        """What a chained commit's successors carry: the stream sequence of its record
        (the log's last message), the newest mark before it, the log's last records
        (within _CARRY bytes; none if this process does not know them) and its marks
        (if this process knows them all and they are few)."""
        store: Any = self.batch.scoped(c.ns)
        log = store._log_subject("wf/" + c.run_id)
        last = self.s.cache.get(log)
        if last is None or last.headers.get(self._m.H_SEQ) != str(c.after + 1):
            return 0, 0, [], None
        tail = self._tail.get(log)
        records = tail if tail and tail[-1][0] == c.after + 1 else []
        mark = self._m.newest_mark(last)
        marks = self._known_marks(log, mark) if mark else None
        return last.seq, mark, records, marks if marks and len(marks) <= _MARKS else None

    async def commit(self, c: _Commit) -> tuple[bool, bool, Records]:
        return (await self._commits([c]))[0]  # type: ignore[no-any-return]

    def _send_commit(self, subject: str, c: _Commit) -> Any:
        """The commit's append sent now, if the marks before the log's last message are
        known and none of them fences this claim (else the slow way decides)."""
        marks = self._known_marks(subject, self._m.newest_mark(self.s.cache.get(subject)))
        if marks is None or marks.get(c.task, 0) >= c.token:
            return None
        return self._send_append(subject, c.data)

    async def _commits(self, items: list[_Commit]) -> list[Any]:
        """The commits of a group: each an append to its run's log, all sent at once
        (a run's second commit in the group after its first); an item's exception is
        its result."""
        out: list[Any] = [None] * len(items)
        first = []
        later = []
        seen: set[str] = set()
        for i, c in enumerate(items):
            store: Any = self.batch.scoped(c.ns)
            subject = store._log_subject("wf/" + c.run_id)
            if subject in seen:  # a sibling's record goes first: this one after it
                later.append((i, c, store, subject, None))
                continue
            seen.add(subject)
            first.append((i, c, store, subject, self._send_commit(subject, c)))
        for i, c, store, subject, sent in first + later:
            try:
                out[i] = await self._commit_one(store, subject, c, sent)
            except Exception as exc:
                out[i] = exc
        return out

    async def _commit_one(
        self, store: Any, subject: str, c: _Commit, sent: Any
    ) -> tuple[bool, bool, Records]:
        """Append the commit's record right after the log's last message, if no mark of
        its task newer than its claim is in the log (see the module docstring)."""
        number = await self._append(subject, c.data, sent, fence=c)
        if not number:
            return False, False, []  # taken over by a later delivery
        self._saw(subject, [(number, c.data)])
        if number == c.after + 1:
            return True, False, [(number, c.data)]
        return True, False, await self.read_log(store, "wf/" + c.run_id, c.after)

    # -- settles -------------------------------------------------------------------------

    def carried(self, d: Delivery) -> Records | None:
        """The records a task put by a chained settle carries (see finish): its
        predecessor's and a few before it; the log's last message as this process
        knows it moves up to the last of them."""
        msg = d.handle
        prev = msg.header(H_PREV) if isinstance(msg, Pulled) else None
        if prev is None or not isinstance(msg, Pulled):
            return None
        try:
            number, seq, *more = (int(x) for x in prev.split(" "))
            mark = more[0] if more else 0
            datas = _dec_recs.decode(base64.b64decode(msg.header(H_REC) or "", validate=True))
            marked = msg.header(H_MARKED)
            marks = _dec_marks.decode(base64.b64decode(marked, validate=True)) if marked else None
        except (ValueError, binascii.Error, msgspec.DecodeError):
            return None
        if not datas:
            return None
        records = [(number - len(datas) + 1 + i, data) for i, data in enumerate(datas)]
        s = self.s
        store: Any = self.batch.scoped(d.task.namespace)
        subject = store._log_subject("wf/" + d.task.run_id)
        last = s.cache.get(subject)
        if last is None or last.seq < seq:
            headers = {self._m.H_SEQ: str(number)}
            if mark:
                headers[self._m.H_MARKS] = str(mark)
            s.remember(subject, self._m._Last(seq, headers, b""))
            s.note_position(subject, number, seq)
            self._saw(subject, records)
        if mark and marks is not None:
            known = self._marks.get(subject)
            if known is None or known[0] < mark:
                self._note_marks(subject, mark, marks)
        return records

    async def finish(self, f: _Finish, carry: dict[tuple[str, str], _Carry] | None = None) -> None:
        """Put the next tasks and record the run ends (on the lean connection if it is
        up: each task with its de-duplication id, so one put again the queue's way is
        dropped if it had landed), then ack the deliveries. ``carry`` (a chained
        settle's): per run, where its log was when its successors were put (the last
        message's stream sequence, the newest mark before it) and its last records:
        they go with them, so a worker whose view lacks only those records need not
        read the log, and the successors are marked as put once (``Oh-Once``)."""
        q = self.q
        sent = []
        # The next tasks go on this worker's own subject: it takes them before others
        # (its views of their runs are current), and the others take them when they are idle
        # or it went silent (see NatsQueue.take).
        subject = q.own_subject(self.consumer) if self.consumer else q.subject
        if f.tasks and q._ready:
            for t in f.tasks:
                headers = {self._m.MSG_ID: t.dedup_id()}
                got = carry.get((t.namespace, t.run_id)) if carry else None
                if got is not None:
                    headers[H_ONCE] = "1"
                    seq, mark, records, marks = got
                    if records:
                        number = records[-1][0]
                        headers[H_PREV] = f"{number} {seq} {mark}" if mark else f"{number} {seq}"
                        recs = _enc_recs.encode([data for _, data in records])
                        headers[H_REC] = base64.b64encode(recs).decode()
                        if marks:
                            marked = _enc_marks.encode(marks)
                            headers[H_MARKED] = base64.b64encode(marked).decode()
                sent.append((t, self.replies.send(subject, _enc_task.encode(t), headers)))
        ending = None
        if f.ends:
            store: Any = self.batch.store
            log = store._log_subject(ENDS + q.name)
            record = encode_ends(f.ends)
            ending = asyncio.ensure_future(
                self._append(log, record, self._send_append(log, record))
            )
        try:
            again = [t for t, fut in sent if not await self._landed(fut)] if sent else f.tasks
            if self.consumer and len(sent) > len(again):
                q.note_own(self.consumer, len(sent) - len(again))
            if again:
                await q.put(again)
        finally:
            if ending is not None:
                await ending
        if f.acks:
            await q.ack_many([d.id for d in f.acks])

    async def _landed(self, sent: Any) -> bool:
        """Whether a task put on the lean connection was stored (or was a duplicate)."""
        if sent is None:
            return False
        try:
            hdr, data = await sent
            if hdr is not None and parse_headers(hdr).get("Status"):
                return False
            ack = self._m._dec_ack.decode(data)
        except Exception:
            return False
        return ack.error is None and ack.seq > 0


async def _each(fn: Any, items: list[Any]) -> list[Any]:
    """``fn`` of every item at once; an item's exception is its result (the caller's
    batcher raises it to that item's waiter alone)."""
    if not items:
        return []
    if len(items) == 1:
        try:
            return [await fn(items[0])]
        except Exception as exc:
            return [exc]
    return list(await asyncio.gather(*(fn(i) for i in items), return_exceptions=True))
