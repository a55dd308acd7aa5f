"""Actor dispatch: the native Scheduler against one asyncio Task + asyncio.Queue per actor.

Both sides run the same handler in the same process on a fresh event loop;
throughput is messages handled per second from the first send to the last
handler call, median of several runs. Memory is the RSS growth per idle actor
(each has handled one message and is waiting for the next), measured in a fresh
interpreter per side so that one does not reuse the other's freed memory.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from _util import Row, print_table

from openheim._core import Scheduler

ACTORS, MSGS = 1000, 100  # 100k messages per run
THREADS = 4


class _Count:
    """The shared handler: counts messages and wakes the waiter after the last one."""

    def __init__(self, total: int, done: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.n, self.total, self.done, self.loop = 0, total, done, loop

    def __call__(self, msg: object) -> None:
        self.n += 1
        if self.n == self.total:
            self.done.set()

    async def async_handler(self, msg: object) -> None:
        self(msg)


# Far beyond a run's time even on a loaded machine: past it, messages were lost.
WAIT_LIMIT = float(os.environ.get("BENCH_SCHED_WAIT_LIMIT", "120"))


async def _wait_all(done: asyncio.Event, count: _Count, who: str) -> None:
    """Wait for the last message; fail, naming how many were handled, instead of hanging."""
    try:
        await asyncio.wait_for(done.wait(), WAIT_LIMIT)
    except asyncio.TimeoutError:
        raise RuntimeError(
            f"{who}: only {count.n:,} of {count.total:,} messages were handled after "
            f"{WAIT_LIMIT:g} s; the rest were lost or never woke their actor"
        ) from None


def _run_loop(main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    return asyncio.run(main())


# ---- openheim -------------------------------------------------------------------------


def _ours(asynchronous: bool = False, from_threads: bool = False) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = _Count(ACTORS * MSGS, done, loop)
        sched = Scheduler()
        handler = count.async_handler if asynchronous else count
        actors = [sched.spawn(handler) for _ in range(ACTORS)]
        t0 = time.perf_counter()
        if from_threads:
            await asyncio.gather(
                *(asyncio.to_thread(_send_ours, actors, t) for t in range(THREADS))
            )
        else:
            for m in range(MSGS):
                for a in actors:
                    a.send(m)
        await _wait_all(done, count, "openheim Scheduler")
        dt = time.perf_counter() - t0
        await sched.aclose()
        return ACTORS * MSGS / dt

    return _run_loop(main)


def _send_ours(actors: list[Any], t: int) -> None:
    for m in range(t, MSGS, THREADS):
        for a in actors:
            a.send(m)


# ---- asyncio baseline ----------------------------------------------------------------


async def _worker(q: asyncio.Queue[object], handler: Callable[[object], Any], aw: bool) -> None:
    while True:
        msg = await q.get()
        if aw:
            await handler(msg)
        else:
            handler(msg)


def _baseline(asynchronous: bool = False, from_threads: bool = False) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = _Count(ACTORS * MSGS, done, loop)
        handler = count.async_handler if asynchronous else count
        queues: list[asyncio.Queue[object]] = [asyncio.Queue() for _ in range(ACTORS)]
        tasks = [asyncio.create_task(_worker(q, handler, asynchronous)) for q in queues]
        await asyncio.sleep(0)  # every worker parked in q.get(), as an idle actor would be
        t0 = time.perf_counter()
        if from_threads:
            await asyncio.gather(
                *(asyncio.to_thread(_send_base, loop, queues, t) for t in range(THREADS))
            )
        else:
            for m in range(MSGS):
                for q in queues:
                    q.put_nowait(m)
        await _wait_all(done, count, "Task+Queue baseline")
        dt = time.perf_counter() - t0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return ACTORS * MSGS / dt

    return _run_loop(main)


def _send_base(loop: asyncio.AbstractEventLoop, queues: list[Any], t: int) -> None:
    # asyncio.Queue is not thread-safe: the conventional way in is one
    # call_soon_threadsafe per message.
    for m in range(t, MSGS, THREADS):
        for q in queues:
            loop.call_soon_threadsafe(q.put_nowait, m)


# ---- memory per idle actor --------------------------------------------------------------

_MEM_CODE = """
import asyncio, gc, sys
N = {n}
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
async def worker(q, h):
    while True:
        h(await q.get())
