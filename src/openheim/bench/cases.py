"""The framework's own costs, each beside the same work on a peer: ``openheim bench overhead``.

Each :class:`Case` builds its openheim side and its peer side as *operations*
(an async callable doing ``per_op`` units of the work, e.g. one agent run or
1,000 mailbox messages) inside one event loop. Both sides run interleaved in
the same process, in batches of about ``seconds`` each, and the figure is the
median time per unit. The ratio is peer time / openheim time (how many times
cheaper openheim is). A peer that is not installed is reported as such.

The same builders serve the development benchmarks in ``benches/`` (run by
pytest-benchmark) so the two never drift apart.

Peers: pydantic-ai (agent loop), LangGraph (workflow chain and fan-out,
checkpointed step), autogen-core (actor ask); the standard library and
msgspec where no framework peer exists (mailbox, snapshot codec).
"""

from __future__ import annotations

import asyncio
import operator
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import msgspec

from openheim.workflow import reducer

__all__ = ["CASES", "WORDS", "Case", "Op", "measure", "peer_installed"]

# One unit of work (or per_op units); awaited in a loop.
Op = Callable[[], Awaitable[object]]
# Builds an op inside the running loop; returns (op, close).
Builder = Callable[[], Awaitable[tuple[Op, Callable[[], Awaitable[None]]]]]


async def _nothing() -> None:
    return None


@dataclass
class Case:
    key: str
    name: str
    ours: Builder
    peer_name: str
    peer: Builder
    peer_modules: tuple[str, ...]  # importable when the peer is installed
    per_op: int = 1
    target: float | None = None  # required ratio (peer time / ours)
    unit: str = "µs"


def peer_installed(case: Case) -> bool:
    import importlib.util

    for mod in case.peer_modules:
        try:
            if importlib.util.find_spec(mod) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


async def _batch(op: Op, seconds: float) -> float:
    """Seconds per op over a batch of about ``seconds`` (at least 3 ops)."""
    n = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds or n < 3:
        await op()
        n += 1
        elapsed = time.perf_counter() - t0
    return elapsed / n


async def _measure(
    case: Case, with_peer: bool, repeat: int, seconds: float
) -> tuple[float, float | None]:
    op, close = await case.ours()
    pop, pclose = await case.peer() if with_peer else (None, _nothing)
    try:
        for _ in range(2):  # warm caches, lazy imports, thread pools
            await op()
            if pop is not None:
                await pop()
        ours: list[float] = []
        peer: list[float] = []
        for _ in range(repeat):  # interleaved: machine noise hits both alike
            ours.append(await _batch(op, seconds))
            if pop is not None:
                peer.append(await _batch(pop, seconds))
    finally:
        await close()
        await pclose()
    scale = 1e6 / case.per_op
    return statistics.median(ours) * scale, (statistics.median(peer) * scale if peer else None)


def measure(
    case: Case, *, repeat: int = 5, seconds: float = 0.3, with_peer: bool | None = None
) -> tuple[float, float | None]:
    """(µs per unit for openheim, µs per unit for the peer or None when it is absent)."""
    if with_peer is None:
        with_peer = peer_installed(case)
    return asyncio.run(_measure(case, with_peer, repeat, seconds))


# ---- mailbox: Mailbox vs asyncio.Queue, one producer and one consumer task ---------------

MAILBOX_MSGS = 2000


def _queue_pair(make: Callable[[], Any]) -> Op:
    async def op() -> None:
        q = make()
        put, get = q.put, q.get

        async def produce() -> None:
            for i in range(MAILBOX_MSGS):
                await put(i)

        async def consume() -> None:
            for _ in range(MAILBOX_MSGS):
                await get()

        await asyncio.gather(produce(), consume())

    return op


async def mailbox_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from openheim import Mailbox

    return _queue_pair(lambda: Mailbox(1024)), _nothing


async def mailbox_stdlib() -> tuple[Op, Callable[[], Awaitable[None]]]:
    return _queue_pair(lambda: asyncio.Queue(1024)), _nothing


# ---- actor ask: Runtime ask vs autogen-core send_message ------------------------------------

ASKS = 100


@dataclass
class Ping:
    n: int


async def echo(msg: Ping, ctx: Any) -> Ping:
    return msg


async def actors_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from openheim.runtime import Runtime

    rt = Runtime()
    await rt.start()
    ref = rt.spawn(echo, id="echo/0")

    async def op() -> None:
        for i in range(ASKS):
            await ref.ask(Ping(i))

    async def close() -> None:
        await rt.stop()

    return op, close


