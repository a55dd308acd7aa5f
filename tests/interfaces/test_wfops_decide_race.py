"""A decision that reaches the server while the run's driver (in this server) is stopping:
the decision is recorded once, answered as accepted, and the run goes on to its end.

The race is made certain: the driver's own ``approve`` is wrapped so that, once it has
recorded the decision, the run's other branch is let go and the driver is waited out
before the server looks again whether it still drives the run."""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, Any

import msgspec

import openheim as oh
from openheim.server._workflows import ServedWorkflows
from openheim.workflow import Decision, Workflow


class Job(msgspec.Struct):
    log: Annotated[list[str], oh.reducer(operator.add)] = msgspec.field(default_factory=list)
    legal: Decision | None = None


async def test_a_decision_while_its_driver_stops_continues_the_run(tmp_path: Path) -> None:
    wf = Workflow("race", state=Job, store=f"sqlite:///{tmp_path / 'runs.db'}")
    gate = asyncio.Event()
    sent: list[str] = []
    wf.step(lambda j: {"log": ["a"]}, name="a")
    wf.approval("review", output="legal")

    @wf.step
    async def slow(j: Job) -> dict[str, Any]:
        await asyncio.wait_for(gate.wait(), 10)
        return {"log": ["slow"]}

    @wf.step
    def send(j: Job) -> dict[str, Any]:
        sent.append("send")
        return {"log": ["send"]}

    wf.edge("a", "review")
    wf.edge("a", "slow")
    wf.edge(("review", "slow"), "send")
    served = ServedWorkflows({"race": wf})
    try:
        scoped = served.get("race", "t1")
        run_id = await served.start(scoped, None)
        for _ in range(200):
            pending = await scoped.approvals()
            if pending:
                break
            await asyncio.sleep(0.02)
        (approval,) = pending
        driver = served.driver(scoped, run_id)
        assert driver is not None  # slow still runs: this server drives the run
        real = driver.approve

        async def approve_then_stop(*args: Any, **kw: Any) -> Any:
            got = await real(*args, **kw)
            gate.set()  # the other branch ends, and with it the driver
            for _ in range(500):
                if not served.driving(scoped, run_id):
                    break
                await asyncio.sleep(0.01)
            assert not served.driving(scoped, run_id)
            return got

        driver.approve = approve_then_stop  # type: ignore[method-assign]
        assert await served.decide(scoped, approval.id, True, by="ann") == run_id
        for _ in range(500):
            res = await scoped.status(run_id)
            if res.status == "done":
                break
            await asyncio.sleep(0.02)
        assert res.status == "done"
        assert sorted(res.state.log) == ["a", "send", "slow"]
        assert res.state.legal is not None
        assert (res.state.legal.approved, res.state.legal.by) == (True, "ann")
        assert sent == ["send"]  # once
        (decided,) = await scoped.approvals(pending=False)
        assert decided.status == "approved"
    finally:
        await served.aclose()
        await wf.aclose()