async def main():
    from openheim._core import Scheduler
    handled = []
    h = handled.append
    keep = []
    sched = Scheduler()
    loop = asyncio.get_running_loop()
    for _ in range(3):  # warm up the allocator and the loop on a small scale
        await asyncio.sleep(0)
    gc.collect()
    before = rss()
    if "{kind}" == "ours-fresh":
        keep = [sched.spawn(h) for _ in range(N)]
        handled.extend(range(N))
    elif "{kind}" == "ours":
        # Messages arrive in waves, as they do in a running system: at any time
        # only a wave's worth of actors holds a mailbox.
        keep = [sched.spawn(h) for _ in range(N)]
        for i in range(0, N, 1000):
            for a in keep[i : i + 1000]:
                a.send(0)
            await sched.wait_idle()
    else:
        for _ in range(N):
            q = asyncio.Queue()
            keep.append((q, loop.create_task(worker(q, h))))
        await asyncio.sleep(0)
        for q, _ in keep:
            q.put_nowait(0)
        for _ in range(3):
            await asyncio.sleep(0)
    assert len(handled) == N
    handled.clear()
    gc.collect()
    print((rss() - before) / N)
    sys.stdout.flush()
    import os
    os._exit(0)  # skip teardown: only the measurement matters
asyncio.run(main())
"""


def _mem_per_actor(kind: str, n: int = 100_000) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEM_CODE.format(n=n, kind=kind)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


# ---- run --------------------------------------------------------------------------------


def _interleaved(
    ours: Callable[[], float], base: Callable[[], float], repeat: int
) -> tuple[float, float]:
    o, b = [], []
    for _ in range(repeat):  # interleaved so machine noise hits both alike
        o.append(ours())
        b.append(base())
    return statistics.median(o), statistics.median(b)


def run(repeat: int = 5) -> list[Row]:
    label = f"{ACTORS} actors × {MSGS} msgs"
    rows = []
    o, b = _interleaved(_ours, _baseline, repeat)
    rows.append(
        Row(f"dispatch, sync handler ({label})", o / 1e3, b / 1e3, "k/s", "Task+Queue", target=2.0)
    )
    o, b = _interleaved(
        lambda: _ours(asynchronous=True), lambda: _baseline(asynchronous=True), repeat
    )
    rows.append(
        Row(f"dispatch, async handler ({label})", o / 1e3, b / 1e3, "k/s", "Task+Queue", target=1.2)
    )
    o, b = _interleaved(
        lambda: _ours(from_threads=True), lambda: _baseline(from_threads=True), repeat
    )
    rows.append(
        Row(
            f"dispatch, {THREADS} sender threads (sync handler)",
            o / 1e3,
            b / 1e3,
            "k/s",
            "Task+Queue+call_soon_threadsafe",
            target=2.0,
        )
    )
    mb = statistics.median(_mem_per_actor("asyncio") for _ in range(3))
    mo = statistics.median(_mem_per_actor("ours") for _ in range(3))
    rows.append(
        Row(
            "memory per idle actor, after 1 msg (100k, RSS)",
            mo,
            mb,
            "B",
            "Task+Queue",
            False,
            target=4.0,
        )
    )
    mo = statistics.median(_mem_per_actor("ours-fresh") for _ in range(3))
    rows.append(
        Row(
            "memory per idle actor, never sent to (100k, RSS)",
            mo,
            mb,
            "B",
            "Task+Queue",
            False,
            target=4.0,
        )
    )
    return rows


if __name__ == "__main__":
    print_table("actor scheduler (msgs/s: higher is better; memory: lower is better)", run())
