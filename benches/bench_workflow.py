"""Workflow engine against LangGraph, side by side in one run (medians of repeats).

(a) Engine overhead: a 3-node chain of no-op steps, invoked over and over in
one process with no checkpointer on either side. openheim: ``await
wf.run()``; LangGraph: the same graph compiled, the faster of ``invoke`` and
``ainvoke`` (its best case).

(b) Fan-out of 10 and a join: openheim's map node over a 10-item list (a
no-op per item, results joined into a list field) and a join step, against
LangGraph sending 10 ``Send`` packets to a worker node whose results a
reducer gathers, then a join node. Again the faster of LangGraph's two calls.

(c) The 3-node chain with a durable checkpoint per step on SQLite (WAL,
fsync at every commit on both sides): openheim's ``store="sqlite:///..."``
against LangGraph's ``SqliteSaver`` (synchronous) and ``AsyncSqliteSaver``;
one run at a time, and 64 at once. LangGraph's baseline at 64 is its best of
the sync saver one at a time and the async saver 64 at once.

(d) 10,000 workflows in flight at once in one event loop, each a 3-node chain
whose middle step waits 50 ms (a simulated model call): the time beyond the
50 ms until all are done, and the memory per in-flight workflow (tracemalloc,
measured while all 10,000 wait; it includes the Task each run is gathered
in). LangGraph runs the same 10,000 with ``ainvoke``.

LangGraph is a benchmark-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from typing import Any

from _util import Row

from openheim.bench import cases

CHAIN_RUNS = 3000
FANOUT_RUNS = 1000
DURABLE_RUNS = 256
CONCURRENCY = 64
FLIGHT = 10_000
WAIT = 0.05
REPEAT = 5


# -- openheim (the builders `openheim bench overhead` uses: openheim.bench.cases) ----------

_oh_chain = cases.oh_chain
_oh_fanout = cases.oh_fanout


async def _oh_per_run(wf: Any, runs: int, inp: Any = None) -> float:
    await wf.run(inp)
    t0 = time.perf_counter()
    for _ in range(runs):
        await wf.run(inp)
    return (time.perf_counter() - t0) / runs


async def _oh_durable_rate(path: str, concurrency: int, runs: int) -> float:
    wf = _oh_chain(store=f"sqlite://{path}")
    await wf.run()
    counter = iter(range(runs))

    async def worker() -> None:
        for _ in counter:
            res = await wf.run()
            assert res.status == "done"

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await wf.aclose()
    return runs / elapsed


async def _flight(run: Any, n: int, measure_memory: bool) -> tuple[float, float]:
    """Start n runs at once; (seconds until all done, bytes per run while all wait)."""
    per_run = 0.0
    if measure_memory:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(run()) for _ in range(n)]
    if measure_memory:
        await asyncio.sleep(WAIT / 2)  # every run is inside its waiting step now
        per_run = (tracemalloc.get_traced_memory()[0] - base) / n
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    if measure_memory:
        tracemalloc.stop()
    return elapsed, per_run


# -- LangGraph (the same graphs, from openheim.bench.cases) -------------------------------

_lg_chain = cases.lg_chain
_lg_fanout = cases.lg_fanout


def _lg_per_run(app: Any, runs: int, inp: Any) -> float:
    """LangGraph's best of invoke and ainvoke, seconds per run."""
    app.invoke(inp)
    t0 = time.perf_counter()
    for _ in range(runs):
        app.invoke(inp)
    sync = (time.perf_counter() - t0) / runs

    async def go() -> float:
        await app.ainvoke(inp)
        t0 = time.perf_counter()
        for _ in range(runs):
            await app.ainvoke(inp)
        return (time.perf_counter() - t0) / runs

    return min(sync, asyncio.run(go()))


def _lg_durable_sync_rate(path: str, runs: int) -> float:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    app = _lg_chain(SqliteSaver(conn))
    app.invoke({"x": 0}, {"configurable": {"thread_id": "warm"}})
    t0 = time.perf_counter()
    for i in range(runs):
        app.invoke({"x": 0}, {"configurable": {"thread_id": f"t{i}"}})
    elapsed = time.perf_counter() - t0
    conn.close()
    return runs / elapsed


async def _lg_durable_async_rate(path: str, concurrency: int, runs: int) -> float:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(path) as conn:
        app = _lg_chain(AsyncSqliteSaver(conn))
        await app.ainvoke({"x": 0}, {"configurable": {"thread_id": "warm"}})
        counter = iter(range(runs))

        async def worker() -> None:
            for i in counter:
                await app.ainvoke({"x": 0}, {"configurable": {"thread_id": f"t{i}"}})

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs / (time.perf_counter() - t0)


