"""The actor runtime against autogen-core's ``SingleThreadedAgentRuntime``, same work, same run.

Both sides answer a request with the same echo handler (a dataclass in, the
same dataclass out), on a fresh event loop in the same process:

- ask throughput: ``await ref.ask(m)`` vs ``await runtime.send_message(m, agent_id)``,
  one caller asking one actor in a loop (request/response latency), and 100
  callers each asking its own actor (throughput under concurrency). An ask to
  an idle actor runs its handler in the caller, so a handler that never waits
  costs no mailbox trip; the third row's handler waits once (``await
  asyncio.sleep(0)`` on both sides), so its asks go through the mailbox and a
  Task, the general path;
- spawn plus first message to 10,000 new actors: ``rt.spawn`` + ``send`` for
  all, then wait until each handled its message, vs autogen's lazy
  instantiation on a first ``send_message`` to each id, all started at once
  and gathered; and the same one actor at a time, each reply awaited before
  the next spawn (autogen: 1,000 ids, it takes ~1 ms each; compared per actor);
- memory per live idle actor, each having handled one message, measured in a
  fresh interpreter per side with tracemalloc (bytes allocated by Python)
  and RSS growth: 100,000 of ours, 10,000 of autogen's (per actor);
- passivated ids: 100,000 virtual actors activated, each handling one
  message, and passivated (``max_live_actors=1000``): memory per id after;
  and 1,000,000 ids (``OPENHEIM_BENCH_PASSIVATED_IDS``) on a SQLite store,
  each activated by a message that sets its state, then passivated and
  snapshotted, so every id is known to the store: RSS and Python memory
  blocks per id, measured after a first wave of 10,000 (a few minutes).

autogen-core is not a declared dependency: it pins protobuf below what
grpcio-tools needs, so it lives in a venv of its own, whose site-packages this
bench appends to ``sys.path`` (autogen-core runs on our newer protobuf)::

    python3.11 -m venv .venv-autogen && .venv-autogen/bin/pip install autogen-core
    .venv/bin/python benches/bench_actors.py

``OPENHEIM_AUTOGEN_VENV`` names another venv. Without autogen-core the table
says so and prints only our absolute figures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _util import Row, print_table

from openheim.runtime import ActorContext, Runtime


def _autogen_path() -> str | None:
    """Append the site-packages of the autogen venv to ``sys.path`` if autogen-core is
    not importable as is; returns the venv used (None: installed here, or nowhere)."""
    import importlib.util

    if importlib.util.find_spec("autogen_core") is not None:
        return None
    venv = Path(
        os.environ.get("OPENHEIM_AUTOGEN_VENV")
        or Path(__file__).resolve().parent.parent / ".venv-autogen"
    )
    for site in sorted(
        venv.glob(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")
    ):
        if (site / "autogen_core").is_dir():
            sys.path.append(str(site))
            return str(venv)
    return None


AUTOGEN_VENV = _autogen_path()


@dataclass
class Ping:
    n: int


async def _echo(msg: Ping, ctx: ActorContext) -> Ping:
    return msg


async def _echo_after_wait(msg: Ping, ctx: ActorContext) -> Ping:
    await asyncio.sleep(0)  # waits once: the ask goes through the mailbox and a Task
    return msg


def _have_autogen() -> bool:
    try:
        import autogen_core  # noqa: F401
    except ImportError:
        return False
    return True


# ---- openheim -------------------------------------------------------------------------


async def _ours_ask(n: int, callers: int, waits: bool = False) -> float:
    async with Runtime() as rt:
        handler = _echo_after_wait if waits else _echo
        refs = [rt.spawn(handler, id=f"echo/{i}") for i in range(callers)]

        async def client(ref: Any, k: int) -> None:
            for i in range(k):
                await ref.ask(Ping(i))

        await asyncio.gather(*(client(r, 100) for r in refs))  # warm up
        per = n // callers
        t0 = time.perf_counter()
        await asyncio.gather(*(client(r, per) for r in refs))
        return per * callers / (time.perf_counter() - t0)


async def _ours_spawn(n: int, sequential: bool) -> float:
    async with Runtime() as rt:
        t0 = time.perf_counter()
        if sequential:  # spawn, ask, wait for the reply, next
            for i in range(n):
                await rt.spawn(_echo, id=f"echo/{i}").ask(Ping(i))
        else:  # spawn and send to all, then wait until every first message is handled
            done = asyncio.Event()
            left = [n]

            async def counted(msg: Ping, ctx: ActorContext) -> None:
                left[0] -= 1
                if not left[0]:
                    done.set()

            for i in range(n):
                rt.spawn(counted, id=f"echo/{i}").send(Ping(i))
            await done.wait()
        return (time.perf_counter() - t0) / n


# ---- autogen-core -----------------------------------------------------------------------


try:  # module level: autogen reads the handler's type hints by name
    from autogen_core import MessageContext, RoutedAgent, message_handler

    class _AutogenEcho(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @message_handler
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
            return message

    class _AutogenEchoAfterWait(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @message_handler
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
            await asyncio.sleep(0)
            return message

except ImportError:  # pragma: no cover - autogen-core is optional
    _AutogenEcho = _AutogenEchoAfterWait = None  # type: ignore[assignment,misc]


def _autogen_agent(waits: bool = False) -> Any:
    return _AutogenEchoAfterWait if waits else _AutogenEcho


async def _autogen_ask(n: int, callers: int, waits: bool = False) -> float:
    from autogen_core import AgentId, SingleThreadedAgentRuntime

    echo = _autogen_agent(waits)
    runtime = SingleThreadedAgentRuntime()
    await echo.register(runtime, "echo", echo)
    runtime.start()
    ids = [AgentId("echo", str(i)) for i in range(callers)]

    async def client(agent: Any, k: int) -> None:
        for i in range(k):
            await runtime.send_message(Ping(i), agent)

    await asyncio.gather(*(client(a, 20) for a in ids))  # warm up, instantiate
    per = n // callers
    t0 = time.perf_counter()
    await asyncio.gather(*(client(a, per) for a in ids))
    rate = per * callers / (time.perf_counter() - t0)
    await runtime.stop()
    return rate


async def _autogen_spawn(n: int, sequential: bool) -> float:
    from autogen_core import AgentId, SingleThreadedAgentRuntime

    echo = _autogen_agent()
    runtime = SingleThreadedAgentRuntime()
    await echo.register(runtime, "echo", echo)
    runtime.start()
    t0 = time.perf_counter()
    if sequential:
        for i in range(n):
            await runtime.send_message(Ping(i), AgentId("echo", str(i)))
    else:  # send_message is its only way to message one agent: start them all, then wait
        await asyncio.gather(
            *(runtime.send_message(Ping(i), AgentId("echo", str(i))) for i in range(n))
        )
    per = (time.perf_counter() - t0) / n
    await runtime.stop()
    return per


# ---- memory (fresh interpreter per side) -------------------------------------------------

_MEM_CODE = """
import asyncio, gc, os, sys, tracemalloc
sys.path.insert(0, {benches!r})
from bench_actors import Ping, _echo, _autogen_agent
N = {n}
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
async def main():
    if "{kind}" == "ours" or "{kind}" == "passivated":
        from openheim.runtime import Runtime
        rt = Runtime(max_live_actors=1000) if "{kind}" == "passivated" else Runtime()
        await rt.start()
        if "{kind}" == "passivated":
            rt.register("echo", lambda actor_id: _echo)
    else:
        from autogen_core import AgentId, SingleThreadedAgentRuntime
        echo = _autogen_agent()
        runtime = SingleThreadedAgentRuntime()
        await echo.register(runtime, "echo", echo)
        runtime.start()
        await runtime.send_message(Ping(0), AgentId("echo", "warm"))
    gc.collect()
    tracemalloc.start()
    before, before_rss = tracemalloc.get_traced_memory()[0], rss()
    if "{kind}" == "ours":
        for i in range(0, N, 1000):  # messages arrive in waves
            for j in range(i, i + 1000):
                rt.spawn(_echo, id=f"echo/{{j}}").send(Ping(j))
            await rt.wait_idle()
    elif "{kind}" == "passivated":
        for i in range(0, N, 1000):
            for j in range(i, i + 1000):
                rt.ref(f"echo/{{j}}").send(Ping(j))
            await rt.wait_idle()
        assert len(rt.live()) <= 1000, len(rt.live())
    else:
        for i in range(N):
            await runtime.send_message(Ping(i), AgentId("echo", str(i)))
    gc.collect()
    print((tracemalloc.get_traced_memory()[0] - before) / N, (rss() - before_rss) / N)
    sys.stdout.flush()
    os._exit(0)  # skip teardown: only the measurement matters
