"""pytest-benchmark for the micro-benchmark scripts: a pair of sides per benchmark.

A :class:`Pair` names one comparison of a ``bench_*.py`` script: openheim's
side and the baseline's side, each a callable doing one *round* of the same
work (the same helpers the script's ``run()`` uses, at a size that keeps a
round under a second or so). ``test_pb_<script>.py`` parametrises over its
pairs and both sides, so pytest-benchmark times and saves every side, in the
same session, under the pair's group (``make bench`` / ``make bench-compare``).

What the two columns mean:

- pytest-benchmark's own columns: wall time per round, setup included (a new
  event loop, actors spawned, a temporary file): what ``--benchmark-compare``
  tracks from run to run;
- the side-by-side table printed at the end (``benches/conftest.py``): each
  side's own figure per unit of work, as the script measures it (a callable
  may return seconds per unit timed inside the round, with its setup and
  warm-up left out, or CPU time where the script uses CPU time), median over
  the rounds; the ratio is baseline / openheim (how many times cheaper
  openheim is), beside the script's target.

Figures that are not times (memory per actor, stored bytes) and benchmarks
whose figure is a throughput under a fixed-duration load from other
processes (servers, local inference, batch workers) stay in the scripts
(``benches/run.py``); see benches/README.md.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

# Seconds per unit returned by a round (None: use pytest-benchmark's wall time per round).
Side = Callable[[], float | None]

# pair key -> {"pair": Pair, "openheim": s/unit, "baseline": s/unit}
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Pair:
    key: str  # stable: the test id and the pytest-benchmark group
    title: str
    ours: Side
    base: Side | None  # None: no baseline installed
    base_name: str
    units: int = 1  # units of work per round (wall time is divided by it)
    unit: str = "op"
    target: float | None = None  # required ratio baseline / openheim
    rounds: int = 5
    skip_base: str = ""  # why the baseline side cannot run here
    extra: dict[str, Any] = field(default_factory=dict)


def params(pairs: list[Pair]) -> list[Any]:
    return [
        pytest.param(p, side, id=f"{p.key}-{side}")
        for p in pairs
        for side in ("openheim", "baseline")
    ]


def run_side(benchmark: Any, pair: Pair, side: str) -> None:
    """Time one side of ``pair`` with pytest-benchmark and record it for the table."""
    fn = pair.ours if side == "openheim" else pair.base
    if fn is None or (side == "baseline" and pair.skip_base):
        pytest.skip(pair.skip_base or f"{pair.base_name}: not available here")
    own: list[float] = []

    def one_round() -> None:
        got = fn()
        if got is not None:
            own.append(got)

    benchmark.group = pair.key
    benchmark.extra_info.update(
        side=side,
        title=pair.title,
        baseline=pair.base_name,
        units_per_round=pair.units,
        unit=pair.unit,
        target_ratio=pair.target,
        **pair.extra,
    )
    benchmark.pedantic(one_round, rounds=pair.rounds, warmup_rounds=1, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    if own:
        per_unit = statistics.median(own[1:] if len(own) > pair.rounds else own)
        benchmark.extra_info["own_seconds_per_unit"] = per_unit
    else:
        per_unit = benchmark.stats.stats.median / pair.units
    entry = RESULTS.setdefault(pair.key, {"pair": pair})
    entry[side] = per_unit


def fmt_time(seconds: float) -> str:
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {name}"
    return f"{seconds * 1e9:.3g} ns"


LANGGRAPH_SKIP = (
    ""
    if importlib.util.find_spec("langgraph") and importlib.util.find_spec("aiosqlite")
    else "LangGraph is not installed (pip install -e '.[bench]')"
)
"""Why a LangGraph baseline is skipped (empty when it runs)."""


def db_paths(prefix: str) -> Callable[[], str]:
    """A function giving a new SQLite file path per call, in one temporary directory
    (named ``prefix``...) removed when the process exits."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    numbers = itertools.count()
    return lambda: os.path.join(folder, f"{next(numbers)}.db")
