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
