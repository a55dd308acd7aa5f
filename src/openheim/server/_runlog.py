"""A server run's events: numbered, written to the store in batches, followed by clients.

Events get ids 0, 1, 2, ... (the SSE ``id:``; the store's event log numbers
them from 1, so store id = event id + 1). A client is shown an event only once
it is in the store, so an id a client has seen survives a crash of the
server: after a restart, ``Last-Event-ID`` finds it in the store and the
client receives the rest of the run. Writes are batched (one store write for
all the events queued while the previous write was in flight), so a fast
model costs a store write per batch, not per token.

Each record keeps the newest :data:`TAIL` events in memory for live
followers; older ones (and every event of a run this process does not run)
are read from the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from openheim.server._wire import json_encode
from openheim.stores.events import RunEventLog

logger = logging.getLogger("openheim.server")

TAIL = 256
"""Events per run kept in memory for live followers (older ones are read from the store)."""

POLL = 0.25
"""Seconds between store reads when following a run another process executes."""

Event = tuple[int, str, bytes]  # (id, type, JSON data)

_EVENT_ID = re.compile(r"(?:0|[1-9][0-9]{0,17})")


def parse_event_id(text: str) -> int:
    """An event id as sent back in ``Last-Event-ID`` / ``?after=``: digits only, no sign."""
    if not text.isascii() or _EVENT_ID.fullmatch(text) is None:
        raise ValueError(text)
    return int(text)


def encode_event(kind: str, data: bytes) -> bytes:
    return kind.encode() + b"\n" + data


def decode_event(ident: int, raw: bytes) -> Event:
    kind, _, data = raw.partition(b"\n")
    return ident, kind.decode(), data


def sse(event: Event) -> bytes:
    ident, kind, data = event
    return f"id: {ident}\nevent: {kind}\n".encode() + b"data: " + data + b"\n\n"


class RunRecord:
    """One run executing in this process: its events, queued, stored and followed.

    ``first`` is the id of the run's next event (0 for a new run; after a
    restart, the number of events already stored).
    """

    def __init__(
        self, run_id: str, tenant: str, agent: str, log: RunEventLog, first: int = 0
    ) -> None:
        self.id = run_id
        self.tenant = tenant
        self.agent = agent
        self.log = log
        self.first = first  # the id of the first event this process adds
        self.next_id = first  # the id the next pushed event gets
        self.durable = first  # events below this id are in the store
        self.tail: deque[Event] = deque(maxlen=TAIL)
        self.finished = False  # the last event is stored (or the run was handed off)
        self.handed_off = False  # stopped here unfinished: another process goes on
        self.finished_at = 0.0
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self._queue: list[Event] = []
        self._opened = False
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"RunRecord({self.id!r}, tenant={self.tenant!r}, events={self.next_id})"

    # ---- writing ----------------------------------------------------------------------

    def push(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event (ids in push order); it is stored, then shown to followers."""
        event = (self.next_id, kind, json_encode({"type": kind, **data}))
        self.next_id += 1
        self._queue.append(event)
        self.tail.append(event)
        if kind == "done":
            self.result = data
        elif kind == "error":
            self.error = data.get("error")
        self._kick()

    async def open(self) -> None:
        """Open the run's log in the store (continuing its ids) and start writing."""
        last = await self.log.open(self.id)
        if last != self.durable:
            # The store knows more (or fewer) events than we were told: its count wins.
            shift = last - self.durable
            self.durable = last
            self.first += shift
            self.next_id += shift
            self._queue = [(i + shift, k, d) for i, k, d in self._queue]
            self.tail = deque(((i + shift, k, d) for i, k, d in self.tail), maxlen=TAIL)
        self._opened = True
        self._kick()

    def _kick(self) -> None:
        if self._opened and self._queue and (self._writer is None or self._writer.done()):
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self.log.append(self.id, [encode_event(k, d) for _, k, d in batch])
            except Exception:
                # The store is failing: followers still get the events (from memory).
                logger.exception("run %r: could not store %d event(s)", self.id, len(batch))
            self.durable = batch[-1][0] + 1
            self._notify()

    async def close(self) -> None:
        """Wait until every event is stored, mark the log closed (it expires later)."""
        self._closing = True
        if not self._opened:
            try:
                await self.open()
            except Exception:
                logger.exception("run %r: could not open its event log", self.id)
                self._opened = True
                self._kick()
        while self._queue or (self._writer is not None and not self._writer.done()):
            if self._writer is not None and not self._writer.done():
                await asyncio.shield(self._writer)
            else:
                self._kick()
        try:
            await self.log.close(self.id)
        except Exception:
            logger.exception("run %r: could not close its event log", self.id)
        self.finished = True
        self.finished_at = time.monotonic()
        self._notify()

    def hand_off(self) -> None:
        """Stop here unfinished (shutdown, lost lease): the log stays open for the next holder.

        Followers in this process get the events stored so far, then their stream ends.
        """
        self.handed_off = True
        self.finished = True
        self.finished_at = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.get_running_loop().create_future()
        if not wake.done():
            wake.set_result(None)

    # ---- reading ----------------------------------------------------------------------

    async def follow(self, after: int) -> AsyncIterator[Event]:
        """The events with ids above ``after``, as they are stored, until the run ends."""
        seen = after + 1
        while True:
            durable = self.durable
            if seen < durable:
                if self.tail and self.tail[0][0] <= seen:
                    batch = [e for e in list(self.tail) if seen <= e[0] < durable]
                else:
                    batch = await stored_events(self.log, self.id, seen - 1, durable)
                    if not batch:  # dropped from the store (bounded): skip to what is kept
                        seen = max(seen, self.tail[0][0] if self.tail else durable)
                        continue
                for event in batch:
                    yield event
                    seen = event[0] + 1
                continue
            if self.finished:
                return
            # Shielded: a follower that goes away must not cancel the others' wake-up.
            await asyncio.shield(self._wake)


async def stored_events(log: RunEventLog, run_id: str, after: int, below: int) -> list[Event]:
    """Events of ``run_id`` in the store with ids in ``(after, below)``."""
    out = []
    for ident, raw in await log.read(run_id, after=after + 1):
        if ident - 1 >= below:
            break
        out.append(decode_event(ident - 1, raw))
    return out


async def follow_stored(log: RunEventLog, run_id: str, after: int) -> AsyncIterator[Event]:
    """Events of a run that this process does not execute, read from the store.

    Until its log is closed (another process executes it, or it is about to be
    resumed), the store is read again every :data:`POLL` seconds.
    """
    seen = after + 1
    while True:
        info = await log.info(run_id)
        if info is None:
            return
        for ident, raw in await log.read(run_id, after=seen):
            event = decode_event(ident - 1, raw)
            yield event
            seen = event[0] + 1
        if info.closed and seen >= info.last:
            return
        await asyncio.sleep(POLL)
