"""bench_workflow on pytest-benchmark: the workflow engine against LangGraph.

The no-op chain and fan-out are ``workflow_chain`` / ``workflow_fanout`` in
test_pb_cases.py. Here: the chain with a durable checkpoint per step on
SQLite (64 at once, and one at a time; LangGraph's 64 is its best of the sync
saver one at a time and the async saver 64 at once, as in the script), and
2,000 workflows in flight whose middle step waits 50 ms (the time beyond the
50 ms). Memory per workflow stays in the script (not a time).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _pb import LANGGRAPH_SKIP, Pair, db_paths, params, run_side
from bench_workflow import (
    CONCURRENCY,
    WAIT,
    _flight,
    _lg_chain,
    _lg_durable_async_rate,
    _lg_durable_sync_rate,
    _oh_chain,
    _oh_durable_rate,
)

DURABLE = 128
FLIGHT = 2_000
SKIP = LANGGRAPH_SKIP

_db = db_paths("oh-pb-wf-")


def _lg_best_64() -> float:
    sync = _lg_durable_sync_rate(_db(), DURABLE // 4)
    concurrent = asyncio.run(_lg_durable_async_rate(_db(), CONCURRENCY, DURABLE // 2))
    return 1.0 / max(sync, concurrent)


def _flight_beyond(make: Any) -> Any:
    def side() -> float:
        elapsed, _ = asyncio.run(_flight(make(), FLIGHT, False))
        return (elapsed - WAIT) / FLIGHT  # time beyond the wait, per workflow

    return side


def _oh_flight() -> Any:
    return _oh_chain(wait=WAIT).run


def _lg_flight() -> Any:
    app = _lg_chain(wait=WAIT)
    return lambda: app.ainvoke({"x": 0})


PAIRS = [
    Pair(
        "workflow_durable_64",
        f"3-node chain, checkpoint per step, SQLite, {CONCURRENCY} at once",
        lambda: 1.0 / asyncio.run(_oh_durable_rate(_db(), CONCURRENCY, DURABLE)),
        _lg_best_64,
        "LangGraph SqliteSaver (best of sync/async)",
        unit="run",
        target=10.0,
        rounds=3,
        skip_base=SKIP,
    ),
    Pair(
        "workflow_durable_1",
        "3-node chain, checkpoint per step, SQLite, 1 at a time",
        lambda: 1.0 / asyncio.run(_oh_durable_rate(_db(), 1, DURABLE // 4)),
        lambda: 1.0 / _lg_durable_sync_rate(_db(), DURABLE // 4),
        "LangGraph SqliteSaver",
        unit="run",
        rounds=3,
        skip_base=SKIP,
    ),
    Pair(
        "workflow_in_flight",
        f"{FLIGHT:,} in flight, 50 ms step: time beyond 50 ms",
        _flight_beyond(_oh_flight),
        _flight_beyond(_lg_flight),
        "LangGraph ainvoke",
        unit="workflow",
        rounds=3,
        skip_base=SKIP,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_workflow(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
