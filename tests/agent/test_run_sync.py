"""run_sync: one event loop per thread, reused; refused inside a loop; closed at thread exit."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import warnings
import weakref
from typing import Any

import pytest

import openheim as oh
from openheim.models import ScriptedModel


def _loop_reporting_agent() -> oh.Agent:
    """An agent whose tool returns the id of the event loop it runs on."""
    loops: list[asyncio.AbstractEventLoop] = []

    @oh.tool
    async def where() -> str:
        """The running loop."""
        loop = asyncio.get_running_loop()
        loops.append(loop)
        return str(id(loop))

    def reply(request: Any) -> Any:
        last = request.messages[-1]
        return last.content if last.role == "tool" else oh.ToolCall("where", {})

    agent = oh.Agent(ScriptedModel(reply), tools=[where])
    agent.loops = loops  # type: ignore[attr-defined]
    return agent


def test_run_sync_reuses_one_loop_per_thread() -> None:
    agent = _loop_reporting_agent()
    results: dict[str, list[str]] = {}

    def worker(name: str) -> None:
        results[name] = [agent.run_sync("where?").output for _ in range(3)]

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for outputs in results.values():
        assert len(set(outputs)) == 1  # every call of a thread ran on the same loop
    loops: list[asyncio.AbstractEventLoop] = agent.loops  # type: ignore[attr-defined]
    assert len({id(loop) for loop in loops}) == 4  # one loop per thread
    # The threads have ended: their loops are closed, not left for the garbage collector.
    gc.collect()
    assert all(loop.is_closed() for loop in loops)


def test_run_sync_keeps_working_across_calls_in_the_main_thread() -> None:
    agent = _loop_reporting_agent()
    first = agent.run_sync("where?").output
    assert agent.run_sync("where?").output == first
    loops: list[asyncio.AbstractEventLoop] = agent.loops  # type: ignore[attr-defined]
    assert not loops[0].is_closed()
    assert not loops[0].is_running()


async def test_run_sync_inside_a_running_loop_is_refused_clearly() -> None:
    model = ScriptedModel(["never"])
    agent = oh.Agent(model)
    with pytest.raises(RuntimeError, match=r"running event loop.*await agent\.run"):
        agent.run_sync("hi")
    assert model.requests == []


def test_run_sync_after_a_failed_run_still_works() -> None:
    agent = oh.Agent(ScriptedModel(["ok"]))
    with pytest.raises(oh.errors.ConfigError):
        agent.run_sync(123)  # type: ignore[arg-type]
    assert agent.run_sync("hi").output == "ok"


def test_thread_loops_do_not_outlive_their_threads() -> None:
    from openheim.agent import _sync

    seen: list[weakref.ref[Any]] = []

    def worker() -> None:
        oh.Agent(ScriptedModel(["x"])).run_sync("hi")
        seen.append(weakref.ref(_sync._local.holder))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    gc.collect()
    assert seen
    assert seen[0]() is None


SCRIPT = """
import threading
import openheim as oh
from openheim.models import ScriptedModel

agent = oh.Agent(ScriptedModel(lambda request: "ok"))
assert agent.run_sync("main").output == "ok"

def worker():
    for _ in range(3):
        assert agent.run_sync("thread").output == "ok"

threads = [threading.Thread(target=worker) for _ in range(3)]
threads.append(threading.Thread(target=worker, daemon=True))
for t in threads:
    t.start()
for t in threads:
    t.join()
print("finished")
"""


def test_interpreter_exit_closes_the_loops_without_warnings() -> None:
    # -X dev turns on ResourceWarning (an unclosed loop warns) and asyncio debug mode.
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "finished"
    assert proc.stderr == ""


def test_an_interrupted_run_sync_unwinds_and_does_not_resume_later() -> None:
    events: list[str] = []

    @oh.tool
    async def hang() -> str:
        """Wait forever."""
        events.append("tool started")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("tool unwound")
        return "never"

    def interrupt() -> None:
        raise KeyboardInterrupt

    @oh.tool
    async def arm() -> str:
        """Schedule a Ctrl-C, as the signal handler would raise it."""
        asyncio.get_running_loop().call_later(0.01, interrupt)
        return "armed"

    agent = oh.Agent(
        ScriptedModel([oh.ToolCall("arm", {}), oh.ToolCall("hang", {}), "after", "again"]),
        tools=[arm, hang],
    )
    with pytest.raises(KeyboardInterrupt):
        agent.run_sync("go")
    assert events == ["tool started", "tool unwound"]
    assert agent.run_sync("next").output == "after"
    assert events == ["tool started", "tool unwound"]  # the interrupted run stayed dead


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_loop() -> None:
    import os

    agent = _loop_reporting_agent()
    parent = agent.run_sync("where?").output
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads alive
        pid = os.fork()
    if pid == 0:  # the child: report its loop, then leave without running atexit hooks
        try:
            inherited: list[asyncio.AbstractEventLoop] = agent.loops  # type: ignore[attr-defined]
            child = agent.run_sync("where?").output
            # The parent's loop was left alone (marked closed, never run or closed here).
            os.write(write, f"{child} {inherited[0].is_closed()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    child, inherited_closed = os.read(read, 200).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != parent
    assert inherited_closed == "True"
    assert agent.run_sync("where?").output == parent  # the parent keeps its loop
