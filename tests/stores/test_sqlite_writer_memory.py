"""The SQLite store's writer thread keeps nothing it wrote: between batches it waits
for the next job holding no key or value of the last batch."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from pathlib import Path

from openheim.stores import open_store

MB = 1 << 20


async def test_the_writer_thread_keeps_no_value_it_wrote(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    try:
        await store.put("warm", b"x")  # the thread and its connection exist
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            values = [os.urandom(MB) for _ in range(8)]
            await asyncio.gather(*(store.put(f"k{i}", v) for i, v in enumerate(values)))
            del values
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert kept < MB // 2, f"{kept} bytes still held after the writes"
        assert await store.get("k7") is not None  # and they were written
    finally:
        await store.aclose()
