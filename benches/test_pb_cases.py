"""The overhead cases on pytest-benchmark: openheim and its peer, side by side, one session.

``make bench`` runs this with ``--benchmark-json``; ``make bench-compare``
compares against the last saved run. One benchmark round runs a batch of
operations inside one ``run_until_complete`` (``BATCH``), so the event
loop's entry cost is spread thin on both sides alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openheim.bench.cases import CASES, Case, peer_installed

# Operations per round: fixed, the same on both sides and in every run, so the medians
# pytest-benchmark prints compare directly, within a run and against a saved one.
BATCH = {"agent_loop": 20, "workflow_chain": 100, "workflow_fanout": 50, "snapshot_codec": 50}
SIDES = [(case, side) for case in CASES for side in ("openheim", "peer")]


@pytest.mark.parametrize(("case", "side"), SIDES, ids=[f"{c.key}-{s}" for c, s in SIDES])
def test_case(
    benchmark: Any, side_by_side: dict[str, dict[str, Any]], case: Case, side: str
) -> None:
    if side == "peer" and not peer_installed(case):
        pytest.skip(f"{case.peer_name} is not installed (pip install -e '.[bench]')")
    loop = asyncio.new_event_loop()
    build = case.ours if side == "openheim" else case.peer
    op, close = loop.run_until_complete(build())
    try:
        loop.run_until_complete(op())  # warm caches and lazy imports
        batch = BATCH.get(case.key, 1)

        async def many() -> None:
            for _ in range(batch):
                await op()

        benchmark.group = case.key
        benchmark.extra_info.update(
            side=side,
            units_per_round=batch * case.per_op,
            peer=case.peer_name,
            target_ratio=case.target,
        )
        benchmark(lambda: loop.run_until_complete(many()))
    finally:
        loop.run_until_complete(close())
        loop.close()
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median / (batch * case.per_op)
        side_by_side.setdefault(case.key, {})[side] = median