asyncio.run(main())
"""


def _mem(kind: str, n: int) -> tuple[float, float]:
    code = _MEM_CODE.format(n=n, kind=kind, benches=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    traced, rss = out.stdout.split()
    return float(traced), float(rss)


# ---- 1,000,000 passivated ids on SQLite (fresh interpreter) ----------------------------

_PASSIVATED_CODE = """
import asyncio, gc, os, sys, time
sys.path.insert(0, {benches!r})
from openheim.runtime import Runtime
N, WAVE = {n}, 10_000
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
async def count(msg, ctx):  # state to snapshot: each id becomes a known id in the store
    ctx.state = (ctx.state or 0) + 1
async def main():
    rt = Runtime(store="sqlite:///{db}", max_live_actors=1000)
    await rt.start()
    rt.register("n", lambda actor_id: count)
    async def wave(start):
        for j in range(start, min(start + WAVE, N)):
            rt.ref(f"n/{{j}}").send(j)
        await rt.wait_idle()
        while rt._saving:  # the snapshots of the passivated are written
            await asyncio.gather(*rt._saving.values())
    await wave(0)  # warm: pools, caches and dicts at their working size
    gc.collect()
    before, blocks, t0 = rss(), sys.getallocatedblocks(), time.perf_counter()
    for i in range(WAVE, N, WAVE):
        await wave(i)
    elapsed = time.perf_counter() - t0
    gc.collect()
    grown, grown_blocks = rss() - before, sys.getallocatedblocks() - blocks
    live, known = len(rt.live()), len(await rt.store.list("actor/n/"))
    per = N - WAVE
    print(grown / per, grown_blocks / per, live, known, elapsed)
    sys.stdout.flush()
    os._exit(0)
