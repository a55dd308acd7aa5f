"""``StoreHistory``: sessions (conversation + usage) kept in a :class:`Store`.

Each session is one record, ``session/<id>`` in the tenant's namespace (a
framed, checksummed :class:`~openheim.snapshot.SessionRecord`). Adding a
run's messages is a read-modify-write guarded by the record's version:

- writers in one process take the session's lock, so they queue up;
- writers in different processes race on compare-and-set: the loser reads
  the session again and retries (its run's messages still go in as one
  block, after the winner's), and after ``max_attempts`` lost races gives up
  with :class:`SessionBusyError`.

So the messages of two runs are never interleaved. Appends that carry a
``run_id`` (the checkpointer's do) are idempotent: the record remembers the
last runs it took, so a run finished again after a crash is not added twice.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import msgspec

from openheim.errors import ConfigError, SessionBusyError, VersionConflictError
from openheim.messages import Message, Usage
from openheim.snapshot import FORMAT_VERSION, SessionRecord, decode_session, encode_session
from openheim.stores._base import Store

__all__ = ["SessionInfo", "StoreHistory"]

_PREFIX = "session/"
_KEEP_RUN_IDS = 64
_CACHE = 1024


class SessionInfo(msgspec.Struct, frozen=True):
    """A stored session: its id, how many messages it holds, usage, last update (epoch s)."""

    id: str
    messages: int
    usage: Usage
    updated: float


class StoreHistory:
    """A :class:`~openheim.sessions.HistoryStore` on a :class:`Store` (see the module docstring).

    ``namespace`` is the tenant: sessions of different namespaces never meet.
    """

    def __init__(self, store: Store, namespace: str | None = None, *, max_attempts: int = 8):
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.store: Store = store.namespace(namespace) if namespace is not None else store
        self.namespace = self.store.ns
        self.max_attempts = max_attempts
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # The last version seen per session: a CAS needs no read when nobody else wrote.
        self._seen: OrderedDict[str, tuple[int, SessionRecord]] = OrderedDict()

    def __repr__(self) -> str:
        return f"StoreHistory({self.store!r})"

    @staticmethod
    def _key(session: str) -> str:
        if not isinstance(session, str) or not session:
            raise ConfigError(f"a session id is a non-empty string, got {session!r}")
        return _PREFIX + session

    async def _read(self, session: str) -> tuple[int, SessionRecord]:
        key = self._key(session)
        got = await self.store.get(key)
        if got is None:
            return 0, SessionRecord(v=FORMAT_VERSION)
        data, version = got
        where = f"session {session!r} (key {key!r}, namespace {self.namespace!r})"
        return version, decode_session(data, where)

    def _remember(self, session: str, version: int, record: SessionRecord) -> None:
        self._seen[session] = (version, record)
        self._seen.move_to_end(session)
        if len(self._seen) > _CACHE:
            self._seen.popitem(last=False)

    async def get(self, session: str) -> SessionRecord:
        """The whole stored record of ``session`` (empty for an unknown one)."""
        version, record = await self._read(session)
        if version:
            self._remember(session, version, record)
        return record

    async def load(self, session: str) -> list[Message]:
        return list((await self.get(session)).messages)

    async def usage(self, session: str) -> Usage:
        return (await self.get(session)).usage

    async def append(
        self,
        session: str,
        messages: Sequence[Message],
        usage: Usage | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        """Add one run's ``messages`` (and ``usage``) as one block (see the module docstring)."""
        key = self._key(session)
        lock = self._locks.get(session)
        if lock is None:
            lock = self._locks[session] = asyncio.Lock()
        async with lock:
            seen = self._seen.get(session)
            for attempt in range(self.max_attempts):
                if seen is None:
                    seen = await self._read(session)
                version, record = seen
                if run_id is not None and run_id in record.runs:
                    return  # added already (a run finished again after a restart)
                runs = record.runs
                if run_id is not None:
                    runs = [*runs[-(_KEEP_RUN_IDS - 1) :], run_id]
                new = SessionRecord(
                    v=FORMAT_VERSION,
                    messages=[*record.messages, *messages],
                    usage=record.usage + usage if usage is not None else record.usage,
                    runs=runs,
                    updated=time.time(),
                )
                try:
                    version = await self.store.put(key, encode_session(new), expect_version=version)
                except VersionConflictError:
                    seen = None
                    if attempt:
                        await asyncio.sleep(0.001 * 2**attempt)
                    continue
                self._remember(session, version, new)
                return
            self._seen.pop(session, None)
            raise SessionBusyError(
                f"session {session!r} (namespace {self.namespace!r}) kept changing under "
                f"this writer: {self.max_attempts} compare-and-set attempts lost to other "
                "processes writing the same session; this run's messages were not added. "
                "Retry the run, or give each writer its own session.",
                key=key,
            )

    async def clear(self, session: str) -> None:
        await self.delete(session)

    async def delete(self, session: str) -> bool:
        """Forget ``session``; False if there was none."""
        self._seen.pop(session, None)
        return await self.store.delete(self._key(session))

    async def list_sessions(self, prefix: str = "") -> list[str]:
        """The ids of the sessions in this namespace (starting with ``prefix``), sorted."""
        return [k[len(_PREFIX) :] for k in await self.store.list(_PREFIX + prefix)]

    async def info(self, session: str) -> SessionInfo | None:
        version, record = await self._read(session)
        if not version:
            return None
        return SessionInfo(session, len(record.messages), record.usage, record.updated)

    async def aclose(self) -> None:
        await self.store.aclose()
