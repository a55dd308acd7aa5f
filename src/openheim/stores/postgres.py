"""``postgresql://...``: a :class:`~openheim.stores.Store` on PostgreSQL (psycopg 3, async pool).

openheim owns its tables: :data:`MIGRATIONS` lists the schema changes in
order, and opening a store applies the missing ones inside a transaction
holding an advisory lock (so two processes starting at once do not race),
recording the schema version in ``openheim_schema_version``.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, OperationalError
from psycopg_pool import AsyncConnectionPool

from openheim.errors import StorageError
from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
)

__all__ = ["MIGRATIONS", "PostgresStore"]

# Each entry moves the schema from version i to i + 1. Append; never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE openheim_kv (
      ns text NOT NULL, key text NOT NULL, value bytea NOT NULL,
      version bigint NOT NULL, expires_at timestamptz,
      PRIMARY KEY (ns, key));
    CREATE TABLE openheim_log (
      ns text NOT NULL, log text NOT NULL, seq bigint NOT NULL, record bytea NOT NULL,
      PRIMARY KEY (ns, log, seq));
    CREATE TABLE openheim_log_seq (
      ns text NOT NULL, log text NOT NULL, last bigint NOT NULL,
      PRIMARY KEY (ns, log));
    """,
]
_LOCK_ID = 0x6F70656E6865696D & 0x7FFFFFFFFFFFFFFF  # "openheim"

_LIVE = "(expires_at IS NULL OR expires_at > now())"

logger = logging.getLogger("openheim.stores.postgres")

SWEEP_EVERY = 60.0
"""Seconds between deletions of expired keys' rows (done by a write with a TTL, when due)."""
_SWEEP_ROWS = 1000  # rows deleted per sweep at most
_PURGE = (
    "DELETE FROM openheim_kv WHERE ctid IN (SELECT ctid FROM openheim_kv "
    "WHERE expires_at IS NOT NULL AND expires_at <= now() LIMIT %s) "
    "AND expires_at <= now()"
)