asyncio.run(main())
"""


def _passivated_ids(n: int) -> tuple[float, float, int, int, float]:
    """(RSS bytes per id, Python memory blocks per id, live actors left, ids with a
    snapshot in the store, seconds): ``n`` virtual actors on a SQLite store, each
    activated by one message that sets its state, passivated (``max_live_actors=1000``)
    and snapshotted; growth measured after a first wave of 10,000, per later id."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        code = _PASSIVATED_CODE.format(
            n=n,
            db=os.path.join(tmp, "actors.db"),
            benches=os.path.dirname(os.path.abspath(__file__)),
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600
        )
    rss, blocks, live, known, secs = out.stdout.split()
    return float(rss), float(blocks), int(live), int(known), float(secs)


# ---- run --------------------------------------------------------------------------------


def run(repeat: int = 5) -> list[Row]:
    autogen = _have_autogen()
    if not autogen:
        print(
            "autogen-core is NOT installed: no baseline, ratios are nan, our figures only.\n"
            "  install it in its own venv: python3.11 -m venv .venv-autogen && "
            ".venv-autogen/bin/pip install autogen-core"
        )
    else:
        import autogen_core

        where = f" (from {AUTOGEN_VENV})" if AUTOGEN_VENV else ""
        print(f"baseline: autogen-core {autogen_core.__version__}{where}, same process, same run")
    base_name = "autogen-core SingleThreadedAgentRuntime" if autogen else "(autogen-core missing)"
    rows: list[Row] = []

    def measure(fn: Any) -> float:
        # The same start for both sides: what earlier runs left is collected and
        # frozen, so the collector does not walk it again during the timing.
        gc.collect()
        gc.freeze()
        try:
            return float(asyncio.run(fn()))
        finally:
            gc.unfreeze()

    def both(ours: Any, base: Any) -> tuple[float, float]:
        o, b = [], []
        for _ in range(repeat):  # interleaved so machine noise hits both alike
            o.append(measure(ours))
            if autogen:
                b.append(measure(base))
        return statistics.median(o), (statistics.median(b) if b else float("nan"))

    o, b = both(lambda: _ours_ask(200_000, 1), lambda: _autogen_ask(3_000, 1))
    rows.append(Row("ask, 1 caller → 1 actor (asks/s)", o, b, "/s", base_name, target=20.0))
    o, b = both(lambda: _ours_ask(200_000, 100), lambda: _autogen_ask(5_000, 100))
    rows.append(Row("ask, 100 callers → 100 actors (asks/s)", o, b, "/s", base_name, limit=100_000))
    o, b = both(
        lambda: _ours_ask(30_000, 1, waits=True), lambda: _autogen_ask(3_000, 1, waits=True)
    )
    rows.append(Row("ask, handler awaits once, 1 caller (asks/s)", o, b, "/s", base_name))
    o, b = both(lambda: _ours_spawn(10_000, False), lambda: _autogen_spawn(10_000, False))
    rows.append(
        Row(
            "spawn + first message, 10k actors (µs per actor)",
            o * 1e6,
            b * 1e6,
            "µs",
            base_name,
            higher_is_better=False,
            target=100.0,
        )
    )
    o, b = both(lambda: _ours_spawn(10_000, True), lambda: _autogen_spawn(1_000, True))
    rows.append(
        Row(
            "spawn + first ask awaited one by one (µs per actor)",
            o * 1e6,
            b * 1e6,
            "µs",
            base_name + " (1k ids)",
            higher_is_better=False,
        )
    )
    traced_o, rss_o = _mem("ours", 100_000)
    traced_b, rss_b = _mem("autogen", 10_000) if autogen else (float("nan"), float("nan"))
    rows.append(
        Row(
            "memory per live idle actor, tracemalloc (100k)",
            traced_o,
            traced_b,
            "B",
            base_name + " (10k)",
            higher_is_better=False,
            limit=1024,
        )
    )
    rows.append(
        Row(
            "memory per live idle actor, RSS (100k)",
            rss_o,
            rss_b,
            "B",
            base_name + " (10k)",
            higher_is_better=False,
            limit=1024,
        )
    )
    traced_p, _rss_p = _mem("passivated", 100_000)
    rows.append(
        Row(
            "memory per passivated id, tracemalloc (100k ids, 1k live)",
            traced_p,
            traced_o,
            "B",
            "our live actors",
            higher_is_better=False,
            limit=64,
        )
    )
    n_ids = int(os.environ.get("OPENHEIM_BENCH_PASSIVATED_IDS", "1000000"))
    rss_i, blocks_i, live_i, known_i, secs_i = _passivated_ids(n_ids)
    print(
        f"{n_ids:,} ids on SQLite: {known_i:,} snapshotted and passivated, {live_i} live "
        f"at the end, {secs_i:.0f} s; Python memory blocks per id {blocks_i:+.4f}"
    )
    rows.append(
        Row(
            f"memory per passivated id, RSS ({n_ids:,} ids on SQLite, 1k live)",
            rss_i,
            rss_o,
            "B",
            "our live actors (RSS)",
            higher_is_better=False,
            limit=64,
        )
    )
    return rows


if __name__ == "__main__":
    print_table("actor runtime vs autogen-core", run())