_autogen_echo: Any = None


def autogen_echo_class() -> Any:
    """autogen-core's echo agent (built on first use: autogen reads its hints by name)."""
    global _autogen_echo
    if _autogen_echo is None:
        from autogen_core import MessageContext, RoutedAgent, message_handler

        async def on_ping(self: Any, message: Ping, ctx: Any) -> Ping:
            return message

        # autogen reads the handler's type hints; give it the classes, not strings.
        on_ping.__annotations__ = {"message": Ping, "ctx": MessageContext, "return": Ping}

        class AutogenEcho(RoutedAgent):  # type: ignore[misc,unused-ignore]
            def __init__(self) -> None:
                super().__init__("echo")

            handle_ping = message_handler(on_ping)

        _autogen_echo = AutogenEcho
    return _autogen_echo


async def actors_autogen() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from autogen_core import AgentId, SingleThreadedAgentRuntime

    cls = autogen_echo_class()
    runtime = SingleThreadedAgentRuntime()
    await cls.register(runtime, "echo", cls)
    runtime.start()
    agent = AgentId("echo", "0")

    async def op() -> None:
        for i in range(ASKS):
            await runtime.send_message(Ping(i), agent)

    async def close() -> None:
        await runtime.stop()

    return op, close


# ---- agent loop: a tool call and an answer, scripted model vs pydantic-ai TestModel ------


