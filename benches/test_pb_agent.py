"""bench_agent on pytest-benchmark: agent runs against pydantic-ai on its TestModel.

Both entry points (``await agent.run`` and ``agent.run_sync``) with an async
tool (the sync-tool ``await`` case is ``agent_loop`` in test_pb_cases.py) and
``run_sync`` with a sync tool; 50 runs a round. The fresh-interpreter first
run is a pair too (against ``python -c pass``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import time
from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_agent import FIRST_RUN, _fresh, _openheim, _pydantic_ai

RUNS = 50
SKIP = (
    ""
    if importlib.util.find_spec("pydantic_ai")
    else "pydantic-ai is not installed (pip install -e '.[bench]')"
)


@functools.cache
def _runner(side: str, async_tool: bool) -> Any:
    return (_openheim if side == "openheim" else _pydantic_ai)(async_tool)


def _awaited(side: str, async_tool: bool) -> Any:
    def one_round() -> float:
        runner = _runner(side, async_tool)

        async def many() -> float:
            await runner()  # the loop's first run warms its thread pool
            t0 = time.perf_counter()
            for _ in range(RUNS):
                await runner()
            return (time.perf_counter() - t0) / RUNS

        return asyncio.run(many())

    return one_round


def _sync(side: str, async_tool: bool) -> Any:
    def one_round() -> float:
        run_sync = _runner(side, async_tool).sync
        # pydantic-ai's run_sync runs on the thread's current event loop, making and
        # keeping one if there is none; give both sides one for the round, and close it.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            run_sync()  # warm, outside the timing
            t0 = time.perf_counter()
            for _ in range(RUNS):
                run_sync()
            return (time.perf_counter() - t0) / RUNS
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return one_round


BASE = "pydantic-ai TestModel"
PAIRS = [
    Pair(
        "agent_await_async_tool",
        "await agent.run: tool call + answer (async tool)",
        _awaited("openheim", True),
        _awaited("peer", True),
        BASE,
        unit="run",
        target=20.0,
        skip_base=SKIP,
    ),
    Pair(
        "agent_run_sync_sync_tool",
        "agent.run_sync: tool call + answer (sync tool)",
        _sync("openheim", False),
        _sync("peer", False),
        BASE,
        unit="run",
        target=20.0,
        skip_base=SKIP,
    ),
    Pair(
        "agent_run_sync_async_tool",
        "agent.run_sync: tool call + answer (async tool)",
        _sync("openheim", True),
        _sync("peer", True),
        BASE,
        unit="run",
        target=20.0,
        skip_base=SKIP,
    ),
    Pair(
        "agent_fresh_first_run",
        "fresh interpreter → first run_sync (limit 150 ms; ratio < 1 by nature)",
        lambda: _fresh(FIRST_RUN),
        lambda: _fresh("pass"),
        "python -c pass",
        unit="process",
        rounds=7,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_agent(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
