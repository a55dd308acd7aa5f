"""One workflow, three modes: real-time, Redis batch and NATS batch give the same final
state and the same checkpoint history, for every node kind.

Real-time runs on a SQLite store; batch runs go through a queue and a worker
(in this process, on its own queue name and store namespace). Histories are
compared without their ids and times, and with the parallel commits of one
superstep in a fixed order (in batch mode they land in the order workers
finish them).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from batchflows import FLOWS
from batchhelpers import NATS_URL, REDIS_URL, drop_namespace

from openheim.errors import BudgetExceededError, WorkflowStepError
from openheim.workflow import Checkpoint, Worker, Workflow

MODES = [
    pytest.param("realtime", id="realtime"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


class Mode:
    """Runs a case in one mode and reads its history back."""

    def __init__(self, kind: str, tmp: Any) -> None:
        self.kind = kind
        self.tmp = tmp
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.url = {"redis": REDIS_URL, "nats": NATS_URL}.get(kind, "")
        self.workers: list[tuple[Worker, asyncio.Task[Any]]] = []
        self.wfs: list[Workflow] = []

    def build(self, case: str) -> tuple[Workflow, Any]:
        store = f"sqlite://{self.tmp}/rt.db" if self.kind == "realtime" else None
        wf, inp = FLOWS[case](store)
        self.wfs.append(wf)
        if self.kind != "realtime":
            w = Worker([wf], self.url, queue_name=self.name, visibility_timeout=10)
            self.workers.append((w, asyncio.ensure_future(w.run(drain_timeout=5))))
        return wf, inp

    async def run(self, wf: Workflow, inp: Any) -> tuple[str, Any]:
        """(run id, result or the exception raised)."""
        run_id = f"wf-{uuid.uuid4().hex[:10]}-1"
        if self.kind == "realtime":
            try:
                res = await wf.run(inp, run_id=run_id)
            except Exception as exc:
                return run_id, exc
            return res.run_id, res
        h = await wf.submit(
            inp, queue=self.url, queue_name=self.name, namespace=self.name, run_id=run_id
        )
        try:
            return h.run_id, await h.result(timeout=30)
        except Exception as exc:
            return h.run_id, exc

    async def approve(self, wf: Workflow, approval_id: str) -> None:
        if self.kind == "realtime":
            await wf.approve(approval_id, True, by="alice")
        else:
            await wf.approve(
                approval_id,
                True,
                by="alice",
                queue=self.url,
                queue_name=self.name,
                namespace=self.name,
            )

    async def result(self, wf: Workflow, run_id: str) -> Any:
        if self.kind == "realtime":
            return await wf.status(run_id)
        h = wf.handle(run_id, queue=self.url, queue_name=self.name, namespace=self.name)
        return await h.result(timeout=30)

    async def history(self, wf: Workflow, run_id: str) -> list[Checkpoint]:
        if self.kind == "realtime":
            return await wf.history(run_id)
        h = wf.handle(run_id, queue=self.url, queue_name=self.name, namespace=self.name)
        return await h.history()

    async def close(self) -> None:
        for w, t in self.workers:
            w.stop()
            await t
            if self.kind != "realtime":
                await w.batch.queue.purge()
                await drop_namespace(w.batch.store, self.name)
            await w.aclose()
        for wf in self.wfs:
            await wf.aclose()


def _norm(history: list[Checkpoint], run_id: str) -> list[tuple[Any, ...]]:
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return re.sub(r"wf-[0-9a-f]+-\d+", "RUN", v.replace(run_id, "RUN"))
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k != "at"}  # decision times
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    rows = [
        (cp.kind, cp.node, clean(cp.task), clean(cp.changed), clean(cp.detail)) for cp in history
    ]

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        kind, node, task, _, detail = row
        if kind == "start":
            return (-1,)
        step = int(task.split(":")[0]) if task and task[0].isdigit() else 10**6
        return (step, kind != "item", node or "", str(detail))

    return sorted(rows, key=key)


@pytest.fixture(params=MODES)
async def mode(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Mode]:
    m = Mode(request.param, tmp_path)
    try:
        yield m
    finally:
        await m.close()


async def _outcome(mode: Mode, case: str) -> tuple[Any, list[tuple[Any, ...]]]:
    wf, inp = mode.build(case)
    run_id, res = await mode.run(wf, inp)
    if case == "approval":
        assert res.status == "waiting"
        assert [p.node for p in res.pending] == ["review"]
        await mode.approve(wf, res.pending[0].id)
        res = await mode.result(wf, run_id)
    if isinstance(res, BaseException):
        outcome: Any = (type(res).__name__, re.sub(r"wf-[0-9a-f]+-\d+", "RUN", str(res)))
    else:
        state = msgspec.structs.replace(res.state)
        if isinstance(state.decision, dict):
            state.decision = {k: v for k, v in state.decision.items() if k != "at"}
        outcome = (res.status, state)
    return outcome, _norm(await mode.history(wf, run_id), run_id)


EXPECTED = {
    "chain": lambda s: s.log == ["first", "second saw hi!"] and s.total == 2,
    "branch": lambda s: s.log == ["fix", "big"],
    "parallel": lambda s: s.log == ["left", "right", "after_left", "join saw 3"],
    "map": lambda s: s.out == ["A", "BB", "CCC", "DDDD"] and s.total == 26,
    "agent": lambda s: s.answer == "The answer is forty two.",
    "tool": lambda s: s.looked_up == "ab=abab",
    "cycle": lambda s: s.rounds == 5,
    "retry": lambda s: s.log == ["attempt 2"],
    "subworkflow": lambda s: s.out == ["fact about owls", "checked"] and s.total == 2,
    "approval": lambda s: s.log == ["drafted", "sent"] and s.decision["approved"] is True,
}


@pytest.mark.parametrize("case", sorted(FLOWS))
async def test_every_node_kind_gives_the_same_state_and_history_in_every_mode(
    mode: Mode, case: str, tmp_path: Any
) -> None:
    outcome, history = await _outcome(mode, case)
    if case in EXPECTED:
        status, state = outcome
        assert status == "done", outcome
        assert EXPECTED[case](state), state
    elif case == "failing":
        assert outcome[0] == WorkflowStepError.__name__
        assert "node 'boom'" in outcome[1]
        assert "RuntimeError: boom" in outcome[1]
    elif case == "budget":
        assert outcome[0] == BudgetExceededError.__name__
        assert "steps (2 of 2)" in outcome[1]
    if mode.kind == "realtime":
        return
    # The same case in real-time mode, in this test (not relying on test order).
    rt = Mode("realtime", tmp_path)
    try:
        expected = await _outcome(rt, case)
    finally:
        await rt.close()
    assert outcome == expected[0]
    assert history == expected[1]