def scripted_agent(async_tool: bool = False) -> Any:
    """An agent whose scripted model calls ``add`` once, then answers "done"."""
    import openheim as oh
    from openheim.models import ModelRequest, ScriptedModel

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    async def add_async(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    call = oh.ToolCall("add", {"a": 0, "b": 0})

    def reply(request: ModelRequest) -> object:
        return "done" if request.messages[-1].role == "tool" else call

    fn = oh.tool(name="add")(add_async) if async_tool else oh.tool(add)
    return oh.Agent(ScriptedModel(reply), tools=[fn])


def pydantic_ai_agent(async_tool: bool = False) -> Any:
    """pydantic-ai's agent doing the same: TestModel calls ``add``, then answers "done"."""
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel(call_tools=["add"], custom_output_text="done"))

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    async def add_async(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent.tool_plain(name="add")(add_async if async_tool else add)
    return agent


async def agent_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    agent = scripted_agent()

    async def op() -> None:
        result = await agent.run("What is 0 + 0?")
        assert result.output == "done"

    return op, _nothing


async def agent_pydantic_ai() -> tuple[Op, Callable[[], Awaitable[None]]]:
    agent = pydantic_ai_agent()

    async def op() -> None:
        result = await agent.run("What is 0 + 0?")
        assert result.output == "done"

    return op, _nothing


# ---- workflows: a 3-node chain, a fan-out of 10 and a join --------------------------------


class WfState(msgspec.Struct):
    """openheim's side of the workflow cases (results gathered by a reducer)."""

    x: int = 0
    items: list[int] = msgspec.field(default_factory=list)
    results: Annotated[list[int], reducer(operator.add)] = msgspec.field(default_factory=list)
    joined: int = 0


def _reducer_state() -> Any:
    return WfState


def oh_chain(store: Any = None, wait: float = 0.0) -> Any:
    """openheim: a 3-node chain of no-op steps (the middle one may wait, like a model call)."""
    from openheim.workflow import Workflow

    wf = Workflow("chain", state=_reducer_state(), store=store)
    wf.step(lambda s: None, name="a")
    if wait:

        async def b(s: Any) -> None:
            await asyncio.sleep(wait)

        wf.step(b, name="b")
    else:
        wf.step(lambda s: None, name="b")
    wf.step(lambda s: None, name="c")
    wf.edge("a", "b")
    wf.edge("b", "c")
    return wf


def oh_fanout() -> Any:
    """openheim: a map node over a list (no-op per item, results joined) and a join step."""
    from openheim.workflow import Workflow

    wf = Workflow("fanout", state=_reducer_state())
    wf.map("work", "items", lambda i: i, output="results")
    wf.step(lambda s: {"joined": len(s.results)}, name="join")
    wf.edge("work", "join")
    return wf


class LgState(TypedDict):
    x: int


class LgFanState(TypedDict):
    items: list[int]
    results: Annotated[list[int], operator.add]
    joined: int


class LgItem(TypedDict):
    item: int


def lg_chain(checkpointer: Any = None, wait: float = 0.0) -> Any:
    """LangGraph: the same 3-node chain, compiled."""
    from langgraph.graph import END, START, StateGraph

    def noop(state: LgState) -> dict[str, Any]:
        return {}

    async def waits(state: LgState) -> dict[str, Any]:
        await asyncio.sleep(wait)
        return {}

    graph = StateGraph(LgState)
    graph.add_node("a", noop)
    graph.add_node("b", waits if wait else noop)
    graph.add_node("c", noop)
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.add_edge("c", END)
    return graph.compile(checkpointer=checkpointer)


def lg_fanout() -> Any:
    """LangGraph: 10 ``Send`` packets to a worker whose results a reducer gathers, a join."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    def work(state: LgItem) -> dict[str, Any]:
        return {"results": [state["item"]]}

    def fan(state: LgFanState) -> Any:
        return [Send("work", {"item": i}) for i in state["items"]]

    def join(state: LgFanState) -> dict[str, Any]:
        return {"joined": len(state["results"])}

    graph = StateGraph(LgFanState)
    graph.add_node("work", work)
    graph.add_node("join", join)
    graph.add_conditional_edges(START, fan, ["work"])
    graph.add_edge("work", "join")
    graph.add_edge("join", END)
    return graph.compile()


async def _lg_best(app: Any, inp: Any) -> Op:
    """LangGraph's faster entry point on this machine: ``invoke`` or ``ainvoke``."""

    async def sync_op() -> None:
        app.invoke(inp)

    async def async_op() -> None:
        await app.ainvoke(inp)

    s = await _batch(sync_op, 0.1)
    a = await _batch(async_op, 0.1)
    return sync_op if s <= a else async_op


async def chain_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    wf = oh_chain()

    async def op() -> None:
        await wf.run()

    return op, _nothing


async def chain_langgraph() -> tuple[Op, Callable[[], Awaitable[None]]]:
    return await _lg_best(lg_chain(), {"x": 0}), _nothing


async def fanout_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    wf = oh_fanout()
    items = {"items": list(range(10))}

    async def op() -> None:
        await wf.run(items)

    return op, _nothing


async def fanout_langgraph() -> tuple[Op, Callable[[], Awaitable[None]]]:
    inp = {"items": list(range(10)), "results": [], "joined": 0}
    return await _lg_best(lg_fanout(), inp), _nothing


# ---- a checkpointed step: durable agent runs vs LangGraph SqliteSaver ----------------------


def checkpointed_agent(store: Any) -> Any:
    """A 3-step agent run (two tool calls, then an answer), checkpointed at every step."""
    import openheim as oh
    from openheim.messages import ToolCall
    from openheim.models import ModelRequest, ScriptedModel
    from openheim.stores import Checkpointer, StoreHistory

    @oh.tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    first = ToolCall("lookup", {"key": "a"})
    second = ToolCall("lookup", {"key": "b"})

    def reply(request: ModelRequest) -> object:
        tools = sum(1 for m in request.messages if m.role == "tool")
        if request.messages[-1].role == "user":
            return first
        return second if tools == 1 else "the answer"

    return oh.Agent(
        ScriptedModel(reply),
        tools=[lookup],
        history=StoreHistory(store),
        checkpointer=Checkpointer(store),
    )


class LgMsgState(TypedDict):
    messages: list[str]


def lg_checkpointed_graph(checkpointer: Any) -> Any:
    """LangGraph: a 3-node graph (plan, act, answer) with a checkpoint per step."""
    from langgraph.graph import END, START, StateGraph

    def step(name: str) -> Any:
        def node(state: LgMsgState) -> dict[str, list[str]]:
            return {"messages": [*state["messages"], f"{name} done"]}

        return node

    graph = StateGraph(LgMsgState)
    for name in ("plan", "act", "answer"):
        graph.add_node(name, step(name))
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "act")
    graph.add_edge("act", "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer)


async def checkpointed_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from openheim.stores import open_store

    tmp = tempfile.mkdtemp(prefix="openheim-bench-")
    store = open_store(f"sqlite://{tmp}/oh.db")
    agent = checkpointed_agent(store)
    n = [0]

    async def op() -> None:
        n[0] += 1
        result = await agent.run("question", session=f"s{n[0] % 64}")
        assert result.output == "the answer"

    async def close() -> None:
        await store.aclose()
        shutil.rmtree(tmp, ignore_errors=True)

    return op, close


async def checkpointed_langgraph() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    tmp = tempfile.mkdtemp(prefix="openheim-bench-")
    conn = sqlite3.connect(f"{tmp}/lg.db", check_same_thread=False)
    app = lg_checkpointed_graph(SqliteSaver(conn))
    n = [0]

    async def op() -> None:
        n[0] += 1
        out = app.invoke({"messages": ["question"]}, {"configurable": {"thread_id": f"t{n[0]}"}})
        assert len(out["messages"]) == 4

    async def close() -> None:
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)

    return op, close


