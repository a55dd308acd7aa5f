"""Workflows the batch-mode tests run in real-time and batch mode (and in worker processes).

``FLOWS`` maps a case name to a factory ``make(store) -> (workflow, input)``:
each call builds a fresh workflow (its agents' scripted models start over),
so the same case runs once per mode. Module-level workflows are what
``openheim worker --workflows batchflows:NAME`` processes load.
"""

from __future__ import annotations

import asyncio
import operator
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec

import openheim as oh
from openheim.models import ScriptedModel
from openheim.workflow import END, Budget, Retry, Workflow, current_step


class Doc(msgspec.Struct):
    text: str = ""
    kind: str = ""
    log: Annotated[list[str], oh.reducer(operator.add)] = msgspec.field(default_factory=list)
    items: list[str] = msgspec.field(default_factory=list)
    out: list[str] = msgspec.field(default_factory=list)
    total: int = 0
    answer: str = ""
    looked_up: str = ""
    rounds: int = 0
    decision: Any = None


class Inner(msgspec.Struct):
    topic: str = ""
    notes: list[str] = msgspec.field(default_factory=list)


Make = Callable[[Any], tuple[Workflow, Any]]


def chain(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-chain", state=Doc, store=store)

    @wf.step
    def first(d: Doc) -> dict[str, Any]:
        return {"log": ["first"], "text": d.text + "!"}

    @wf.step
    async def second(d: Doc) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"log": [f"second saw {d.text}"]}

    @wf.step(thread=True)
    def third(d: Doc) -> dict[str, Any]:
        return {"total": len(d.log)}

    wf.edge("first", "second")
    wf.edge("second", "third")
    return wf, {"text": "hi"}


