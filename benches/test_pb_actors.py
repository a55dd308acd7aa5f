"""bench_actors on pytest-benchmark: the actor runtime against autogen-core's runtime.

Asks and spawns as in the script, smaller rounds (autogen's side does fewer
units: it is ~100× slower; the figures compare per unit). autogen-core lives
in ``.venv-autogen`` (see the script's docstring); without it the baseline
sides are skipped. Memory per actor stays in the script (not a time).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_actors import _autogen_ask, _autogen_spawn, _have_autogen, _ours_ask, _ours_spawn

SKIP = (
    ""
    if _have_autogen()
    else "autogen-core is not installed (python3.11 -m venv .venv-autogen && "
    ".venv-autogen/bin/pip install autogen-core)"
)


def _measured(fn: Any, *, rate: bool) -> Any:
    def side() -> float:
        gc.collect()
        gc.freeze()  # the same start for both sides, as in the script
        try:
            got = float(asyncio.run(fn()))
        finally:
            gc.unfreeze()
        return 1.0 / got if rate else got  # asks/s, or seconds per spawned actor

    return side


BASE = "autogen-core SingleThreadedAgentRuntime"
PAIRS = [
    Pair(
        "actors_ask_1_caller",
        "ask, 1 caller → 1 actor",
        _measured(lambda: _ours_ask(50_000, 1), rate=True),
        _measured(lambda: _autogen_ask(1_000, 1), rate=True),
        BASE,
        unit="ask",
        target=20.0,
        skip_base=SKIP,
    ),
    Pair(
        "actors_ask_100_callers",
        "ask, 100 callers → 100 actors",
        _measured(lambda: _ours_ask(50_000, 100), rate=True),
        _measured(lambda: _autogen_ask(2_000, 100), rate=True),
        BASE,
        unit="ask",
        skip_base=SKIP,
    ),
    Pair(
        "actors_ask_handler_waits",
        "ask, handler awaits once, 1 caller",
        _measured(lambda: _ours_ask(10_000, 1, waits=True), rate=True),
        _measured(lambda: _autogen_ask(1_000, 1, waits=True), rate=True),
        BASE,
        unit="ask",
        skip_base=SKIP,
    ),
    Pair(
        "actors_spawn_all",
        "spawn + first message, 5k actors at once",
        _measured(lambda: _ours_spawn(5_000, False), rate=False),
        _measured(lambda: _autogen_spawn(5_000, False), rate=False),
        BASE,
        unit="actor",
        target=100.0,
        skip_base=SKIP,
    ),
    Pair(
        "actors_spawn_one_by_one",
        "spawn + first ask awaited, one by one",
        _measured(lambda: _ours_spawn(5_000, True), rate=False),
        _measured(lambda: _autogen_spawn(500, True), rate=False),
        BASE,
        unit="actor",
        skip_base=SKIP,
    ),
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_actors(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