# -- the table -------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def run() -> list[Row]:
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError:
        print(
            "bench_workflow: LangGraph is not installed, so there is no baseline to compare "
            "with; install it with `pip install -e '.[bench]'`"
        )
        return []
    rows: list[Row] = []

    # (a) chain overhead
    oh_chain = _oh_chain()
    lg_chain = _lg_chain()
    ours = [asyncio.run(_oh_per_run(oh_chain, CHAIN_RUNS)) for _ in range(REPEAT)]
    theirs = [_lg_per_run(lg_chain, CHAIN_RUNS // 10, {"x": 0}) for _ in range(REPEAT)]
    rows.append(
        Row(
            "3-node no-op chain, per run",
            _median(ours) * 1e6,
            _median(theirs) * 1e6,
            "µs",
            "LangGraph same graph",
            higher_is_better=False,
            target=30,
        )
    )

    # (b) fan-out 10 + join
    items = {"items": list(range(10))}
    oh_fan = _oh_fanout()
    ours = [asyncio.run(_oh_per_run(oh_fan, FANOUT_RUNS, items)) for _ in range(REPEAT)]
    lg_items = {"items": list(range(10)), "results": [], "joined": 0}
    theirs = [_lg_per_run(_lg_fanout(), FANOUT_RUNS // 20, lg_items) for _ in range(REPEAT)]
    rows.append(
        Row(
            "fan-out 10 + join, per run",
            _median(ours) * 1e6,
            _median(theirs) * 1e6,
            "µs",
            "LangGraph Send + reducer",
            higher_is_better=False,
            target=30,
        )
    )

    # (c) durable chain on SQLite
    tmp = tempfile.mkdtemp(prefix="openheim-bench-wf-")
    try:
        ours64, ours1, lg_sync, lg_async = [], [], [], []
        for rep in range(3):
            p = os.path.join(tmp, f"{rep}")
            ours64.append(asyncio.run(_oh_durable_rate(p + "oh64.db", CONCURRENCY, DURABLE_RUNS)))
            ours1.append(asyncio.run(_oh_durable_rate(p + "oh1.db", 1, DURABLE_RUNS // 4)))
            lg_sync.append(_lg_durable_sync_rate(p + "lgs.db", DURABLE_RUNS // 4))
            lg_async.append(
                asyncio.run(_lg_durable_async_rate(p + "lga.db", CONCURRENCY, DURABLE_RUNS // 2))
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lg_best = max(_median(lg_sync), _median(lg_async))
    rows.append(
        Row(
            f"3-node chain, checkpoint per step, SQLite, {CONCURRENCY} at once",
            _median(ours64),
            lg_best,
            "r/s",
            "LangGraph SqliteSaver (best of sync/async)",
            target=10,
        )
    )
    rows.append(
        Row(
            "3-node chain, checkpoint per step, SQLite, 1 at a time",
            _median(ours1),
            _median(lg_sync),
            "r/s",
            "LangGraph SqliteSaver",
        )
    )

    # (d) 10,000 in flight, each waiting 50 ms
    oh_wait = _oh_chain(wait=WAIT)
    lg_wait = _lg_chain(wait=WAIT)
    ours_t = [asyncio.run(_flight(oh_wait.run, FLIGHT, False))[0] for _ in range(3)]
    ours_m = asyncio.run(_flight(oh_wait.run, FLIGHT, True))[1]
    theirs_t = [
        asyncio.run(_flight(lambda: lg_wait.ainvoke({"x": 0}), FLIGHT, False))[0] for _ in range(1)
    ]
    theirs_m = asyncio.run(_flight(lambda: lg_wait.ainvoke({"x": 0}), FLIGHT // 10, True))[1]
    rows.append(
        Row(
            f"{FLIGHT:,} in flight, 50 ms step: time beyond 50 ms",
            (_median(ours_t) - WAIT) * 1e3,
            (_median(theirs_t) - WAIT) * 1e3,
            "ms",
            "LangGraph ainvoke",
            higher_is_better=False,
            limit=500,
        )
    )

    async def bare() -> None:
        await asyncio.sleep(WAIT)

    floor_t = [asyncio.run(_flight(bare, FLIGHT, False))[0] for _ in range(3)]
    floor_m = asyncio.run(_flight(bare, FLIGHT, True))[1]
    rows.append(
        Row(
            f"{FLIGHT:,} in flight: time beyond 50 ms vs the floor",
            (_median(ours_t) - WAIT) * 1e3,
            (_median(floor_t) - WAIT) * 1e3,
            "ms",
            "bare asyncio Tasks sleeping 50 ms",
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            f"{FLIGHT:,} in flight: memory per workflow vs the floor",
            ours_m,
            floor_m,
            "B",
            "bare asyncio Task sleeping",
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            f"{FLIGHT:,} in flight: memory per workflow",
            ours_m,
            theirs_m,
            "B",
            "LangGraph ainvoke (1,000 in flight)",
            higher_is_better=False,
            limit=4096,
        )
    )
    return rows


if __name__ == "__main__":
    from _util import print_table

    print_table("workflow engine vs LangGraph", run())
