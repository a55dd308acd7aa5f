"""bench_state on pytest-benchmark: checkpointed agent runs against LangGraph's SqliteSaver.

Both sides at the same concurrency, each with its ratio: 64 runs at once
(openheim's store groups the fsyncs; LangGraph's ``AsyncSqliteSaver`` with
64 ``ainvoke``) and one at a time (LangGraph's synchronous ``SqliteSaver``).
Stored bytes stay in the script (not a time).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _pb import LANGGRAPH_SKIP, Pair, db_paths, params, run_side
from bench_state import CONCURRENCY, _langgraph_concurrent_rate, _langgraph_rate, _openheim_rate

RUNS = 400  # as in the script: at 64 at once, a few runs per worker are mostly start-up
SKIP = LANGGRAPH_SKIP

_db = db_paths("oh-pb-state-")


def _inverse(rate: Any) -> Any:
    return lambda: 1.0 / rate()  # the script returns runs/s


PAIRS = [
    Pair(
        "state_checkpointed_64",
        f"3-step checkpointed run, fsync, {CONCURRENCY} at once",
        _inverse(lambda: asyncio.run(_openheim_rate(_db(), CONCURRENCY, RUNS))),
        _inverse(lambda: asyncio.run(_langgraph_concurrent_rate(_db(), CONCURRENCY, RUNS // 2))),
        f"LangGraph AsyncSqliteSaver, {CONCURRENCY} ainvoke at once",
        unit="run",
        target=10.0,
        rounds=3,
        skip_base=SKIP,
    ),
    Pair(
        "state_checkpointed_1",
        "3-step checkpointed run, fsync, one at a time",
        _inverse(lambda: asyncio.run(_openheim_rate(_db(), 1, RUNS // 4))),
        _inverse(lambda: _langgraph_rate(_db(), RUNS // 4)),
        "LangGraph SqliteSaver, one invoke at a time",
        unit="run",
        rounds=3,
        skip_base=SKIP,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_state(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
