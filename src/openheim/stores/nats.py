"""``nats://host:4222``: a :class:`~openheim.stores.Store` on NATS JetStream (nats-py).

Keys live in a JetStream key-value bucket (``?bucket=openheim`` by default:
the stream ``KV_openheim``, history 1), so ``nats kv ls openheim`` shows
them as ``<namespace>.<key>``; names are encoded into valid KV keys (letters,
digits, ``-``, ``_`` and ``/`` kept, every other byte written ``=XX``).

- *Versions.* KV revisions are stream-wide sequence numbers, so a key's own
  version (1 on create, +1 per write) travels in an ``Oh-Ver`` header. A write
  reads the key's last revision and publishes with
  ``Nats-Expected-Last-Subject-Sequence`` set to it: the server refuses the
  write if anyone wrote in between, which makes compare-and-set atomic (a
  refused blind write reads again and retries). Each write carries a
  ``Nats-Msg-Id``, so a write retried across a reconnect is applied once.
- *Delete* writes a ``KV-Operation: DEL`` marker the same way (so it is
  compare-and-set too), then purges the key's messages up to that marker.
- *TTL.* The server here (2.9) has no per-message TTL, so a key written with
  ``ttl`` carries its expiry time (``Oh-Exp``, Unix seconds of the writer's
  clock) and reads as absent afterwards. The writing process drops the message
  once it expired (ttls up to an hour, while it runs); ``list`` drops expired
  keys it meets, and ``sweep()`` every expired key of the bucket (for keys
  whose writer is gone, or with longer ttls).
- *Logs* live in a second stream, ``OHLOG_<bucket>``, one subject per log;
  each record carries its sequence number (``Oh-Seq``) and is appended with
  the same expected-last-sequence check, so numbers are gap-free and never
  reused. Trimming everything leaves a tombstone that keeps the last number.
  A log may also hold *marks* (the batch worker's claims write them): messages
  that are no records, which reads skip; every message after a mark names the
  newest one (``Oh-Marks``), so a writer expecting an older last message is
  refused and finds the marks along their chain.

A process caches the revision it last wrote or read per key, so a writer that
keeps writing its own keys needs one round trip per write; the server still
checks every write, a stale cache only costs a retry. Reads are direct gets
(the stream's ``allow_direct``): on a replicated stream (``?replicas=3``) a
follower may answer a read with a slightly older value; writes stay
compare-and-set on the leader. Streams lost under a running store (deleted,
or a server restarted without its data) are made again, empty.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import heapq
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from openheim.errors import ConfigError, StorageError
from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
)
from openheim.stores._nats import NatsConnection, decode_token, encode_token, retrying, scan

__all__ = ["NatsStore"]

log = logging.getLogger("openheim.stores.nats")

H_VER = "Oh-Ver"
H_EXP = "Oh-Exp"
H_SEQ = "Oh-Seq"
H_TRIM = "Oh-Trim"
# A log may hold *marks*: messages that are not records (their Oh-Seq is the last
# record's number) but move the log's last sequence, so that any write expecting an
# older last sequence is refused. Every message after a mark names the newest mark
# before it (Oh-Mark), and a mark names the one before it: the marks form a chain
# from any message back. The batch worker marks a task's claim this way (see
# openheim.workflow._nats_fused); read_log skips them.
H_MARK = "Oh-Mark"  # on a mark: "1"; its payload says what it marks
H_MARKS = "Oh-Marks"  # on any message after a mark: the newest mark's stream sequence
KV_OP = "KV-Operation"
EXPECT_LAST = "Nats-Expected-Last-Subject-Sequence"
MSG_ID = "Nats-Msg-Id"
WRONG_LAST = (10071, 10164)  # JSStreamWrongLastSequence
STREAM_NOT_FOUND = 10059
_CACHE_SIZE = 20_000
_MAX_EXPIRING = 200_000  # ttl keys a process remembers to drop (beyond: list/sweep do)
_REMEMBER_TTL = 3600.0  # longer ttls are left to list() and sweep()
_SWEEP_EVERY = 5.0  # seconds between looks at the expiry heap when nothing is due
_STEP_READ = 16  # read_log reads at most this many records one by one (else a consumer)
_POSITIONS = 64  # log positions kept per log
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class _Done:
    """An awaitable that is done already."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # (a generator that ends at once)


