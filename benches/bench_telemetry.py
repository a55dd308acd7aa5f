"""What the telemetry hooks cost: an agent run and a workflow run, hooks on against hooks stubbed.

The baseline is the same code with every hook replaced by an identity function
(``telemetry.agent_run = lambda events, *a: events``, and so on; the workflow
runner's step decorator undone), which is as close to "no instrumentation" as
the installed code gets: it still pays the call. Measured in one process,
interleaved, medians of many batches of CPU time (``time.process_time``: the
machine is shared), a garbage collection before each batch:

- **no OpenTelemetry**: the hooks as shipped, ``opentelemetry`` not imported
  (the hooks see no ``opentelemetry.trace`` module: the same as not installed);
- **API, no SDK**: ``opentelemetry.trace`` imported, no tracer provider set;
- **SDK recording** (for scale, not a target): an SDK ``TracerProvider`` with no
  exporter given to ``telemetry.configure`` and Prometheus metrics on, so every
  span and metric is really made.

The agent run is ``ScriptedModel``: one tool call, the tool, the answer (two
model calls, one tool call). The workflow run is three sync steps in a chain.

    python benches/bench_telemetry.py
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from _util import Row, print_table

RUNS = 200  # agent runs per batch
WF_RUNS = 400  # workflow runs per batch
BATCHES = 31


def _agent() -> Callable[[], Awaitable[object]]:
    import openheim as oh
    from openheim.models import ModelRequest, ScriptedModel

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    call = oh.ToolCall("add", {"a": 0, "b": 0})

    def reply(request: ModelRequest) -> object:
        return "done" if request.messages[-1].role == "tool" else call

    agent = oh.Agent(ScriptedModel(reply), tools=[oh.tool(add)])

    async def one() -> object:
        return await agent.run("What is 0 + 0?")

    return one


def _workflow() -> Callable[[], Awaitable[object]]:
    import msgspec

    from openheim.workflow import Workflow

    class S(msgspec.Struct):
        n: int = 0

    wf = Workflow("bench", state=S)

    @wf.step
    def a(s: S) -> dict[str, Any]:
        return {"n": s.n + 1}

    @wf.step
    def b(s: S) -> dict[str, Any]:
        return {"n": s.n + 1}

    @wf.step
    def c(s: S) -> dict[str, Any]:
        return {"n": s.n + 1}

    wf.edge("a", "b")
    wf.edge("b", "c")

    async def one() -> object:
        return await wf.run({})

    return one


@contextlib.contextmanager
def stubbed() -> Iterator[None]:
    """Every hook an identity function: the baseline."""
    from openheim import telemetry
    from openheim.workflow import _runner

    def same(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    names = ("agent_run", "chat", "chat_stream", "execute_tool", "workflow_run")
    saved = {n: getattr(telemetry, n) for n in names}
    step = _runner._run_node
    for n in names:
        setattr(telemetry, n, same)
    _runner._run_node = step.__wrapped__  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(telemetry, n, fn)
        _runner._run_node = step


@contextlib.contextmanager
def without_otel() -> Iterator[None]:
    """As if OpenTelemetry were not installed: the hooks find no ``opentelemetry.trace``."""
    mod = sys.modules.pop("opentelemetry.trace", None)
    try:
        yield
    finally:
        if mod is not None:
            sys.modules["opentelemetry.trace"] = mod


@contextlib.contextmanager
def api_only() -> Iterator[None]:
    import opentelemetry.trace as trace

    assert getattr(trace, "_TRACER_PROVIDER", None) is None, "a global provider is set"
    yield


@contextlib.contextmanager
def recording() -> Iterator[None]:
    from opentelemetry.sdk.trace import TracerProvider

    from openheim import telemetry
    from openheim.telemetry import _metrics, _trace

    provider = TracerProvider()
    telemetry.configure(tracer_provider=provider, metrics=True)
    try:
        yield
    finally:
        _trace._reset()
        _metrics.disable_metrics()
        provider.shutdown()


async def _batch(one: Callable[[], Awaitable[object]], n: int) -> float:
    """CPU seconds per run (the process's own time: the machine is shared and noisy)."""
    gc.collect()
    t0 = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - t0) / n


async def measure() -> list[Row]:
    import opentelemetry.trace  # noqa: F401  (imported once; without_otel hides it)

    agent = _agent()
    wf = _workflow()
    configs: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
        "stubbed": stubbed,
        "no otel": without_otel,
        "api, no sdk": api_only,
        "sdk recording": recording,
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(3):  # warm up every path
        for cm in configs.values():
            with cm():
                await _batch(agent, 20)
                await _batch(wf, 20)
    for _ in range(BATCHES):
        for name, cm in configs.items():
            with cm():
                times.setdefault(("agent", name), []).append(await _batch(agent, RUNS))
                times.setdefault(("workflow", name), []).append(await _batch(wf, WF_RUNS))
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    rows = []
    for what in ("agent", "workflow"):
        base = med[(what, "stubbed")]
        for name in ("no otel", "api, no sdk", "sdk recording"):
            rows.append(
                Row(
                    f"{what} run, hooks with {name}",
                    med[(what, name)],
                    base,
                    "µs",
                    "hooks stubbed",
                    higher_is_better=False,
                )
            )
    return rows


def per_hook() -> list[Row]:
    """One hook call with nothing observing, against the identity stub (ns per call)."""
    import timeit

    from openheim import telemetry

    def same(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    thing = object()
    n = 200_000
    calls = {
        "chat": (lambda: telemetry.chat(thing, "a:b", None), lambda: same(thing, "a:b", None)),  # type: ignore[arg-type]
        "execute_tool": (
            lambda: telemetry.execute_tool(thing, "t", "id", {}, ""),  # type: ignore[arg-type]
            lambda: same(thing, "t", "id", {}, ""),
        ),
        "agent_run": (
            lambda: telemetry.agent_run(thing, "a", None, "a:b"),  # type: ignore[arg-type]
            lambda: same(thing, "a", None, "a:b"),
        ),
    }
    rows = []
    with without_otel():
        for name, (hook, stub) in calls.items():
            ours = min(timeit.repeat(hook, number=n, repeat=7)) / n * 1e9
            base = min(timeit.repeat(stub, number=n, repeat=7)) / n * 1e9
            rows.append(
                Row(f"{name} hook, nothing observing", ours, base, "ns", "identity stub", False)
            )
    return rows


def run() -> list[Row]:
    """The rows for ``benches/run.py telemetry``."""
    return asyncio.run(measure()) + per_hook()


def main() -> None:
    rows = asyncio.run(measure())
    print_table("telemetry overhead (µs per run, lower is better; ratio = stubbed / ours)", rows)
    for r in rows:
        print(f"  {r.name}: {(r.ours / r.baseline - 1) * 100:+.1f}% time")
    print_table("one hook call (ns, lower is better; min of 7 repeats)", per_hook())


if __name__ == "__main__":
    main()
