"""Mailbox throughput against the standard library, side by side in one process.

- one event loop, producer task -> consumer task: Mailbox vs asyncio.Queue(1024)
- producer threads -> event loop: Mailbox vs call_soon_threadsafe feeding an
  asyncio.Queue, and vs queue.Queue drained through the default executor
- thread -> thread: Mailbox vs queue.Queue(1024)
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from _util import Row, median_of, print_table

from openheim import Mailbox

MAXSIZE = 1024


# ---- one event loop ----------------------------------------------------------


def _loop_pair(make: Callable[[], object], n: int, batched: bool = False) -> float:
    async def main() -> float:
        q = make()

        async def produce() -> None:
            put = q.put  # type: ignore[attr-defined]
            for i in range(n):
                await put(i)

        async def consume() -> None:
            get = q.get  # type: ignore[attr-defined]
            if batched:
                got = 0
                while got < n:
                    await get()
                    got += 1 + len(q.get_many(MAXSIZE))  # type: ignore[attr-defined]
            else:
                for _ in range(n):
                    await get()

        t0 = time.perf_counter()
        await asyncio.gather(produce(), consume())
        return n / (time.perf_counter() - t0)

    return asyncio.run(main())


# ---- threads -> event loop -----------------------------------------------------


def _thread_to_loop_mailbox(n: int, producers: int = 2, batched: bool = True) -> float:
    async def main() -> float:
        box: Mailbox[int] = Mailbox(MAXSIZE)
        per = n // producers

        def produce() -> None:
            put = box.put_blocking
            for i in range(per):
                put(i)

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        got, total = 0, per * producers
        while got < total:
            await box.get()
            got += 1
            if batched:
                got += len(box.get_many(MAXSIZE))
        rate = total / (time.perf_counter() - t0)
        for t in threads:
            t.join()
        return rate

    return asyncio.run(main())


def _thread_to_loop_call_soon(n: int, producers: int = 2) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[int] = asyncio.Queue()
        per = n // producers

        def produce() -> None:
            cs = loop.call_soon_threadsafe
            put = q.put_nowait
            for i in range(per):
                cs(put, i)

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for _ in range(per * producers):
            await q.get()
        rate = per * producers / (time.perf_counter() - t0)
        for t in threads:
            t.join()
        return rate

    return asyncio.run(main())


def _thread_to_loop_queue(n: int, producers: int = 2) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        q: queue.Queue[int] = queue.Queue(MAXSIZE)
        per = n // producers

        def produce() -> None:
            for i in range(per):
                q.put(i)

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for _ in range(per * producers):
            await loop.run_in_executor(None, q.get)
        rate = per * producers / (time.perf_counter() - t0)
        for t in threads:
            t.join()
        return rate

    return asyncio.run(main())


# ---- thread -> thread ------------------------------------------------------------


def _thread_pair(put: Callable[[int], None], get: Callable[[], object], n: int) -> float:
    def produce() -> None:
        for i in range(n):
            put(i)

    t = threading.Thread(target=produce)
    t0 = time.perf_counter()
    t.start()
    for _ in range(n):
        get()
    rate = n / (time.perf_counter() - t0)
    t.join()
    return rate


def _tt_mailbox(n: int) -> float:
    box: Mailbox[int] = Mailbox(MAXSIZE)
    return _thread_pair(box.put_blocking, box.get_blocking, n)


def _tt_queue(n: int) -> float:
    q: queue.Queue[int] = queue.Queue(MAXSIZE)
    return _thread_pair(q.put, q.get, n)


def run(repeat: int = 5, n: int = 1_000_000) -> list[Row]:
    rows = []
    aq = median_of(lambda: _loop_pair(lambda: asyncio.Queue(MAXSIZE), n), repeat)
    mb = median_of(lambda: _loop_pair(lambda: Mailbox(MAXSIZE), n), repeat)
    mbb = median_of(lambda: _loop_pair(lambda: Mailbox(MAXSIZE), n, batched=True), repeat)
    rows.append(
        Row(
            "loop: await put/get, 1M msgs",
            mb / 1e6,
            aq / 1e6,
            "M/s",
            "asyncio.Queue(1024)",
            target=3,
        )
    )
    rows.append(
        Row(
            "loop: await put / get+get_many, 1M",
            mbb / 1e6,
            aq / 1e6,
            "M/s",
            "asyncio.Queue(1024)",
            target=3,
        )
    )

    m = n // 4
    tl_mb = median_of(lambda: _thread_to_loop_mailbox(m), repeat)
    tl_cs = median_of(lambda: _thread_to_loop_call_soon(m), repeat)
    tl_q = median_of(lambda: _thread_to_loop_queue(m // 10), 3)
    rows.append(
        Row(
            "2 threads -> loop",
            tl_mb / 1e6,
            tl_cs / 1e6,
            "M/s",
            "call_soon_threadsafe+asyncio.Queue",
            target=5,
        )
    )
    rows.append(
        Row(
            "2 threads -> loop",
            tl_mb / 1e6,
            tl_q / 1e6,
            "M/s",
            "queue.Queue via run_in_executor",
            target=5,
        )
    )

    tt_mb = median_of(lambda: _tt_mailbox(m), repeat)
    tt_q = median_of(lambda: _tt_queue(m), repeat)
    rows.append(
        Row("thread -> thread", tt_mb / 1e6, tt_q / 1e6, "M/s", "queue.Queue(1024)", target=5)
    )
    return rows


if __name__ == "__main__":
    print_table("Mailbox throughput (higher is better)", run())