_DONE = _Done()


class _PubAck(msgspec.Struct):
    seq: int = 0
    error: dict[str, Any] | None = None


_dec_ack = msgspec.json.Decoder(_PubAck)


@dataclass(slots=True)
class _Last:
    """The last message on a subject: its stream sequence, headers and payload."""

    seq: int
    headers: dict[str, str]
    data: bytes

    def live(self, now: float) -> bool:
        h = self.headers
        if h.get(KV_OP) in ("DEL", "PURGE"):
            return False
        exp = h.get(H_EXP)
        return exp is None or float(exp) > now

    def version(self) -> int:
        return int(self.headers.get(H_VER, "1"))


def newest_mark(last: _Last | None) -> int:
    """The stream sequence of the newest mark at or before ``last`` in its log (0: none)."""
    if last is None:
        return 0
    if last.headers.get(H_MARK):
        return last.seq
    return int(last.headers.get(H_MARKS, "0"))


def after_headers(last: _Last | None) -> dict[str, str]:
    """The headers of a message written right after ``last`` in a log: the expected
    last sequence, the record number it continues from and the chain of marks."""
    headers = {
        EXPECT_LAST: str(last.seq if last is not None else 0),
        H_SEQ: str(int(last.headers.get(H_SEQ, "0")) + 1 if last is not None else 1),
    }
    mark = newest_mark(last)
    if mark:
        headers[H_MARKS] = str(mark)
    return headers


