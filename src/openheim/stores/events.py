"""``RunEventLog``: the events of runs, kept in a store so that streams outlive the process.

Each run has a log of events (opaque bytes, e.g. JSON) numbered 1, 2, 3, ...
in the order appended; ids continue across processes (a server that resumes
a run after a restart appends after the last stored id). Events are written
in batches (one store record per batch), so a fast producer costs one store
write per batch, not per event; a reader asks for the events after id N::

    log = RunEventLog(store, max_events=10_000, retention=300)
    await log.open(run_id)
    last = await log.append(run_id, [b'{"type":"text_delta",...}', ...])
    await log.close(run_id)                  # finished: kept for `retention` seconds
    events = await log.read(run_id, after=3)  # [(4, b'...'), (5, b'...'), ...]

Bounds:

- per run: at most ``max_events`` events are kept, plus at most one batch:
  when a run goes past it, its *oldest* events are dropped (the newest, and
  the run's last event, always stay). :meth:`info` tells the first id still
  kept; reading from an older id returns what is kept.
- in total: :meth:`expire` (call it on a timer) deletes the logs of closed
  runs older than ``retention`` and, beyond ``max_runs`` closed runs, the
  oldest closed ones. Logs of runs still open are never expired: a run that
  was interrupted stays readable until it is resumed and closed.

One process writes a run's log at a time (the server holds the run's
:class:`~openheim.stores.lease.Lease` while it runs it); any process may read.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence

import msgspec

from openheim.errors import ConfigError, CorruptStateError
from openheim.stores._base import Store, check_key

__all__ = ["EventLogInfo", "RunEventLog"]

_PREFIX = "events/"


class _Batch(msgspec.Struct, array_like=True):
    first: int  # the id of events[0]
    events: list[bytes]


class _Meta(msgspec.Struct, array_like=True):
    opened: float
    closed: float | None = None


class EventLogInfo(msgspec.Struct, frozen=True):
    """A run's log: ids ``first``..``last`` are kept (``0``/``0`` if none yet), ``closed``?"""

    first: int
    last: int
    closed: bool


_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(_Batch).decode
_decode_meta = msgspec.msgpack.Decoder(_Meta).decode


class _Track:
    """What the writing process knows of a run's log: the store records and their ids."""

    __slots__ = ("last", "records")

    def __init__(self) -> None:
        self.last = 0
        self.records: list[tuple[int, int]] = []  # (store seq, last id in it), oldest first


