"""The :class:`Store` protocol every backend implements, and helpers they share."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from openheim.errors import ConfigError, VersionConflictError

__all__ = ["LogRecord", "Store", "check_key", "conflict", "expiry"]

LogRecord = tuple[int, bytes]
"""One log record: its sequence number (1, 2, ...) and its bytes."""


@runtime_checkable
class Store(Protocol):
    """Durable keys with versions, and append-only logs, within one namespace.

    Every key has a version: 1 when created, +1 on each write. ``put`` with
    ``expect_version=v`` writes only if the key is at version ``v`` (``0``:
    only if it does not exist) and raises :class:`VersionConflictError`
    otherwise; ``ttl`` (seconds) makes the key expire, after which it reads as
    absent. Logs are separate from keys: ``append`` gives each record the
    next sequence number of its log (numbers are never reused, even after
    ``trim_log``). ``namespace(ns)`` is the same store seen from another
    tenant's namespace: keys and logs of different namespaces never meet.
    """

    url: str
    ns: str

    def namespace(self, ns: str) -> Store:
        """This store (same connection) seen from namespace ``ns``."""
        ...

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and version of ``key``, or None if it is absent or expired."""
        ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        """Write ``key`` and return its new version (see the class docstring)."""
        ...

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove ``key``; False if it was absent. Conflict as for ``put``."""
        ...

    async def list(self, prefix: str = "") -> builtins.list[str]:
        """The live keys starting with ``prefix``, sorted."""
        ...

    async def append(self, log: str, record: bytes) -> int:
        """Append ``record`` to ``log`` durably and return its sequence number."""
        ...

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        """The records of ``log`` with sequence numbers above ``after``, in order."""
        ...

    async def last_seq(self, log: str) -> int:
        """The number of the last record appended to ``log`` (trimmed or not); 0 for a
        log never appended to, or deleted. Cheap: it reads no record."""
        ...

    async def trim_log(self, log: str, upto: int) -> None:
        """Drop the records of ``log`` numbered ``upto`` and below."""
        ...

    async def delete_log(self, log: str) -> None:
        """Drop the whole log (its numbering starts again at 1)."""
        ...

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        """The names of the logs starting with ``prefix`` (not deleted), sorted."""
        ...

    async def aclose(self) -> None:
        """Close connections and threads (the store is unusable afterwards)."""
        ...


def check_key(key: str, what: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"a store {what} must be a non-empty string, got {key!r}")
    return key


def check_value(value: bytes | bytearray | memoryview) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(f"store values are bytes, got {type(value).__name__}")
    return bytes(value)


def check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ConfigError(f"ttl must be a positive number of seconds or None, got {ttl!r}")


def expiry(ttl: float | None) -> float | None:
    """The wall-clock time a key written now with ``ttl`` expires."""
    return None if ttl is None else time.time() + ttl


def conflict(ns: str, key: str, expected: int, actual: int) -> VersionConflictError:
    want = "not to exist" if expected == 0 else f"at version {expected}"
    found = "absent" if actual == 0 else f"at version {actual}"
    return VersionConflictError(
        f"key {key!r} (namespace {ns!r}) was expected {want} but is {found}; "
        "another writer changed it: read it again and retry",
        key=key,
        expected=expected,
        actual=actual,
    )


def sorted_unique(keys: Sequence[str]) -> builtins.list[str]:
    return sorted(set(keys))
