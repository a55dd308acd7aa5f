"""Session histories: the :class:`HistoryStore` protocol and its two implementations.

A history keeps each session's conversation and usage. An agent loads a
session's history when a run starts and appends the run's messages (and
usage) when the run finishes, in one call, tagged with the run's id: a run
that fails, is cancelled or is paused for an approval adds nothing, so a
stored history never holds half a turn (a tool call without its result), and
a run added twice (finished again after a crash) is added once.

:class:`InMemoryHistory` keeps sessions in process memory (the default of an
``Agent``); :class:`StoreHistory` keeps them in a :class:`Store` (SQLite,
Redis, Postgres, memory). A run that should continue a conversation without
any session passes it as ``agent.run(..., message_history=[...])``.

StoreHistory: each session is one record, ``session/<id>`` in the tenant's namespace (a
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
from typing import Protocol, runtime_checkable

import msgspec

from openheim.errors import ConfigError, SessionBusyError, VersionConflictError
from openheim.messages import Message, Usage
from openheim.snapshot import FORMAT_VERSION, SessionRecord, decode_session, encode_session
from openheim.stores._base import Store

__all__ = ["HistoryStore", "InMemoryHistory", "SessionInfo", "StoreHistory"]

_PREFIX = "session/"
_KEEP_RUN_IDS = 64
_CACHE = 1024


@runtime_checkable
class HistoryStore(Protocol):
    """Where sessions' conversations and usage are kept (see the module docstring).

    ``store`` is the :class:`Store` the sessions live in, or None for process
    memory; ``Agent(checkpointer=True)`` keeps run checkpoints there.
    """

    @property
    def store(self) -> Store | None: ...

    async def load(self, session: str) -> list[Message]:
        """The session's messages, oldest first (empty for a new session)."""
        ...

    async def append(
        self,
        session: str,
        messages: Sequence[Message],
        usage: Usage | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        """Add one finished run's messages and usage atomically; once per ``run_id``."""
        ...

    async def has_run(self, session: str, run_id: str) -> bool:
        """Whether the run ``run_id``'s messages were added to ``session`` (recent runs)."""
        ...

    async def usage(self, session: str) -> Usage:
        """Tokens and requests the session has used so far."""
        ...

    async def list_sessions(self, prefix: str = "") -> list[str]:
        """The ids of the sessions kept here (starting with ``prefix``), sorted."""
        ...

    async def delete(self, session: str) -> bool:
        """Forget ``session``; False if there was none."""
        ...

    async def clear(self, session: str) -> None:
        """Forget ``session`` (as :meth:`delete`, without the answer)."""
        ...


class InMemoryHistory:
    """A :class:`HistoryStore` in process memory (lost when the process ends)."""

    store: Store | None = None

    def __init__(self) -> None:
        self._messages: dict[str, list[Message]] = {}
        self._usage: dict[str, Usage] = {}
        self._runs: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"InMemoryHistory({len(self._messages)} sessions)"

    async def load(self, session: str) -> list[Message]:
        return list(self._messages.get(session, ()))

    async def append(
        self,
        session: str,
        messages: Sequence[Message],
        usage: Usage | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        _check_session(session)
        if run_id is not None:
            runs = self._runs.setdefault(session, [])
            if run_id in runs:
                return
            runs.append(run_id)
            del runs[:-_KEEP_RUN_IDS]
        self._messages.setdefault(session, []).extend(messages)
        if usage is not None:
            self._usage[session] = self._usage.get(session, Usage()) + usage

    async def has_run(self, session: str, run_id: str) -> bool:
        return run_id in self._runs.get(session, ())

    async def usage(self, session: str) -> Usage:
        return self._usage.get(session, Usage())

    async def list_sessions(self, prefix: str = "") -> list[str]:
        return sorted(s for s in self._messages if s.startswith(prefix))

    async def delete(self, session: str) -> bool:
        self._usage.pop(session, None)
        self._runs.pop(session, None)
        return self._messages.pop(session, None) is not None

    async def clear(self, session: str) -> None:
        await self.delete(session)

    @property
    def sessions(self) -> list[str]:
        return list(self._messages)


def _check_session(session: str) -> str:
    if not isinstance(session, str) or not session:
        raise ConfigError(f"a session id is a non-empty string, got {session!r}")
    return session


class SessionInfo(msgspec.Struct, frozen=True):
    """A stored session: its id, how many messages it holds, usage, last update (epoch s)."""

    id: str
    messages: int
    usage: Usage
    updated: float


class StoreHistory:
    """A :class:`HistoryStore` on a :class:`Store` (see the module docstring).

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
        return _PREFIX + _check_session(session)

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

    async def has_run(self, session: str, run_id: str) -> bool:
        return run_id in (await self.get(session)).runs

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