def branch(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-branch", state=Doc, store=store)
    wf.step(lambda d: {"kind": "bug" if "crash" in d.text else "question"}, name="classify")
    wf.branch("route", lambda d: d.kind, targets={"bug": "fix", "question": "reply"})
    wf.step(lambda d: {"log": ["fix"]}, name="fix")
    wf.step(lambda d: {"log": ["reply"]}, name="reply")
    wf.step(lambda d: {"total": 5}, name="count")
    wf.step(lambda d: {"log": ["big"]}, name="big")
    wf.edge("classify", "route")
    wf.edge("fix", "count")
    wf.edge("count", lambda d: "big" if d.total > 3 else END, targets=["big", END])
    return wf, {"text": "it crashes"}


def parallel(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-parallel", state=Doc, store=store)
    wf.step(lambda d: None, name="start")

    @wf.step
    async def left(d: Doc) -> dict[str, Any]:
        return {"log": ["left"]}

    @wf.step
    async def right(d: Doc) -> dict[str, Any]:
        return {"log": ["right"]}

    wf.step(lambda d: {"log": ["after_left"]}, name="after_left")
    wf.step(lambda d: {"log": [f"join saw {len(d.log)}"]}, name="join")
    wf.edge("start", "left")
    wf.edge("start", "right")
    wf.edge("left", "after_left")
    wf.edge(("after_left", "right"), "join")
    return wf, {}


def mapped(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-map", state=Doc, store=store)

    async def shout(item: str) -> str:
        await asyncio.sleep(0)
        return item.upper()

    wf.map("shout", "items", shout, output="out")
    wf.map(
        "count",
        lambda d: d.out,
        lambda item, d: len(item) + len(d.items),
        output="total",
        reduce=sum,
    )
    wf.edge("shout", "count")
    return wf, {"items": ["a", "bb", "ccc", "dddd"]}


def agent(store: Any) -> tuple[Workflow, Any]:
    writer = oh.Agent(ScriptedModel(lambda req: "The answer is forty two."), name="writer")
    wf = Workflow("b-agent", state=Doc, store=store)
    wf.agent("draft", writer, prompt=lambda d: f"Answer: {d.text}", output="answer")
    return wf, {"text": "meaning of life"}


def tool(store: Any) -> tuple[Workflow, Any]:
    @oh.tool
    def lookup(key: str, times: int = 1) -> str:
        """Look a key up."""
        return f"{key}={key * times}"

    wf = Workflow("b-tool", state=Doc, store=store)
    wf.tool("lookup", lookup, args=lambda d: {"key": d.text, "times": "2"}, output="looked_up")
    return wf, {"text": "ab"}


def cycle(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-cycle", state=Doc, store=store, max_steps=50)
    wf.step(lambda d: {"rounds": d.rounds + 1}, name="work")
    wf.edge("work", lambda d: "work" if d.rounds < 5 else END, targets=["work", END])
    return wf, {}


def retry(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-retry", state=Doc, store=store)
    seen: dict[str, int] = {}

    @wf.step(retry=Retry(attempts=3, backoff=0.0))
    def flaky(d: Doc) -> dict[str, Any]:
        step = current_step()
        seen[step.run_id] = seen.get(step.run_id, 0) + 1
        if seen[step.run_id] < 2:
            raise ValueError("first try fails")
        return {"log": [f"attempt {step.attempt}"]}

    return wf, {}


def subflow(store: Any) -> tuple[Workflow, Any]:
    research = Workflow("b-research", state=Inner)
    research.step(lambda s: {"notes": [f"fact about {s.topic}"]}, name="search")
    research.step(lambda s: {"notes": [*s.notes, "checked"]}, name="check")
    research.edge("search", "check")
    wf = Workflow("b-outer", state=Doc, store=store)
    wf.subworkflow(
        "research",
        research,
        input=lambda d: {"topic": d.text},
        output=lambda inner: {"out": inner.notes},
    )
    wf.step(lambda d: {"total": len(d.out)}, name="count")
    wf.edge("research", "count")
    return wf, {"text": "owls"}


def approval(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-approval", state=Doc, store=store)
    wf.step(lambda d: {"log": ["drafted"]}, name="draft")
    wf.approval("review", payload=lambda d: {"log": d.log}, output="decision")
    wf.step(lambda d: {"log": ["sent"]}, name="send")
    wf.edge("draft", "review")
    wf.edge("review", "send")
    return wf, {}


def failing(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-failing", state=Doc, store=store)
    wf.step(lambda d: {"log": ["ok"]}, name="ok")

    @wf.step
    def boom(d: Doc) -> None:
        raise RuntimeError("boom")

    wf.edge("ok", "boom")
    return wf, {}


def budget_fail(store: Any) -> tuple[Workflow, Any]:
    wf = Workflow("b-budget", state=Doc, store=store, budget=Budget(steps=2))
    for name in ("a", "b", "c"):
        wf.step(lambda d, n=name: {"log": [n]}, name=name)
    wf.edge("a", "b")
    wf.edge("b", "c")
    return wf, {}


FLOWS: dict[str, Make] = {
    "chain": chain,
    "branch": branch,
    "parallel": parallel,
    "map": mapped,
    "agent": agent,
    "tool": tool,
    "cycle": cycle,
    "retry": retry,
    "subworkflow": subflow,
    "approval": approval,
    "failing": failing,
    "budget": budget_fail,
}

# -- for worker processes ------------------------------------------------------------------

noop = Workflow("b-noop", state=Doc)
for _i in range(10):
    noop.step(lambda d: None, name=f"s{_i}")
    if _i:
        noop.edge(f"s{_i - 1}", f"s{_i}")

slow = Workflow("b-slow", state=Doc)


@slow.step
def before(d: Doc) -> dict[str, Any]:
    return {"log": ["before"]}


def _record_effect() -> None:
    """A side effect de-duplicated by its idempotency key (a file per key, O_EXCL),
    plus a line per execution in runs.log."""
    folder = Path(os.environ["OH_BATCH_EFFECTS"])
    step = current_step()
    with open(folder / "runs.log", "a") as f:
        f.write(f"{os.getpid()} {step.idempotency_key}\n")
    name = "effect-" + step.idempotency_key.replace("/", "_")
    try:
        fd = os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)


@slow.step
async def effect(d: Doc) -> dict[str, Any]:
    """The side effect, then a pause long enough to kill the worker in."""
    _record_effect()
    await asyncio.sleep(float(os.environ.get("OH_BATCH_SLEEP", "3")))
    return {"log": [f"effect by {os.getpid()}"]}


@slow.step
def after(d: Doc) -> dict[str, Any]:
    return {"log": ["after"]}


slow.edge("before", "effect")
slow.edge("effect", "after")

review, _ = approval(None)
review.name = "b-review"

sleepy = Workflow("b-sleepy", state=Doc)


@sleepy.step
async def nap(d: Doc) -> dict[str, Any]:
    t0 = time.monotonic()
    await asyncio.sleep(float(os.environ.get("OH_BATCH_SLEEP", "1")))
    return {"log": [f"napped {time.monotonic() - t0 >= 0}"]}


crashy = Workflow("b-crashy", state=Doc)


@crashy.step
def always_crash(d: Doc) -> None:
    os._exit(3)  # the worker process dies mid-step, every time
