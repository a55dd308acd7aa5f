"""``memory://``: a :class:`Store` in process memory (tests, ephemeral agents)."""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass, field

from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
    expiry,
)

__all__ = ["MemoryStore"]


@dataclass
class _Log:
    last: int = 0
    records: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Data:
    kv: dict[tuple[str, str], tuple[bytes, int, float | None]] = field(default_factory=dict)
    logs: dict[tuple[str, str], _Log] = field(default_factory=dict)


class MemoryStore:
    """Keys and logs in a dict; namespaces of one store share it. Lost on exit."""

    def __init__(self, url: str = "memory://", ns: str = "default", *, _data: _Data | None = None):
        self.url = url
        self.ns = ns
        self._data = _data if _data is not None else _Data()

    def namespace(self, ns: str) -> MemoryStore:
        return MemoryStore(self.url, check_key(ns, "namespace"), _data=self._data)

    def _live(self, key: str) -> tuple[bytes, int, float | None] | None:
        entry = self._data.kv.get((self.ns, key))
        if entry is not None and entry[2] is not None and entry[2] <= time.time():
            del self._data.kv[(self.ns, key)]
            return None
        return entry

    async def get(self, key: str) -> tuple[bytes, int] | None:
        entry = self._live(check_key(key))
        return None if entry is None else (entry[0], entry[1])

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        ttl: float | None = None,
    ) -> int:
        check_key(key)
        value = check_value(value)
        check_ttl(ttl)
        entry = self._live(key)
        current = 0 if entry is None else entry[1]
        if expect_version is not None and expect_version != current:
            raise conflict(self.ns, key, expect_version, current)
        self._data.kv[(self.ns, key)] = (value, current + 1, expiry(ttl))
        return current + 1

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        entry = self._live(check_key(key))
        current = 0 if entry is None else entry[1]
        if expect_version is not None and expect_version != current:
            raise conflict(self.ns, key, expect_version, current)
        return self._data.kv.pop((self.ns, key), None) is not None

    async def list(self, prefix: str = "") -> builtins.list[str]:
        ns = self.ns
        keys = [k for (n, k) in list(self._data.kv) if n == ns and k.startswith(prefix)]
        return sorted(k for k in keys if self._live(k) is not None)

    async def append(self, log: str, record: bytes) -> int:
        entry = self._data.logs.setdefault((self.ns, check_key(log, "log name")), _Log())
        entry.last += 1
        entry.records[entry.last] = check_value(record)
        return entry.last

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        entry = self._data.logs.get((self.ns, check_key(log, "log name")))
        if entry is None:
            return []
        return [(s, r) for s, r in sorted(entry.records.items()) if s > after]

    async def last_seq(self, log: str) -> int:
        entry = self._data.logs.get((self.ns, check_key(log, "log name")))
        return entry.last if entry is not None else 0

    async def trim_log(self, log: str, upto: int) -> None:
        entry = self._data.logs.get((self.ns, check_key(log, "log name")))
        if entry is not None:
            for s in [s for s in entry.records if s <= upto]:
                del entry.records[s]

    async def delete_log(self, log: str) -> None:
        self._data.logs.pop((self.ns, check_key(log, "log name")), None)

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        ns = self.ns
        return sorted(n for (s, n) in self._data.logs if s == ns and n.startswith(prefix))

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryStore(ns={self.ns!r})"
