"""Agent run cost: openheim on ScriptedModel against pydantic-ai on its TestModel.

Both agents do the same run: the model calls one tool (``add``), the tool
runs, the model answers with text. Measured in one process, interleaved, the
median of several batches, for both entry points: ``await agent.run(...)``
inside an event loop, and ``agent.run_sync(...)`` called in a plain loop
from synchronous code (each framework's own ``run_sync``). Also: the wall
time from a fresh interpreter to the first finished ``run_sync`` (beside
``python -c pass``).

pydantic-ai is a benchmark-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _util import Row, print_table

Runner = Callable[[], Awaitable[object]]
SyncRunner = Callable[[], object]


def _openheim(async_tool: bool) -> Runner:
    # The same agent `openheim bench overhead` measures (openheim.bench.cases).
    from openheim.bench.cases import scripted_agent

    return _runner(scripted_agent(async_tool))


def _pydantic_ai(async_tool: bool) -> Runner:
    from openheim.bench.cases import pydantic_ai_agent

    return _runner(pydantic_ai_agent(async_tool))


def _runner(agent: Any) -> Runner:
    async def one() -> object:
        result = await agent.run("What is 0 + 0?")
        assert result.output == "done"
        return result

    def one_sync() -> object:
        result = agent.run_sync("What is 0 + 0?")
        assert result.output == "done"
        return result

    one.sync = one_sync  # type: ignore[attr-defined]
    return one


async def _per_run(runner: Runner, seconds: float) -> float:
    """Seconds per run over a batch of about ``seconds``."""
    n, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < seconds:
        for _ in range(10):
            await runner()
        n += 10
        elapsed = time.perf_counter() - t0
    return elapsed / n


async def _compare(async_tool: bool, repeat: int, seconds: float) -> tuple[float, float]:
    ours, base = _openheim(async_tool), _pydantic_ai(async_tool)
    for _ in range(20):  # warm caches, lazy imports, thread pools
        await ours()
        await base()
    o_times, b_times = [], []
    for _ in range(repeat):  # interleaved so machine noise hits both alike
        o_times.append(await _per_run(ours, seconds))
        b_times.append(await _per_run(base, seconds))
    return statistics.median(o_times), statistics.median(b_times)


def _per_run_sync(runner: SyncRunner, seconds: float) -> float:
    """Seconds per ``run_sync`` call over a batch of about ``seconds``."""
    n, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < seconds:
        for _ in range(10):
            runner()
        n += 10
        elapsed = time.perf_counter() - t0
    return elapsed / n


def _compare_sync(async_tool: bool, repeat: int, seconds: float) -> tuple[float, float]:
    ours: SyncRunner = _openheim(async_tool).sync  # type: ignore[attr-defined]
    base: SyncRunner = _pydantic_ai(async_tool).sync  # type: ignore[attr-defined]
    for _ in range(20):
        ours()
        base()
    o_times, b_times = [], []
    for _ in range(repeat):
        o_times.append(_per_run_sync(ours, seconds))
        b_times.append(_per_run_sync(base, seconds))
    return statistics.median(o_times), statistics.median(b_times)


FIRST_RUN = """
import openheim as oh
from openheim.models import ScriptedModel

@oh.tool
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b

agent = oh.Agent(ScriptedModel([oh.ToolCall("add", {"a": 1, "b": 2}), "3"]), tools=[add])
assert agent.run_sync("What is 1 + 2?").output == "3"
"""


def _fresh(code: str) -> float:
    # Bytecode caching on, as in a normal install (the dev shell may turn it off).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def first_run(repeat: int = 11) -> Row:
    _fresh(FIRST_RUN)  # writes the .pyc files once
    ours, base = [], []
    for _ in range(repeat):
        ours.append(_fresh(FIRST_RUN))
        base.append(_fresh("pass"))
    o, b = statistics.median(ours) * 1e3, statistics.median(base) * 1e3
    return Row(
        "fresh interpreter -> first run_sync (≤150 ms)",
        o,
        b,
        "ms",
        "python -c pass",
        higher_is_better=False,
        limit=150.0,
    )


def run(repeat: int = 5, seconds: float = 0.5) -> list[Row]:
    try:
        import pydantic_ai  # noqa: F401
    except ImportError:
        print(
            "bench_agent: pydantic-ai is not installed, so there is no baseline to compare "
            "against; install the benchmark extra: pip install -e '.[bench]'"
        )
        return [first_run()]
    rows = []
    for async_tool, label in ((False, "sync tool"), (True, "async tool")):
        o, b = asyncio.run(_compare(async_tool, repeat, seconds))
        rows.append(
            Row(
                f"await agent.run: tool call + answer ({label})",
                1 / o,
                1 / b,
                "/s",
                "pydantic-ai TestModel, await agent.run",
                target=20.0,
            )
        )
        o, b = _compare_sync(async_tool, repeat, seconds)
        rows.append(
            Row(
                f"agent.run_sync: tool call + answer ({label})",
                1 / o,
                1 / b,
                "/s",
                "pydantic-ai TestModel, agent.run_sync",
                target=20.0,
            )
        )
    rows.append(first_run())
    return rows


if __name__ == "__main__":
    print_table("agent runs (runs/s, higher is better; target ≥20× pydantic-ai)", run())
