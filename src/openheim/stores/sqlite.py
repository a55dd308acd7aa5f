"""``sqlite:///path``: the embedded default store (stdlib sqlite3, WAL, fsync on commit).

One dedicated thread owns the connection and runs every operation, so the
event loop never blocks on SQLite. Operations queued while a transaction
commits are run together in the next transaction (group commit): each
caller is answered only after the transaction holding its write has
committed with ``synchronous=FULL`` (fsync), but many concurrent writers
share one fsync.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from openheim.errors import StorageError, VersionConflictError
from openheim.stores._base import (
    LogRecord,
    check_key,
    check_ttl,
    check_value,
    conflict,
    expiry,
)

__all__ = ["DEFAULT_PATH", "SQLiteStore"]

logger = logging.getLogger("openheim.stores.sqlite")

DEFAULT_PATH = "~/.openheim/state.db"
_MAX_BATCH = 512
SWEEP_EVERY = 60.0
"""Seconds between deletions of expired keys' rows (the writer thread does it after a batch)."""
_SWEEP_ROWS = 1000  # rows deleted per sweep at most (a sweep never stalls the writes long)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oh_kv (
  ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
  version INTEGER NOT NULL, expires REAL,
  PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS oh_kv_expires ON oh_kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS oh_log (
  ns TEXT NOT NULL, log TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
  PRIMARY KEY (ns, log, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS oh_log_seq (
  ns TEXT NOT NULL, log TEXT NOT NULL, last INTEGER NOT NULL,
  PRIMARY KEY (ns, log)) WITHOUT ROWID;
"""

_Op = Callable[[sqlite3.Connection], Any]
_Job = tuple[_Op, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for fut, value, failed in results:
        if fut.done():
            continue
        if failed:
            fut.set_exception(value)
        else:
            fut.set_result(value)


class _Writer:
    """The thread that owns the connection and commits queued operations in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.closed = False
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        ready: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._main, args=(ready,), name="openheim-sqlite", daemon=True
        )
        self.thread.start()
        problem = ready.get()
        if problem is not None:
            raise problem

    def _connect(self) -> sqlite3.Connection:
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed write survives power loss.
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(
                f"cannot open the SQLite store at {self.path!r}: {exc}; check that the "
                "directory exists and is writable"
            ) from None
        return conn

    def _main(self, ready: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            ready.put(exc)
            return
        ready.put(None)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    break
                batch = [job]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._run(conn, batch)
                # Not kept alive while this thread waits for the next job: the
                # batch holds every key and value it wrote (up to _MAX_BATCH).
                job = more = None
                batch.clear()
                if time.monotonic() >= self.next_sweep:
                    self._sweep(conn)
                if stop:
                    break
        finally:
            conn.close()

    def _run(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, bool]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut, _ in batch:
                try:
                    results.append((fut, op(conn), False))
                except VersionConflictError as exc:  # raised before the op wrote anything
                    results.append((fut, exc, True))
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, or a bug: never leave a caller waiting
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = StorageError(
                f"SQLite store {self.path!r}: {exc}; the write was not saved (check the disk "
                "and that no other program holds the database locked)"
            )
            results = [(fut, error, True) for _, fut, _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        for (_, _, loop), result in zip(batch, results, strict=False):
            by_loop.setdefault(loop, []).append(result)
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is closed, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, items)

    def _sweep(self, conn: sqlite3.Connection) -> None:
        """Delete expired keys' rows (reads already ignore them), in a transaction of its own."""
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        try:
            conn.execute("BEGIN IMMEDIATE")
            purge_expired(conn)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            logger.warning(
                "SQLite store %r: deleting expired keys failed", self.path, exc_info=True
            )

    def submit(self, op: _Op) -> asyncio.Future[Any]:
        if self.closed:
            raise StorageError(f"the SQLite store {self.path!r} is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.jobs.put((op, fut, loop))
        return fut

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.jobs.put(None)
            self.thread.join()


def purge_expired(conn: sqlite3.Connection, limit: int = _SWEEP_ROWS) -> int:
    """Delete up to ``limit`` rows of keys whose TTL has passed (every namespace); how many."""
    cur = conn.execute(
        "DELETE FROM oh_kv WHERE (ns, key) IN (SELECT ns, key FROM oh_kv "
        "WHERE expires IS NOT NULL AND expires <= ? LIMIT ?)",
        (time.time(), limit),
    )
    return cur.rowcount


def _path_from_url(url: str) -> str:
    rest = url[len("sqlite://") :]
    if rest in ("", "/"):
        rest = DEFAULT_PATH
    elif rest.startswith("/~"):
        rest = rest[1:]
    return os.path.abspath(os.path.expanduser(rest))


class SQLiteStore:
    """A :class:`~openheim.stores.Store` in one SQLite file (``~/.openheim/state.db`` by default)."""

    def __init__(
        self, url: str = "sqlite://", ns: str = "default", *, _writer: _Writer | None = None
    ):
        self.url = url
        self.ns = ns
        self.path = _writer.path if _writer is not None else _path_from_url(url)
        self._writer = _writer if _writer is not None else _Writer(self.path)

    def namespace(self, ns: str) -> SQLiteStore:
        return SQLiteStore(self.url, check_key(ns, "namespace"), _writer=self._writer)

    async def get(self, key: str) -> tuple[bytes, int] | None:
        check_key(key)
        ns = self.ns

        def op(conn: sqlite3.Connection) -> tuple[bytes, int] | None:
            row = conn.execute(
                "SELECT value, version FROM oh_kv WHERE ns=? AND key=? "
                "AND (expires IS NULL OR expires > ?)",
                (ns, key, time.time()),
            ).fetchone()
            return None if row is None else (bytes(row[0]), int(row[1]))

        result: tuple[bytes, int] | None = await self._writer.submit(op)
        return result

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
        expires = expiry(ttl)

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT version, expires FROM oh_kv WHERE ns=? AND key=?", (ns, key)
            ).fetchone()
            current = 0
            if row is not None and (row[1] is None or row[1] > time.time()):
                current = int(row[0])
            if expect_version is not None and expect_version != current:
                raise conflict(ns, key, expect_version, current)
            conn.execute(
                "INSERT OR REPLACE INTO oh_kv (ns, key, value, version, expires) "
                "VALUES (?, ?, ?, ?, ?)",
                (ns, key, value, current + 1, expires),
            )
            return current + 1

        version: int = await self._writer.submit(op)
        return version

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        check_key(key)
        ns = self.ns

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT version, expires FROM oh_kv WHERE ns=? AND key=?", (ns, key)
            ).fetchone()
            live = row is not None and (row[1] is None or row[1] > time.time())
            current = int(row[0]) if live and row is not None else 0
            if expect_version is not None and expect_version != current:
                raise conflict(ns, key, expect_version, current)
            if row is not None:
                conn.execute("DELETE FROM oh_kv WHERE ns=? AND key=?", (ns, key))
            return live

        found: bool = await self._writer.submit(op)
        return found

    async def list(self, prefix: str = "") -> builtins.list[str]:
        ns = self.ns

        def op(conn: sqlite3.Connection) -> builtins.list[str]:
            # A range scan on the primary key: [prefix, prefix + U+10FFFF).
            rows = conn.execute(
                "SELECT key FROM oh_kv WHERE ns=? AND key>=? AND key<? "
                "AND (expires IS NULL OR expires > ?) ORDER BY key",
                (ns, prefix, prefix + "\U0010ffff", time.time()),
            ).fetchall()
            return [r[0] for r in rows if r[0].startswith(prefix)]

        keys: list[str] = await self._writer.submit(op)
        return keys

    async def append(self, log: str, record: bytes) -> int:
        check_key(log, "log name")
        record = check_value(record)
        ns = self.ns

        def op(conn: sqlite3.Connection) -> int:
            seq = int(
                conn.execute(
                    "INSERT INTO oh_log_seq (ns, log, last) VALUES (?, ?, 1) "
                    "ON CONFLICT (ns, log) DO UPDATE SET last = last + 1 RETURNING last",
                    (ns, log),
                ).fetchone()[0]
            )
            conn.execute(
                "INSERT INTO oh_log (ns, log, seq, record) VALUES (?, ?, ?, ?)",
                (ns, log, seq, record),
            )
            return seq

        seq: int = await self._writer.submit(op)
        return seq

    async def read_log(self, log: str, after: int = 0) -> builtins.list[LogRecord]:
        check_key(log, "log name")
        ns = self.ns

        def op(conn: sqlite3.Connection) -> builtins.list[LogRecord]:
            rows = conn.execute(
                "SELECT seq, record FROM oh_log WHERE ns=? AND log=? AND seq>? ORDER BY seq",
                (ns, log, after),
            ).fetchall()
            return [(int(s), bytes(r)) for s, r in rows]

        records: list[LogRecord] = await self._writer.submit(op)
        return records

    async def last_seq(self, log: str) -> int:
        check_key(log, "log name")
        ns = self.ns

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT last FROM oh_log_seq WHERE ns=? AND log=?", (ns, log)
            ).fetchone()
            return int(row[0]) if row is not None else 0

        last: int = await self._writer.submit(op)
        return last

    async def trim_log(self, log: str, upto: int) -> None:
        check_key(log, "log name")
        ns = self.ns
        await self._writer.submit(
            lambda conn: conn.execute(
                "DELETE FROM oh_log WHERE ns=? AND log=? AND seq<=?", (ns, log, upto)
            )
        )

    async def delete_log(self, log: str) -> None:
        check_key(log, "log name")
        ns = self.ns

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM oh_log WHERE ns=? AND log=?", (ns, log))
            conn.execute("DELETE FROM oh_log_seq WHERE ns=? AND log=?", (ns, log))

        await self._writer.submit(op)

    async def list_logs(self, prefix: str = "") -> builtins.list[str]:
        ns = self.ns

        def op(conn: sqlite3.Connection) -> builtins.list[str]:
            rows = conn.execute(
                "SELECT log FROM oh_log_seq WHERE ns=? AND log>=? AND log<? ORDER BY log",
                (ns, prefix, prefix + "\U0010ffff"),
            ).fetchall()
            return [r[0] for r in rows if r[0].startswith(prefix)]

        names: list[str] = await self._writer.submit(op)
        return names

    async def sweep_expired(self) -> int:
        """Delete the rows of expired keys now (every namespace; the writer also does it
        every :data:`SWEEP_EVERY` seconds); how many were deleted."""

        def op(conn: sqlite3.Connection) -> int:
            total = 0
            while (n := purge_expired(conn)) > 0:
                total += n
            return total

        deleted: int = await self._writer.submit(op)
        return deleted

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._writer.close)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, ns={self.ns!r})"