# ---- the snapshot codec: a framed, versioned checkpoint vs bare msgspec ---------------------


# The words the codec benchmarks' conversations are made of (also benches/bench_codec.py).
WORDS = [
    "the",
    "agent",
    "checks",
    "the",
    "weather",
    "in",
    "paris",
    "and",
    "then",
    "books",
    "a",
    "table",
    "for",
    "two",
    "at",
    "eight",
    "tomorrow",
    "evening",
    "while",
    "keeping",
    "the",
    "user",
    "informed",
    "about",
    "every",
    "step",
    "it",
    "takes",
]


def conversation_checkpoint(n: int = 50) -> Any:
    """A checkpoint of a 50-message run (text, tool calls, tool results)."""
    from openheim.messages import Message, ToolCall
    from openheim.snapshot import RunState, checkpoint_of

    messages = [Message.system("You are a helpful assistant. " * 4)]
    for i in range(1, n):
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(20 + i % 60))
        if i % 7 == 3:
            call = ToolCall("get_weather", {"city": "Paris", "days": i % 5}, f"call_{i}")
            messages.append(Message.assistant(text[:120], [call]))
        elif i % 7 == 4:
            messages.append(Message.tool(f"call_{i - 1}", "get_weather", text))
        else:
            messages.append(Message.user(text) if i % 2 else Message.assistant(text))
    state = RunState(run_id="run-1", agent="assistant", messages=messages)
    return checkpoint_of(state, "running", 0)


async def codec_ours() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from openheim.snapshot import decode_checkpoint, encode_checkpoint

    cp = conversation_checkpoint()

    async def op() -> None:
        decode_checkpoint(encode_checkpoint(cp, snapshot=True))

    return op, _nothing


async def codec_msgspec() -> tuple[Op, Callable[[], Awaitable[None]]]:
    from openheim.snapshot import RunCheckpoint

    cp = conversation_checkpoint()
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(RunCheckpoint)

    async def op() -> None:
        dec.decode(enc.encode(cp))

    return op, _nothing


CASES: list[Case] = [
    Case(
        "mailbox",
        f"mailbox: put + get, per message ({MAILBOX_MSGS:,} a batch)",
        mailbox_ours,
        "asyncio.Queue",
        mailbox_stdlib,
        (),
        per_op=MAILBOX_MSGS,
        target=3.0,
    ),
    Case(
        "actor_ask",
        "actor ask: request + reply, one caller",
        actors_ours,
        "autogen-core",
        actors_autogen,
        ("autogen_core",),
        per_op=ASKS,
        target=20.0,
    ),
    Case(
        "agent_loop",
        "agent run: tool call + answer (scripted model)",
        agent_ours,
        "pydantic-ai",
        agent_pydantic_ai,
        ("pydantic_ai",),
        target=20.0,
    ),
    Case(
        "workflow_chain",
        "workflow: 3-node no-op chain, per run",
        chain_ours,
        "LangGraph",
        chain_langgraph,
        ("langgraph",),
        target=30.0,
    ),
    Case(
        "workflow_fanout",
        "workflow: fan-out of 10 + join, per run",
        fanout_ours,
        "LangGraph",
        fanout_langgraph,
        ("langgraph",),
        target=30.0,
    ),
    Case(
        "checkpointed_step",
        "checkpointed 3-step run, SQLite fsync, 1 at a time",
        checkpointed_ours,
        "LangGraph SqliteSaver",
        checkpointed_langgraph,
        ("langgraph", "langgraph.checkpoint.sqlite"),
    ),
    Case(
        "snapshot_codec",
        "snapshot codec: encode + decode a 50-message checkpoint",
        codec_ours,
        "bare msgspec (no frame, no CRC)",
        codec_msgspec,
        (),
        target=0.67,
    ),
]
