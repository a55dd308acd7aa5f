"""Expired keys' rows are deleted, not only hidden: SQLite (and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from openheim.stores import sqlite as sqlite_mod
from openheim.stores.sqlite import SQLiteStore


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute("SELECT count(*) FROM oh_kv").fetchone()
    return int(n)


async def test_sqlite_sweep_deletes_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(f"sqlite:///{path}")
    other = store.namespace("other")
    try:
        for i in range(5):
            await store.put(f"gone/{i}", b"x", ttl=0.05)
            await other.put(f"gone/{i}", b"x", ttl=0.05)
        await store.put("kept/ttl", b"x", ttl=3600)
        await store.put("kept/forever", b"x")
        await asyncio.sleep(0.1)
        assert _rows(path) == 12  # hidden from reads, still rows
        assert await store.get("gone/0") is None
        assert await store.sweep_expired() == 10
        assert _rows(path) == 2
        assert await store.get("kept/ttl") is not None
        assert await store.get("kept/forever") is not None
        assert await store.sweep_expired() == 0
    finally:
        await store.aclose()


async def test_sqlite_writer_sweeps_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "SWEEP_EVERY", 0.0)
    path = tmp_path / "s.db"
    store = SQLiteStore(f"sqlite:///{path}")
    try:
        for i in range(20):
            await store.put(f"e/{i}", b"x", ttl=0.05)
        await asyncio.sleep(0.1)
        await store.put("kept", b"x")  # any write: the writer sweeps after its batch
        await store.get("kept")
        assert _rows(path) == 1
    finally:
        await store.aclose()


def _pg_url() -> str:
    import getpass
    import os

    return os.environ.get(
        "OPENHEIM_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
    )


async def _pg_rows(store: object, ns: str) -> int:
    async with await store._p.connection() as conn:  # type: ignore[attr-defined]
        cur = await conn.execute("SELECT count(*) FROM openheim_kv WHERE ns=%s", (ns,))
        row = await cur.fetchone()
    return int(row[0])


@pytest.mark.postgres
async def test_postgres_sweep_deletes_expired_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    from openheim.stores import postgres as pg_mod
    from openheim.stores.postgres import PostgresStore

    ns = f"sweep-{uuid.uuid4().hex[:12]}"
    store = PostgresStore(_pg_url(), ns)
    try:
        for i in range(5):
            await store.put(f"gone/{i}", b"x", ttl=0.05)
        await store.put("kept/ttl", b"x", ttl=3600)
        await store.put("kept/forever", b"x")
        await asyncio.sleep(0.2)
        assert await _pg_rows(store, ns) == 7  # hidden from reads, still rows
        assert await store.get("gone/0") is None
        assert await store.sweep_expired() >= 5  # (other tests' expired rows go too)
        assert await _pg_rows(store, ns) == 2
        assert await store.get("kept/ttl") is not None
        # On its own: a write with a TTL sweeps once SWEEP_EVERY has passed.
        monkeypatch.setattr(pg_mod, "SWEEP_EVERY", 0.0)
        store._p.next_sweep = 0.0
        for i in range(5):
            await store.put(f"again/{i}", b"x", ttl=0.05)
        await asyncio.sleep(0.2)
        await store.put("kept/ttl", b"y", ttl=3600)
        assert await _pg_rows(store, ns) == 2
        for key in await store.list():
            await store.delete(key)
    finally:
        await store.aclose()
