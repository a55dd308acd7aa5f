"""Durable state: checkpointed agent runs against LangGraph's SqliteSaver, and stored bytes.

(a) A 3-step agent run (ScriptedModel: two tool calls, then an answer),
checkpointed at the start, after every model turn and after every tool
result, into the SQLite store (WAL, synchronous=FULL: fsync at every commit),
its messages added to a session at the end. Against LangGraph compiling a
3-node graph with a checkpoint per step (also fsynced by SQLite's defaults),
invoked per thread id. Both sides at the same concurrency, each with its
ratio: 64 runs at once (openheim: the store's writer thread commits the
checkpoints that queue up during one fsync together, and each run continues
only once its own checkpoint is durable; LangGraph: ``AsyncSqliteSaver``,
64 ``ainvoke`` at once, its way to run concurrently), and one at a time
(LangGraph: the synchronous ``SqliteSaver``). The agent and the graph are
the ones ``openheim bench overhead`` measures (``openheim.bench.cases``).

(b) Bytes stored after 200 turns, against the msgspec-msgpack bytes of the
messages themselves: a session of 200 runs (the session record plus any
checkpoint rows), and one run of 200 checkpointed turns (its checkpoint log,
deltas compacted into snapshots).

LangGraph is a benchmark-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from typing import Any

from _util import Row

RUNS = 400
CONCURRENCY = 64


def _agent(store: Any) -> Any:
    from openheim.bench.cases import checkpointed_agent

    return checkpointed_agent(store)


async def _openheim_rate(path: str, concurrency: int, runs: int) -> float:
    from openheim.stores import open_store

    store = open_store(f"sqlite://{path}")
    agent = _agent(store)
    counter = iter(range(runs))

    async def worker(w: int) -> None:
        for i in counter:
            result = await agent.run("question", session=f"s{w}-{i % 4}")
            assert result.output == "the answer"

    await agent.run("warm-up", session="warm")
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - t0
    assert await store.list_logs() == []
    await store.aclose()
    return runs / elapsed


def _langgraph_rate(path: str, runs: int) -> float:
    """LangGraph one run at a time: the synchronous SqliteSaver."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from openheim.bench.cases import lg_checkpointed_graph

    conn = sqlite3.connect(path, check_same_thread=False)
    app = lg_checkpointed_graph(SqliteSaver(conn))
    app.invoke({"messages": ["warm-up"]}, {"configurable": {"thread_id": "warm"}})
    t0 = time.perf_counter()
    for i in range(runs):
        out = app.invoke({"messages": ["question"]}, {"configurable": {"thread_id": f"t{i % 64}"}})
        assert len(out["messages"]) == 4
    elapsed = time.perf_counter() - t0
    conn.close()
    return runs / elapsed


async def _langgraph_concurrent_rate(path: str, concurrency: int, runs: int) -> float:
    """LangGraph ``concurrency`` runs at once: AsyncSqliteSaver and ainvoke."""
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from openheim.bench.cases import lg_checkpointed_graph

    async with aiosqlite.connect(path) as conn:
        app = lg_checkpointed_graph(AsyncSqliteSaver(conn))
        await app.ainvoke({"messages": ["warm-up"]}, {"configurable": {"thread_id": "warm"}})
        counter = iter(range(runs))

        async def worker() -> None:
            for i in counter:
                out = await app.ainvoke(
                    {"messages": ["question"]}, {"configurable": {"thread_id": f"t{i % 64}"}}
                )
                assert len(out["messages"]) == 4

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return runs / (time.perf_counter() - t0)


async def _session_bytes(path: str, turns: int) -> tuple[int, int]:
    import msgspec

    from openheim.stores import open_store

    store = open_store(f"sqlite://{path}")
    agent = _agent(store)
    for i in range(turns):
        await agent.run(f"question number {i}", session="long")
    messages = await agent.history.load("long")
    await store.aclose()
    conn = sqlite3.connect(path)
    stored = conn.execute(
        "SELECT coalesce(sum(length(value)), 0) FROM oh_kv WHERE key = 'session/long'"
    ).fetchone()[0]
    stored += conn.execute("SELECT coalesce(sum(length(record)), 0) FROM oh_log").fetchone()[0]
    conn.close()
    return stored, len(msgspec.msgpack.encode(messages))


async def _run_log_bytes(path: str, turns: int) -> tuple[int, int]:
    import msgspec

    from openheim.agent import RunState
    from openheim.messages import Message, ToolCall
    from openheim.stores import Checkpointer, open_store

    store = open_store(f"sqlite://{path}")
    ckpt = Checkpointer(store)
    state = RunState(run_id="long", agent="a", messages=[Message.user("start a long task")])
    await ckpt.save(state)
    for i in range(turns):
        call = ToolCall("lookup", {"key": f"item-{i}"}, f"call_{i}")
        state.messages.append(Message.assistant(None, [call]))
        await ckpt.save(state)
        state.messages.append(Message.tool(f"call_{i}", "lookup", f"value of item-{i}"))
        await ckpt.save(state)
    stored = await ckpt.stored_bytes("long")
    await store.aclose()
    return stored, len(msgspec.msgpack.encode(state.messages))


def run() -> list[Row]:
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError:
        print(
            "bench_state: LangGraph is not installed, so there is no baseline to compare with; "
            "install it with `pip install -e '.[bench]'` (langgraph, langgraph-checkpoint-sqlite)"
        )
        return []
    tmp = tempfile.mkdtemp(prefix="openheim-bench-state-")
    try:
        ours, ours_seq, theirs, theirs_seq = [], [], [], []
        for rep in range(3):
            ours.append(
                asyncio.run(_openheim_rate(os.path.join(tmp, f"oh{rep}.db"), CONCURRENCY, RUNS))
            )
            theirs.append(
                asyncio.run(
                    _langgraph_concurrent_rate(
                        os.path.join(tmp, f"lg{rep}.db"), CONCURRENCY, RUNS // 2
                    )
                )
            )
            ours_seq.append(
                asyncio.run(_openheim_rate(os.path.join(tmp, f"ohs{rep}.db"), 1, RUNS // 4))
            )
            theirs_seq.append(_langgraph_rate(os.path.join(tmp, f"lgs{rep}.db"), RUNS // 4))
        for xs in (ours, ours_seq, theirs, theirs_seq):
            xs.sort()
        session_stored, session_msgs = asyncio.run(
            _session_bytes(os.path.join(tmp, "session.db"), 200)
        )
        log_stored, log_msgs = asyncio.run(_run_log_bytes(os.path.join(tmp, "log.db"), 200))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        Row(
            f"3-step run, checkpointed, fsync ({CONCURRENCY} at once)",
            ours[1],
            theirs[1],
            "r/s",
            f"LangGraph AsyncSqliteSaver, {CONCURRENCY} ainvoke at once",
            target=10,
        ),
        Row(
            "3-step run, checkpointed, fsync (one at a time)",
            ours_seq[1],
            theirs_seq[1],
            "r/s",
            "LangGraph SqliteSaver, one invoke at a time",
        ),
        Row(
            "stored bytes, session of 200 runs",
            session_stored,
            session_msgs,
            "B",
            "msgpack of the messages",
            higher_is_better=False,
            limit=2 * session_msgs,
        ),
        Row(
            "stored bytes, one run of 200 turns (log)",
            log_stored,
            log_msgs,
            "B",
            "msgpack of the messages",
            higher_is_better=False,
            limit=2 * log_msgs,
        ),
    ]


if __name__ == "__main__":
    from _util import print_table

    print_table("durable state", run())