class _Shared:
    """What the namespace views of one store share: the connection, streams, caches."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        bucket = query.get("bucket", ["openheim"])[-1]
        if not bucket or not set(bucket) <= _NAME_OK:
            raise ConfigError(
                f"NATS bucket name {bucket!r} in {url!r}: use letters, digits, '-' and '_'"
            )
        try:
            self.replicas = int(query.get("replicas", ["1"])[-1])
            self.dedup_window = float(query.get("dedup_window", ["60"])[-1])
        except ValueError:
            raise ConfigError(f"replicas and dedup_window in {url!r} are numbers") from None
        self.url = url
        self.bucket = bucket
        self.kv_stream = f"KV_{bucket}"
        self.kv_prefix = f"$KV.{bucket}."
        self.log_stream = f"OHLOG_{bucket}"
        self.log_prefix = f"ohlog.{bucket}."
        self.conn = NatsConnection(urlunsplit(parts._replace(query="")))
        self.direct = {self.kv_stream: True, self.log_stream: True}
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # subject -> (stream sequence, headers) of the last message this process saw there.
        self.cache: OrderedDict[str, _Last] = OrderedDict()
        self.locks: dict[str, asyncio.Lock] = {}
        # log subject -> {record number: stream sequence} of records this process saw.
        self.positions: OrderedDict[str, dict[int, int]] = OrderedDict()
        # Keys this process wrote with a ttl: (expires at, subject, stream sequence).
        self.expiring: list[tuple[float, str, int]] = []
        self._sweeper: asyncio.Task[None] | None = None

    # -- expiry -------------------------------------------------------------------------

    def expires(self, at: float, subject: str, seq: int) -> None:
        """Drop message ``seq`` of ``subject`` once it expired (unless overwritten by then)."""
        if len(self.expiring) < _MAX_EXPIRING:
            heapq.heappush(self.expiring, (at, subject, seq))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        while self.expiring:
            wait = self.expiring[0][0] - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait + 0.05, _SWEEP_EVERY))
                continue
            _, subject, seq = heapq.heappop(self.expiring)
            try:
                await self.purge(self.kv_stream, subject, before=seq + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server is away: the key is swept by a later list()
                log.debug("nats store: could not drop expired %s: %r", subject, exc)

    async def stop_sweeping(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- set-up ---------------------------------------------------------------------

    def ready(self) -> Awaitable[None]:
        """Make the streams unless this process made them already (then the awaitable
        is done at once: no coroutine on every call of the hot paths)."""
        return _DONE if self._ready else self._make_ready()

    async def _make_ready(self) -> None:
        async with self._ready_lock:
            if not self._ready:
                await self._create_streams()

    async def _create_streams(self) -> None:
        js = await self.conn.jetstream()
        window = self.dedup_window
        for name, subjects, per_subject in (
            (self.kv_stream, [self.kv_prefix + ">"], 1),
            (self.log_stream, [self.log_prefix + ">"], -1),
        ):
            config = api.StreamConfig(
                name=name,
                subjects=subjects,
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_msgs_per_subject=per_subject,
                discard=api.DiscardPolicy.NEW,
                num_replicas=self.replicas,
                duplicate_window=window,
                allow_rollup_hdrs=True,
                deny_delete=True,
                allow_direct=True,
            )
            try:
                await retrying(self.conn, partial(js.add_stream, config), "create streams")
            except nats.js.errors.BadRequestError as exc:
                # Made elsewhere (`nats kv add`) with another configuration: use it as it is.
                info = await js.stream_info(name)
                if per_subject == 1 and info.config.max_msgs_per_subject not in (1, None):
                    raise ConfigError(
                        f"the NATS stream {name} exists with history "
                        f"{info.config.max_msgs_per_subject}; openheim needs history 1 "
                        "(delete the bucket or pick another with ?bucket=)"
                    ) from exc
                self.direct[name] = bool(info.config.allow_direct)
        self._ready = True

    # -- primitives -----------------------------------------------------------------

    async def last(self, stream: str, subject: str) -> _Last | None:
        """The last message on ``subject`` (direct get: headers and payload, one round trip)."""
        await self.ready()
        nc = await self.conn.connect()

        async def call() -> _Last | None:
            if self.direct[stream]:
                msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", timeout=5)
                hdrs = msg.headers or {}
                status = hdrs.get("Status")
                if status == "404":
                    return None
                if status:
                    raise nats.js.errors.APIError.from_msg(msg)
                return _Last(int(hdrs["Nats-Sequence"]), hdrs, msg.data or b"")
            js = await self.conn.jetstream()
            try:
                raw = await js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                return None
            return _Last(raw.seq or 0, dict(raw.headers or {}), raw.data or b"")

        got: _Last | None = await self._again(call, f"read {subject}")
        self.remember(subject, got)
        return got

    def note_position(self, subject: str, number: int, seq: int) -> None:
        known = self.positions.get(subject)
        if known is None:
            known = self.positions[subject] = {}
            if len(self.positions) > _CACHE_SIZE:
                self.positions.popitem(last=False)
        else:
            self.positions.move_to_end(subject)
        known[number] = seq
        if len(known) > _POSITIONS:
            del known[min(known)]

    def position(self, subject: str, number: int) -> int | None:
        """The stream sequence of record ``number`` of a log, if this process saw it."""
        known = self.positions.get(subject)
        return known.get(number) if known else None

    def forget_positions(self, subject: str) -> None:
        self.positions.pop(subject, None)

    async def next_on(self, stream: str, subject: str, seq: int) -> _Last | None:
        """The first message on ``subject`` at or after stream sequence ``seq``."""
        nc = await self.conn.connect()
        js = await self.conn.jetstream()

        async def call() -> _Last | None:
            if self.direct[stream]:
                req = json.dumps({"seq": seq, "next_by_subj": subject}).encode()
                msg = await nc.request(f"$JS.API.DIRECT.GET.{stream}", req, timeout=5)
                hdrs = msg.headers or {}
                status = hdrs.get("Status")
                if status == "404":
                    return None
                if status:
                    raise nats.js.errors.APIError.from_msg(msg)
                return _Last(int(hdrs["Nats-Sequence"]), hdrs, msg.data or b"")
            try:
                raw = await js.get_msg(stream, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return None
            return _Last(raw.seq or 0, dict(raw.headers or {}), raw.data or b"")

        got: _Last | None = await self._again(call, f"read {subject}")
        return got

    def remember(self, subject: str, last: _Last | None) -> None:
        cache = self.cache
        cache[subject] = last if last is not None else _Last(0, {KV_OP: "DEL"}, b"")
        cache.move_to_end(subject)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float = 5.0
    ) -> int | None:
        """Publish with ``headers``; the stream sequence, or None if the expected last was wrong.

        One ``Nats-Msg-Id`` serves every retry of this write (a fresh one unless
        ``headers`` carries it: a write that was stored after all is then a
        duplicate the server acks as such)."""
        await self.ready()
        nc = await self.conn.connect()
        headers.setdefault(MSG_ID, uuid.uuid4().hex)

        async def call() -> int | None:
            try:
                msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
            except nats.errors.NoRespondersError:
                raise nats.js.errors.NoStreamResponseError from None
            except nats.errors.MaxPayloadError as exc:
                raise ConfigError(
                    f"a record of {len(payload)} bytes is larger than the NATS server's "
                    "max_payload; raise max_payload in the server configuration or store "
                    "large blobs elsewhere"
                ) from exc
            ack = _dec_ack.decode(msg.data)
            if ack.error is not None:
                if ack.error.get("err_code") in WRONG_LAST:
                    return None
                raise nats.js.errors.APIError.from_error(ack.error)
            return ack.seq

        seq: int | None = await self._again(call, f"write {subject}")
        return seq

    async def purge(self, stream: str, subject: str, before: int | None = None) -> None:
        """Drop the messages of ``subject`` (those below sequence ``before``, if given)."""
        js = await self.conn.jetstream()
        await self._again(
            lambda: js.purge_stream(stream, seq=before, subject=subject), f"purge {subject}"
        )

    async def _again(self, call: Any, what: str) -> Any:
        """``retrying``, and re-create the streams if a restarted server lost them.

        A stream that is gone shows as "not found" from the API, and as no
        responders or a timeout for direct gets and publishes: after a few
        seconds of those on a live connection the streams are set up again (a
        no-op if they exist), then the call is retried.
        """
        try:
            return await retrying(self.conn, call, what, deadline=3.0)
        except nats.js.errors.APIError as exc:
            if exc.err_code != STREAM_NOT_FOUND and exc.code != 404:
                raise
        except StorageError:
            nc = self.conn.client
            if nc is None or not nc.is_connected:  # still reconnecting: keep trying
                return await retrying(self.conn, call, what)
            # Connected, yet no answer (a direct get on a deleted stream just times out).
        self._ready = False
        self.cache.clear()
        self.positions.clear()
        await self.ready()
        return await retrying(self.conn, call, what)

    async def scan(
        self, stream: str, filter_subject: str, *, last_per_subject: bool, headers_only: bool
    ) -> builtins.list[tuple[str, _Last]]:
        """Every message on ``filter_subject`` (or the last one per subject), in stream order."""
        await self.ready()
        found = await self._again(
            partial(
                scan,
                self.conn,
                stream,
                filter_subject,
                last_per_subject=last_per_subject,
                headers_only=headers_only,
            ),
            "scan",
        )
        return [(subject, _Last(seq, hdrs, data)) for subject, seq, hdrs, data in found]

    def lock(self, subject: str) -> asyncio.Lock:
        """Serialise this process's writers of one subject (they would only retry each other)."""
        lock = self.locks.get(subject)
        if lock is None:
            if len(self.locks) > _CACHE_SIZE:
                self.locks = {k: v for k, v in self.locks.items() if v.locked()}
            lock = self.locks[subject] = asyncio.Lock()
        return lock


