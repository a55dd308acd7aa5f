"""Passivated ids cost the runtime nothing: after 20,000 virtual actors were each activated
by a message, gave themselves a state and were passivated (snapshotted to a real SQLite
store), no live-actor structure is left and Python's traced memory did not grow per id."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from openheim.runtime import ActorContext, Runtime

N = 20_000
WAVE = 1_000


async def count(msg: Any, ctx: ActorContext) -> int:
    ctx.state = (ctx.state or 0) + 1
    return int(ctx.state)


def _runtime_traces() -> tracemalloc.Snapshot:
    """What is allocated by the runtime's own code (the store and asyncio left out)."""
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/openheim/runtime/*")]
    )


def _cells() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, ActorContext))


async def _settle(rt: Runtime) -> None:
    """Until every actor is passivated and every snapshot written (the idle sweep)."""
    for _ in range(3000):
        await rt.wait_idle()
        if not rt.live() and not rt._saving and not rt._bg:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still live after the sweeps: {len(rt.live())} actors")


async def test_passivated_ids_hold_no_memory_in_the_runtime(tmp_path: Path) -> None:
    async with Runtime(
        store=f"sqlite:///{tmp_path}/ids.db", max_live_actors=100, passivate_after=0.05
    ) as rt:
        rt.register("n", lambda actor_id: count)

        async def wave(start: int) -> None:
            for j in range(start, start + WAVE):
                rt.ref(f"n/{j}").send(j)
            await rt.wait_idle()

        await wave(0)  # warm: pools, caches and dicts at their working size
        await _settle(rt)
        gc.collect()
        tracemalloc.start()
        try:
            before, blocks = _runtime_traces(), sys.getallocatedblocks()
            for start in range(WAVE, N, WAVE):
                await wave(start)
                assert len(rt.live()) <= 100 + WAVE  # bounded while the wave runs
            await _settle(rt)
            gc.collect()
            grown_blocks = sys.getallocatedblocks() - blocks
            grown = sum(s.size_diff for s in _runtime_traces().compare_to(before, "filename"))
        finally:
            tracemalloc.stop()

        assert rt.live() == []
        assert _cells() == 0  # no ActorContext object is left for any id
        assert rt._sched is not None
        st = rt._sched.stats()
        assert st["actors"] == 0
        assert st["mailboxes"] == 0
        assert st["ready"] == 0
        assert rt.stats()["passivated"] == N
        # No object per id anywhere in the process: one kept per id would be a block
        # per id, and a live idle actor is several; the store's and asyncio's caches
        # move by up to a couple of thousand blocks either way. And no byte per id
        # allocated by the runtime's own code (a live idle actor costs ~350 B).
        ids = N - WAVE
        assert grown_blocks / ids < 0.25, f"{grown_blocks} memory blocks more for {ids} ids"
        assert grown / ids < 2, f"the runtime kept {grown / ids:.2f} B per passivated id"
        # Every id is known to the store, and comes back with its state.
        assert len(await rt.store.list("actor/n/")) == N
        assert await rt.ref("n/12345").ask("again") == 2
