"""bench_sched on pytest-benchmark: the native Scheduler against a Task + asyncio.Queue per actor.

1,000 actors × 100 messages a round, timed from the first send to the last
handler call as the script does; memory per idle actor stays in the script
(it is not a time).
"""

from __future__ import annotations

from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_sched import ACTORS, MSGS, THREADS, _baseline, _ours

N = ACTORS * MSGS


def _per_msg(fn: Any, **kw: Any) -> Any:
    return lambda: 1.0 / fn(**kw)  # the script returns messages/s


PAIRS = [
    Pair(
        "sched_sync_handler",
        f"dispatch, sync handler ({ACTORS} actors × {MSGS} msgs)",
        _per_msg(_ours),
        _per_msg(_baseline),
        "Task+Queue",
        units=N,
        unit="msg",
        target=2.0,
    ),
    Pair(
        "sched_async_handler",
        "dispatch, async handler",
        _per_msg(_ours, asynchronous=True),
        _per_msg(_baseline, asynchronous=True),
        "Task+Queue",
        units=N,
        unit="msg",
        target=1.2,
    ),
    Pair(
        "sched_sender_threads",
        f"dispatch from {THREADS} sender threads",
        _per_msg(_ours, from_threads=True),
        _per_msg(_baseline, from_threads=True),
        "Task+Queue+call_soon_threadsafe",
        units=N,
        unit="msg",
        target=2.0,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_sched(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
