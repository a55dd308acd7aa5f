"""bench_telemetry on pytest-benchmark: the telemetry hooks against the hooks stubbed.

An agent run and a workflow run with the hooks as shipped (OpenTelemetry not
imported, and the API imported with no SDK) against every hook replaced by an
identity function; CPU time per run, as the script measures it. The ratio is
stubbed / ours: 1.0 means the hooks cost nothing measurable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import opentelemetry.trace  # noqa: F401  (imported once; without_otel hides it)
import pytest
from _pb import Pair, params, run_side
from bench_telemetry import (
    RUNS,
    WF_RUNS,
    _agent,
    _batch,
    _workflow,
    api_only,
    stubbed,
    without_otel,
)


@functools.cache
def _work(what: str) -> Callable[[], Any]:
    return _agent() if what == "agent" else _workflow()


def _side(what: str, cm: Callable[[], contextlib.AbstractContextManager[None]]) -> Any:
    n = RUNS if what == "agent" else WF_RUNS

    def one_round() -> float:
        with cm():
            return asyncio.run(_batch(_work(what), n))

    return one_round


PAIRS = [
    Pair(
        f"telemetry_{what}_{label}",
        f"{what} run, hooks with {label.replace('_', ' ')}",
        _side(what, cm),
        _side(what, stubbed),
        "hooks stubbed (identity functions)",
        unit="run",
        rounds=11,
    )
    for what in ("agent", "workflow")
    for label, cm in (("no_otel", without_otel), ("api_no_sdk", api_only))
]


@pytest.mark.parametrize(("pair", "side"), params(PAIRS))
def test_telemetry(benchmark: Any, pair: Pair, side: str) -> None:
    run_side(benchmark, pair, side)
