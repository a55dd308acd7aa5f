"""bench_import on pytest-benchmark: ``import openheim`` against ``import asyncio``.

A round is one fresh interpreter; the side-by-side figure is the import alone
(timed inside that interpreter, as the script does), pytest-benchmark's column
the whole process. Target: openheim costs at most 2× asyncio (ratio ≥ 0.5).
"""

from __future__ import annotations

from typing import Any

import pytest
from _pb import Pair, params, run_side
from bench_import import _fresh_import

PAIRS = [
    Pair(
        "import_fresh",
        "import in a fresh interpreter",
        lambda: _fresh_import("openheim"),
        lambda: _fresh_import("asyncio"),
        "import asyncio",
        unit="import",
        target=0.5,
        rounds=11,
    )
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_import(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
