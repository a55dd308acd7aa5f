"""The example that ``make run`` runs.

Until the agent layer lands this is a smoke example of the compiled core:
worker threads hand results to a coroutine through a native Mailbox, with
the GIL released while they wait.
"""

from __future__ import annotations

import asyncio
import threading

from openheim import Mailbox, __version__


def _worker(box: Mailbox[tuple[int, int]], wid: int, jobs: int) -> None:
    for n in range(jobs):
        box.put_blocking((wid, n * n))


async def _collect(box: Mailbox[tuple[int, int]], expected: int) -> dict[int, int]:
    totals: dict[int, int] = {}
    for _ in range(expected):
        wid, value = await box.get()
        totals[wid] = totals.get(wid, 0) + value
    return totals


def main(prompt: str | None = None) -> int:
    workers, jobs = 4, 10_000
    box: Mailbox[tuple[int, int]] = Mailbox(256)
    threads = [threading.Thread(target=_worker, args=(box, w, jobs)) for w in range(workers)]
    for t in threads:
        t.start()
    totals = asyncio.run(_collect(box, workers * jobs))
    for t in threads:
        t.join()
    expected = sum(n * n for n in range(jobs))
    ok = all(totals[w] == expected for w in range(workers))
    print(f"openheim {__version__}: core smoke example")
    print(f"  {workers} threads sent {workers * jobs} results through a native Mailbox(256)")
    print(f"  the event loop received them all: {'yes' if ok else 'NO'}")
    return 0 if ok else 1
