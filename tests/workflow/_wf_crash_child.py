"""A process running a durable workflow, for the crash tests (test_wf_crash.py).

``python _wf_crash_child.py STORE_URL NAMESPACE EFFECTS MODE RUN_ID [APPROVAL_ID]``

Every node appends ``<node> <pid>`` to EFFECTS (fsynced) when it starts, so
the parent can count executions across processes. Modes: ``run`` starts run
RUN_ID of the 6-step chain; ``resume`` resumes it; ``gate`` starts run RUN_ID
of the approval workflow, prints ``WAITING <approval id>`` and then idles
until killed; ``approve`` approves APPROVAL_ID (resuming the run). The
finished state is printed as ``DONE <json>``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from typing import Any

import msgspec

from openheim.workflow import Decision, Workflow

STEPS = ["s1", "s2", "s3", "s4", "s5", "s6"]


class State(msgspec.Struct):
    log: list[str] = msgspec.field(default_factory=list)
    ok: Decision | None = None


def effect(path: str, node: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{node} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def chain(store: str, ns: str, effects: str) -> Workflow:
    wf = Workflow("crashy", state=State, store=store, namespace=ns)
    for name in STEPS:

        async def step(s: State, name: str = name) -> dict[str, Any]:
            effect(effects, name)
            await asyncio.sleep(0.3)
            return {"log": [*s.log, name]}

        wf.step(step, name=name)
    for a, b in itertools.pairwise(STEPS):
        wf.edge(a, b)
    return wf


def gated(store: str, ns: str, effects: str) -> Workflow:
    wf = Workflow("gated", state=State, store=store, namespace=ns)

    def before(s: State) -> dict[str, Any]:
        effect(effects, "before")
        return {"log": ["before"]}

    def payload(s: State) -> dict[str, Any]:
        effect(effects, "gate")
        return {"log": s.log}

    def after(s: State) -> dict[str, Any]:
        effect(effects, "after")
        return {"log": [*s.log, "after"]}

    wf.step(before)
    wf.approval("gate", payload=payload, output="ok")
    wf.step(after)
    wf.edge("before", "gate")
    wf.edge("gate", "after")
    return wf


async def main(argv: list[str]) -> None:
    store, ns, effects, mode, run_id = argv[:5]
    if mode in ("run", "resume"):
        wf = chain(store, ns, effects)
        print("READY", flush=True)
        res = await (wf.run(run_id=run_id) if mode == "run" else wf.resume(run_id))
    elif mode == "gate":
        wf = gated(store, ns, effects)
        res = await wf.run(run_id=run_id)
        print("WAITING", res.pending[0].id, flush=True)
        await asyncio.sleep(3600)  # the run waits holding nothing; the parent kills us
        return
    else:
        wf = gated(store, ns, effects)
        got = await wf.approve(argv[5], True, by="parent")
        assert got is not None
        res = got
    print("DONE", msgspec.json.encode(res.state).decode(), res.status, flush=True)
    await wf.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