async def migrate(conn: AsyncConnection[Any]) -> int:
    """Bring the schema up to date; returns the schema version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS openheim_schema_version (version integer NOT NULL)"
        )
        cur = await conn.execute("SELECT max(version) FROM openheim_schema_version")
        row = await cur.fetchone()
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > len(MIGRATIONS):
            raise StorageError(
                f"the PostgreSQL schema is at version {current}, newer than this openheim "
                f"build knows ({len(MIGRATIONS)}); upgrade openheim"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute(
                "INSERT INTO openheim_schema_version (version) VALUES (%s)", (version,)
            )
    return len(MIGRATIONS)


class _Pool:
    """The connection pool, opened (and the schema migrated) on first use."""

    def __init__(self, url: str, min_size: int, max_size: int) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Any] = self._new(url, min_size, max_size)
        self.ready = False
        self.lock: asyncio.Lock | None = None
        self.next_sweep = time.monotonic() + SWEEP_EVERY

    async def connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        if not self.ready:
            if self.lock is None:
                self.lock = asyncio.Lock()
            async with self.lock:
                if not self.ready:
                    try:
                        await self.pool.open(wait=True, timeout=10)
                        async with self.pool.connection() as conn:
                            await migrate(conn)
                    except Exception as exc:
                        await self.pool.close()
                        self.pool = self._new(self.url, self.pool.min_size, self.pool.max_size)
                        raise StorageError(
                            f"cannot open the PostgreSQL store: {exc}; check the URL, that the "
                            "server is running and that the user may create tables"
                        ) from exc
                    self.ready = True
        return self._checked()

    @staticmethod
    def _new(url: str, min_size: int, max_size: int) -> AsyncConnectionPool[Any]:
        return AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
        )

    @asynccontextmanager
    async def _checked(self) -> AsyncIterator[AsyncConnection[Any]]:
        try:
            async with self.pool.connection() as conn:
                yield conn
        except OperationalError as exc:  # the connection dropped mid-operation, pool timeout
            raise StorageError(
                f"the PostgreSQL connection failed: {str(exc).strip()}; the operation may not "
                "have been applied: retry it (the pool reconnects)"
            ) from exc


class PostgresStore:
    """Keys and logs in PostgreSQL tables, through a connection pool.

    The pool opens, and the schema is created or migrated, on the first operation.
    """

    def __init__(
        self,
        url: str,
        ns: str = "default",
        *,
        min_size: int = 1,
        max_size: int = 8,
        _pool: _Pool | None = None,
    ) -> None:
        self.url = url
        self.ns = ns
        self._p = _pool if _pool is not None else _Pool(url, min_size, max_size)

    def namespace(self, ns: str) -> PostgresStore:
        return PostgresStore(self.url, check_key(ns, "namespace"), _pool=self._p)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with await self._p.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _read(self, sql: str, params: tuple[Any, ...], *, one: bool = False) -> Any:
        """A read-only query, tried again on connections the server dropped (a restart,
        pg_terminate_backend, an idle timeout): the pool discards each dead one, so at
        most every pooled connection plus a fresh one is tried.

        Writes are not retried: one that failed mid-statement may have been applied.
        """
        attempts = self._p.pool.max_size + 1
        for attempt in range(attempts):
            try:
                async with await self._p.connection() as conn:
                    cur = await conn.execute(sql, params)
                    return await cur.fetchone() if one else await cur.fetchall()
            except StorageError as exc:
                if attempt == attempts - 1 or not isinstance(exc.__cause__, OperationalError):
                    raise
        raise AssertionError("unreachable")

    async def get(self, key: str) -> tuple[bytes, int] | None:
        row = await self._read(
            f"SELECT value, version FROM openheim_kv WHERE ns=%s AND key=%s AND {_LIVE}",
            (self.ns, check_key(key)),
            one=True,
        )
        return None if row is None else (bytes(row[0]), int(row[1]))

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
        ns = self.ns
        expires = "now() + %s::float8 * interval '1 second'"
        # Each case is one statement, atomic on the server (the upsert locks the row).
        if expect_version is None:
            sql = (
                "INSERT INTO openheim_kv AS kv (ns, key, value, version, expires_at) "
                f"VALUES (%s, %s, %s, 1, {expires}) ON CONFLICT (ns, key) DO UPDATE SET "
                "value=excluded.value, expires_at=excluded.expires_at, version=CASE WHEN "
                "kv.expires_at IS NULL OR kv.expires_at > now() THEN kv.version + 1 ELSE 1 END "
                "RETURNING version"
            )
            params: tuple[object, ...] = (ns, key, value, ttl)
        elif expect_version == 0:
            # Create only: an expired row counts as absent and is replaced.
            sql = (
                "INSERT INTO openheim_kv AS kv (ns, key, value, version, expires_at) "
                f"VALUES (%s, %s, %s, 1, {expires}) ON CONFLICT (ns, key) DO UPDATE SET "
                "value=excluded.value, expires_at=excluded.expires_at, version=1 "
                "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= now() RETURNING version"
            )
            params = (ns, key, value, ttl)
        else:
            sql = (
                f"UPDATE openheim_kv SET value=%s, version=version + 1, expires_at={expires} "
                f"WHERE ns=%s AND key=%s AND version=%s AND {_LIVE} RETURNING version"
            )
            params = (value, ttl, ns, key, expect_version)
        row = await self._one(sql, params)
        if ttl is not None and time.monotonic() >= self._p.next_sweep:
            await self._sweep()
        if row is None:
            assert expect_version is not None
            raise conflict(ns, key, expect_version, await self._version(key))
        return int(row[0])

    async def _sweep(self) -> None:
        self._p.next_sweep = time.monotonic() + SWEEP_EVERY
        try:
            async with await self._p.connection() as conn:
                await conn.execute(_PURGE, (_SWEEP_ROWS,))
        except Exception:  # reads hide expired rows anyway: the next sweep tries again
            logger.warning("PostgreSQL store: deleting expired keys failed", exc_info=True)

    async def sweep_expired(self) -> int:
        """Delete the rows of expired keys now (every namespace; a write with a TTL also
        does it every :data:`SWEEP_EVERY` seconds); how many were deleted."""
        total = 0
        async with await self._p.connection() as conn:
            while True:
                cur = await conn.execute(_PURGE, (_SWEEP_ROWS,))
                if cur.rowcount <= 0:
                    return total
                total += cur.rowcount

    async def _version(self, key: str) -> int:
        row = await self._read(
            f"SELECT version FROM openheim_kv WHERE ns=%s AND key=%s AND {_LIVE}",
            (self.ns, key),
            one=True,
        )
        return 0 if row is None else int(row[0])

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        check_key(key)
        ns = self.ns
        if expect_version is None:
            row = await self._one(
                f"DELETE FROM openheim_kv WHERE ns=%s AND key=%s RETURNING {_LIVE}", (ns, key)
            )
            return row is not None and bool(row[0])
        if expect_version == 0:
            if await self._version(key):
                raise conflict(ns, key, 0, await self._version(key))
            await self._one(
                f"DELETE FROM openheim_kv WHERE ns=%s AND key=%s AND NOT {_LIVE} RETURNING 1",
                (ns, key),
            )
            return False
        row = await self._one(
            f"DELETE FROM openheim_kv WHERE ns=%s AND key=%s AND version=%s AND {_LIVE} "
            "RETURNING 1",
            (ns, key, expect_version),
        )
        if row is None:
            raise conflict(ns, key, expect_version, await self._version(key))
        return True

    async def list(self, prefix: str = "") -> builtins.list[str]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._read(
            f"SELECT key FROM openheim_kv WHERE ns=%s AND key LIKE %s AND {_LIVE} ORDER BY key",
            (self.ns, like),
        )
        return sorted(r[0] for r in rows)

    async def append(self, log: str, record: bytes) -> int:
        check_key(log, "log name")
        record = check_value(record)
        async with await self._p.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO openheim_log_seq (ns, log, last) VALUES (%s, %s, 1) "
                "ON CONFLICT (ns, log) DO UPDATE SET last = openheim_log_seq.last + 1 "
                "RETURNING last",
                (self.ns, log),
            )
            row = await cur.fetchone()
            assert row is not None
            seq = int(row[0])
            await conn.execute(
                "INSERT INTO openheim_log (ns, log, seq, record) VALUES (%s, %s, %s, %s)",
                (self.ns, log, seq, record),
            )
            return seq

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        check_key(log, "log name")
        rows = await self._read(
            "SELECT seq, record FROM openheim_log WHERE ns=%s AND log=%s AND seq>%s ORDER BY seq",
            (self.ns, log, after),
        )
        return [(int(s), bytes(r)) for s, r in rows]

    async def last_seq(self, log: str) -> int:
        check_key(log, "log name")
        row = await self._read(
            "SELECT last FROM openheim_log_seq WHERE ns=%s AND log=%s", (self.ns, log), one=True
        )
        return int(row[0]) if row is not None else 0

    async def trim_log(self, log: str, upto: int) -> None:
        check_key(log, "log name")
        async with await self._p.connection() as conn:
            await conn.execute(
                "DELETE FROM openheim_log WHERE ns=%s AND log=%s AND seq<=%s",
                (self.ns, log, upto),
            )

    async def delete_log(self, log: str) -> None:
        check_key(log, "log name")
        async with await self._p.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM openheim_log WHERE ns=%s AND log=%s", (self.ns, log))
            await conn.execute(
                "DELETE FROM openheim_log_seq WHERE ns=%s AND log=%s", (self.ns, log)
            )

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self._read(
            "SELECT log FROM openheim_log_seq WHERE ns=%s AND log LIKE %s ORDER BY log",
            (self.ns, like),
        )
        return sorted(r[0] for r in rows)

    async def aclose(self) -> None:
        await self._p.pool.close()
        self._p.ready = False

    def __repr__(self) -> str:
        return f"PostgresStore(ns={self.ns!r})"
