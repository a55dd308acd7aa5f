"""``@oh.tool(executor="process")``: CPU-heavy tools in a pool of spawned worker processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import openheim as oh
from openheim.errors import ConfigError, ToolError, ToolTimeout
from openheim.messages import ToolCall
from openheim.models.scripted import ScriptedModel
from openheim.tools._process import ProcessPool


@oh.tool(executor="process")
def worker_pid(n: int) -> str:
    """The worker's pid and the sum of squares below n.

    Args:
        n: how far to sum.
    """
    return f"{os.getpid()}:{sum(i * i for i in range(n))}"


def crash(code: int) -> int:
    os._exit(code)


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def pid() -> int:
    return os.getpid()


def fail(msg: str) -> None:
    raise ValueError(msg)


@pytest.fixture
def pool() -> ProcessPool:
    p = ProcessPool(max_workers=2)
    yield p
    p.close()


async def test_a_process_tool_runs_in_another_process_inside_an_agent_run() -> None:
    model = ScriptedModel([ToolCall("worker_pid", {"n": 1000}), "done"])
    agent = oh.Agent(name="calc", model=model, tools=[worker_pid])
    result = await agent.run("sum the squares")
    assert result.output == "done"
    tool_msg = next(m for m in model.requests[1].messages if m.role == "tool")
    other_pid, total = tool_msg.content.split(":")
    assert int(total) == sum(i * i for i in range(1000))
    assert int(other_pid) != os.getpid()
    assert worker_pid.executor == "process"
    assert worker_pid(10).endswith(":285")  # calling the Tool directly stays a plain call


async def test_workers_are_reused_and_errors_come_back_with_their_type(pool: ProcessPool) -> None:
    first = await pool.run(pid)
    assert first != os.getpid()
    assert await pool.run(pid) == first  # the idle worker serves the next call
    with pytest.raises(ValueError, match="bad input"):
        await pool.run(fail, ("bad input",))
    assert await pool.run(pid) == first  # an exception in the tool does not cost the worker
    got = await asyncio.gather(*(pool.run(sleepy, (0.2,)) for _ in range(4)))
    assert got == [0.2] * 4
    assert pool.workers <= 2


async def test_a_crashed_worker_fails_its_call_clearly_and_the_pool_recovers(
    pool: ProcessPool,
) -> None:
    before = await pool.run(pid)
    with pytest.raises(ToolError, match=r"worker process died.*exit code 7"):
        await pool.run(crash, (7,))
    after = await pool.run(pid)
    assert after != before  # a fresh worker
    assert await pool.run(sleepy, (0.01,)) == 0.01


async def test_a_timeout_kills_the_worker_and_the_pool_goes_on(pool: ProcessPool) -> None:
    before = await pool.run(pid)
    with pytest.raises(ToolTimeout, match=r"did not finish within 0\.2 s"):
        await pool.run(sleepy, (30.0,), timeout=0.2)
    assert await pool.run(pid) != before
    # Cancelling a call (the agent's tool timeout does) kills its worker too.
    task = asyncio.ensure_future(pool.run(sleepy, (30.0,)))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pool.run(sleepy, (0.01,)) == 0.01
    assert pool.workers <= 2


async def test_the_agents_tool_timeout_applies_to_process_tools() -> None:
    slow = oh.Tool(sleepy, name="slow", timeout=0.3, executor="process")
    model = ScriptedModel([ToolCall("slow", {"seconds": 30}), "gave up"])
    agent = oh.Agent(name="a", model=model, tools=[slow])
    result = await agent.run("go")
    assert result.output == "gave up"
    tool_msg = next(m for m in model.requests[1].messages if m.role == "tool")
    assert tool_msg.is_error
    assert "0.3" in tool_msg.content


async def test_unpicklable_arguments_and_bad_functions_get_clear_errors(pool: ProcessPool) -> None:
    with pytest.raises(ConfigError, match="must be picklable"):
        await pool.run(sleepy, (lambda: 1,))
    with pytest.raises(ConfigError, match="module-level function"):

        @oh.tool(executor="process")
        def local(x: int) -> int:
            return x

    with pytest.raises(ConfigError, match="plain \\(sync\\) functions"):

        @oh.tool(executor="process")
        async def not_sync(x: int) -> int:
            return x

    with pytest.raises(ConfigError, match="executor is 'thread'"):
        oh.Tool(pid, executor="fork")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_workers"):
        ProcessPool(max_workers=0)