class RunEventLog:
    """Run event logs in ``store`` (see the module docstring for the bounds)."""

    def __init__(
        self,
        store: Store,
        *,
        max_events: int = 10_000,
        retention: float = 300.0,
        max_runs: int = 1_000,
    ) -> None:
        if max_events < 1:
            raise ConfigError(f"max_events must be >= 1, got {max_events!r}")
        if max_runs < 1:
            raise ConfigError(f"max_runs must be >= 1, got {max_runs!r}")
        if not retention > 0:
            raise ConfigError(f"retention must be a positive number of seconds, got {retention!r}")
        self.store = store
        self.max_events = max_events
        self.retention = float(retention)
        self.max_runs = max_runs
        self._tracks: dict[str, _Track] = {}

    def __repr__(self) -> str:
        return f"RunEventLog({self.store!r})"

    @staticmethod
    def _name(run_id: str) -> str:
        return _PREFIX + check_key(run_id, "run id")

    async def _records(self, run_id: str) -> list[tuple[int, _Batch]]:
        name = self._name(run_id)
        out = []
        for seq, data in await self.store.read_log(name):
            try:
                out.append((seq, _decode_batch(data)))
            except msgspec.DecodeError:
                raise CorruptStateError(
                    f"record {seq} of the event log {name!r} (namespace {self.store.ns!r}) "
                    "is not an event batch; delete the log to drop the run's events"
                ) from None
        return out

    async def _meta(self, run_id: str) -> _Meta | None:
        name = self._name(run_id)
        raw = await self.store.get(name)
        return None if raw is None else self._decode_meta(name, raw[0])

    def _decode_meta(self, name: str, data: bytes) -> _Meta:
        try:
            return _decode_meta(data)
        except msgspec.DecodeError:
            raise CorruptStateError(
                f"the key {name!r} (namespace {self.store.ns!r}) does not describe an event "
                "log; delete it to drop the run's events"
            ) from None

    async def open(self, run_id: str) -> int:
        """Start (or reopen, to continue) ``run_id``'s log; returns its last id (0 if new)."""
        name = self._name(run_id)
        meta = await self._meta(run_id)
        # The key first: expire() deletes logs whose key is gone.
        await self.store.put(name, _encode(_Meta(meta.opened if meta else time.time())))
        track = _Track()
        if meta is None:
            await self.store.delete_log(name)  # an expired run's leftovers, if any
        else:
            for seq, batch in await self._records(run_id):
                track.records.append((seq, batch.first + len(batch.events) - 1))
            if track.records:
                track.last = track.records[-1][1]
        self._tracks[run_id] = track
        return track.last

    async def append(self, run_id: str, events: Sequence[bytes]) -> int:
        """Append ``events`` (in one store write); returns the id of the last one.

        The log must have been opened by this object (:meth:`open`).
        """
        track = self._tracks.get(run_id)
        if track is None:
            raise ConfigError(
                f"the event log of run {run_id!r} is not open here: call open() first"
            )
        if not events:
            return track.last
        items = [bytes(e) for e in events]
        first = track.last + 1
        track.last += len(items)
        if len(items) > self.max_events:  # keep the newest of an oversized batch
            first += len(items) - self.max_events
            items = items[-self.max_events :]
        seq = await self.store.append(self._name(run_id), _encode(_Batch(first, items)))
        track.records.append((seq, track.last))
        # Drop whole batches that hold only events older than the newest max_events.
        cut = track.last - self.max_events
        drop = 0
        while drop < len(track.records) - 1 and track.records[drop][1] <= cut:
            drop += 1
        if drop:
            await self.store.trim_log(self._name(run_id), track.records[drop - 1][0])
            del track.records[:drop]
        return track.last

    async def close(self, run_id: str) -> None:
        """Mark the run finished: its log expires ``retention`` seconds from now."""
        name = self._name(run_id)
        self._tracks.pop(run_id, None)
        meta = await self._meta(run_id)
        now = time.time()
        value = _encode(_Meta(meta.opened if meta else now, now))
        await self.store.put(name, value, ttl=self.retention)

    async def info(self, run_id: str) -> EventLogInfo | None:
        """The ids kept and whether the run is closed; None if there is no (live) log."""
        meta = await self._meta(run_id)
        if meta is None:
            return None
        records = await self._records(run_id)
        first = records[0][1].first if records else 0
        last = records[-1][1].first + len(records[-1][1].events) - 1 if records else 0
        return EventLogInfo(first, last, meta.closed is not None)

    async def read(self, run_id: str, after: int = 0) -> builtins.list[tuple[int, bytes]]:
        """The events kept with ids above ``after``, in order ([] if the log expired)."""
        if await self._meta(run_id) is None:
            return []
        out: builtins.list[tuple[int, bytes]] = []
        for _, batch in await self._records(run_id):
            end = batch.first + len(batch.events)
            if end - 1 <= after:
                continue
            start = max(0, after + 1 - batch.first)
            out.extend((batch.first + i, batch.events[i]) for i in range(start, len(batch.events)))
        return out

    async def delete(self, run_id: str) -> None:
        """Drop a run's log now."""
        name = self._name(run_id)
        self._tracks.pop(run_id, None)
        await self.store.delete(name)
        await self.store.delete_log(name)

    async def runs(self) -> builtins.list[str]:
        """The ids of the runs with a live log (open, or closed and not yet expired)."""
        return [k[len(_PREFIX) :] for k in await self.store.list(_PREFIX)]

    async def expire(self) -> int:
        """Delete expired logs, and the oldest closed ones beyond ``max_runs``; returns how many."""
        logs = await self.store.list_logs(_PREFIX)  # logs first: a log made later has its key
        keys = set(await self.store.list(_PREFIX))
        dropped = 0
        for name in logs:
            if name not in keys:
                await self.store.delete_log(name)
                dropped += 1
        if len(keys) <= self.max_runs:
            return dropped
        closed: list[tuple[float, str]] = []
        for name in keys:
            raw = await self.store.get(name)
            if raw is not None:
                meta = self._decode_meta(name, raw[0])
                if meta.closed is not None:
                    closed.append((meta.closed, name))
        closed.sort()
        for _, name in closed[: max(0, len(closed) - self.max_runs)]:
            await self.store.delete(name)
            await self.store.delete_log(name)
            dropped += 1
        return dropped