class NatsStore:
    """Keys in a JetStream KV bucket and logs in a JetStream stream (see the module docstring)."""

    def __init__(self, url: str, ns: str = "default", *, _shared: _Shared | None = None) -> None:
        self.url = url
        self.ns = check_key(ns, "namespace")
        self._s = _shared if _shared is not None else _Shared(url)
        token = encode_token(self.ns)
        self._kv = self._s.kv_prefix + token + "."
        self._log = self._s.log_prefix + token + "."

    def namespace(self, ns: str) -> NatsStore:
        return NatsStore(self.url, ns, _shared=self._s)

    # -- keys -----------------------------------------------------------------------

    def _key_subject(self, key: str) -> str:
        return self._kv + encode_token(check_key(key))

    async def get(self, key: str) -> tuple[bytes, int] | None:
        last = await self._s.last(self._s.kv_stream, self._key_subject(key))
        if last is None or not last.live(time.time()):
            return None
        return last.data, last.version()

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
        subject = self._key_subject(key)
        s = self._s
        async with s.lock(subject):
            last = s.cache.get(subject)
            fresh = False
            while True:
                if last is None:
                    last, fresh = await s.last(s.kv_stream, subject), True
                now = time.time()
                live = last is not None and last.live(now)
                current = last.version() if live and last is not None else 0
                if expect_version is not None and expect_version != current:
                    if not fresh:  # the cache may be stale: ask the server before refusing
                        last = None
                        continue
                    raise conflict(self.ns, key, expect_version, current)
                headers = {
                    EXPECT_LAST: str(last.seq if last is not None else 0),
                    H_VER: str(current + 1),
                }
                if ttl is not None:
                    headers[H_EXP] = repr(now + ttl)
                seq = await s.publish(subject, value, headers)
                if seq is None:  # someone wrote in between: read again
                    last = None
                    continue
                s.remember(subject, _Last(seq, headers, b""))
                if ttl is not None and ttl <= _REMEMBER_TTL:
                    s.expires(now + ttl, subject, seq)
                return current + 1

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        subject = self._key_subject(key)
        s = self._s
        async with s.lock(subject):
            while True:
                last = await s.last(s.kv_stream, subject)
                live = last is not None and last.live(time.time())
                current = last.version() if live and last is not None else 0
                if expect_version is not None and expect_version != current:
                    raise conflict(self.ns, key, expect_version, current)
                if not live or last is None:
                    return False
                seq = await s.publish(subject, b"", {EXPECT_LAST: str(last.seq), KV_OP: "DEL"})
                if seq is None:
                    continue
                await s.purge(s.kv_stream, subject, before=seq + 1)
                s.remember(subject, None)
                return True

    async def list(self, prefix: str = "") -> builtins.list[str]:
        s = self._s
        found = await s.scan(s.kv_stream, self._kv + ">", last_per_subject=True, headers_only=True)
        now = time.time()
        keys = []
        for subject, last in found:
            if last.live(now):
                key = decode_token(subject[len(self._kv) :])
                if key.startswith(prefix):
                    keys.append(key)
            elif last.headers.get(H_EXP) is not None:
                # Expired: drop it (only that message; a newer write survives the purge).
                await s.purge(s.kv_stream, subject, before=last.seq + 1)
        return sorted(keys)

    # -- logs -----------------------------------------------------------------------

    def _log_subject(self, log: str) -> str:
        return self._log + encode_token(check_key(log, "log name"))

    async def append(self, log: str, record: bytes) -> int:
        record = check_value(record)
        subject = self._log_subject(log)
        s = self._s
        async with s.lock(subject):
            last = s.cache.get(subject)
            while True:
                if last is None:
                    last = await s.last(s.log_stream, subject)
                headers = after_headers(last)
                seq = await s.publish(subject, record, headers)
                if seq is None:
                    last = None
                    continue
                s.remember(subject, _Last(seq, headers, b""))
                number = int(headers[H_SEQ])
                s.note_position(subject, number, seq)
                return number

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        subject = self._log_subject(log)
        s = self._s
        last = await s.last(s.log_stream, subject)
        if last is None:
            return []
        top = int(last.headers.get(H_SEQ, "0"))
        if top <= after or last.headers.get(H_TRIM):
            return []
        if top == after + 1 and not last.headers.get(H_MARK):
            return [(top, last.data)]
        start = 0 if after == 0 else s.position(subject, after)
        if start is not None and top - after <= _STEP_READ:
            # A few records past a known position: read them one by one (direct gets),
            # cheaper than setting up a consumer.
            out = []
            seq = start + 1
            while seq <= last.seq:
                msg = await s.next_on(s.log_stream, subject, seq)
                if msg is None:
                    break
                number = int(msg.headers.get(H_SEQ, "0"))
                if not msg.headers.get(H_TRIM) and not msg.headers.get(H_MARK):
                    s.note_position(subject, number, msg.seq)
                    if number > after:
                        out.append((number, msg.data))
                seq = msg.seq + 1
            return out
        found = await s.scan(s.log_stream, subject, last_per_subject=False, headers_only=False)
        out = []
        for _, msg in found:
            if msg.headers.get(H_TRIM) or msg.headers.get(H_MARK):
                continue
            number = int(msg.headers.get(H_SEQ, "0"))
            s.note_position(subject, number, msg.seq)
            if number > after:
                out.append((number, msg.data))
        out.sort(key=lambda r: r[0])
        return out

    async def last_seq(self, log: str) -> int:
        subject = self._log_subject(log)
        s = self._s
        last = await s.last(s.log_stream, subject)
        return int(last.headers.get(H_SEQ, "0")) if last is not None else 0

    async def trim_log(self, log: str, upto: int) -> None:
        subject = self._log_subject(log)
        s = self._s
        async with s.lock(subject):
            while True:
                last = await s.last(s.log_stream, subject)
                if last is None:
                    return
                top = int(last.headers.get(H_SEQ, "0"))
                if upto >= top:
                    if last.headers.get(H_TRIM):
                        await s.purge(s.log_stream, subject, before=last.seq)
                        return
                    # Keep the last number in a tombstone, drop everything before it.
                    headers = {EXPECT_LAST: str(last.seq), H_SEQ: str(top), H_TRIM: "1"}
                    mark = newest_mark(last)
                    if mark:
                        headers[H_MARKS] = str(mark)
                    seq = await s.publish(subject, b"", headers)
                    if seq is None:
                        continue
                    s.remember(subject, _Last(seq, headers, b""))
                    await s.purge(s.log_stream, subject, before=seq)
                    return
                found = await s.scan(
                    s.log_stream, subject, last_per_subject=False, headers_only=True
                )
                for _, msg in found:
                    h = msg.headers
                    if int(h.get(H_SEQ, "0")) > upto and not h.get(H_TRIM) and not h.get(H_MARK):
                        await s.purge(s.log_stream, subject, before=msg.seq)
                        break
                return

    async def delete_log(self, log: str) -> None:
        subject = self._log_subject(log)
        s = self._s
        async with s.lock(subject):
            await s.ready()
            await s.purge(s.log_stream, subject)
            s.remember(subject, None)
            s.forget_positions(subject)

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        s = self._s
        await s.ready()
        js = await s.conn.jetstream()
        info = await s._again(
            lambda: js.stream_info(s.log_stream, subjects_filter=self._log + ">"), "list logs"
        )
        subjects = info.state.subjects or {}
        names = (decode_token(subject[len(self._log) :]) for subject in subjects)
        return sorted(n for n in names if n.startswith(prefix))

    async def sweep(self) -> int:
        """Drop every expired key of the bucket (all namespaces); how many were dropped.

        A process drops the keys it wrote with a ttl once they expire, and
        ``list`` drops expired keys it meets; this catches the ones written by
        processes that are gone (run it now and then, e.g. from cron).
        """
        s = self._s
        found = await s.scan(
            s.kv_stream, s.kv_prefix + ">", last_per_subject=True, headers_only=True
        )
        now = time.time()
        n = 0
        for subject, last in found:
            if last.headers.get(H_EXP) is not None and not last.live(now):
                await s.purge(s.kv_stream, subject, before=last.seq + 1)
                n += 1
        return n

    async def aclose(self) -> None:
        await self._s.stop_sweeping()
        await self._s.conn.close()

    def __repr__(self) -> str:
        return f"NatsStore({self.url!r}, ns={self.ns!r})"
