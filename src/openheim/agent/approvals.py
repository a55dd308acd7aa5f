"""Runs paused for approval, from any process: list them, decide, continue them.

A run that calls a ``requires_approval=True`` tool with a checkpointer stops
with its pending calls recorded in the store, so the decision can come later
and from elsewhere (the HTTP and gRPC routes, ``openheim approvals``, a
Python script after a restart). This module is the one place that logic
lives; the interfaces only map their requests onto it::

    for paused in await paused_runs(agent.checkpointer):
        print(paused.run_id, [(c.id, c.tool, c.arguments) for c in paused.pending])

    async for event in resume_paused(agent, run_id, {"call_1": True, "call_2": False}):
        ...                                   # the run's events; the last is Done
    result = await decide(agent, run_id, {"call_1": Approval(False, "not now")})

A run is continued under its lease (``lease/run/<run_id>`` in the
checkpointer's store), so two processes deciding the same run at once never
both run its tools: the second gets :class:`~openheim.errors.ApprovalError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING

import msgspec

from openheim.agent.events import AgentEvent, result_of
from openheim.agent.result import Approval, PendingApproval, RunResult
from openheim.errors import ApprovalError, ConfigError
from openheim.stores.lease import Lease

if TYPE_CHECKING:
    from openheim.agent._agent import Agent
    from openheim.stores.checkpoint import Checkpointer

__all__ = [
    "PausedRun",
    "check_decisions",
    "decide",
    "paused_run",
    "paused_runs",
    "resume_paused",
    "run_lease",
]

Decision = bool | Approval


class PausedRun(msgspec.Struct, frozen=True):
    """A run waiting for decisions: its id, agent, session and the calls that need one."""

    run_id: str
    agent: str
    session: str | None
    pending: list[PendingApproval]
    at: float  # when it paused (epoch seconds)


def run_lease(checkpointer: Checkpointer, run_id: str, *, ttl: float = 30.0) -> Lease:
    """The lease that whoever executes run ``run_id`` holds, in the checkpointer's store."""
    return Lease(checkpointer.store, "run/" + run_id, ttl=ttl)


async def paused_run(checkpointer: Checkpointer, run_id: str) -> PausedRun | None:
    """Run ``run_id`` if it is paused for approval (None if unknown, running or finished)."""
    cp = await checkpointer.load(run_id)
    if cp is None or cp.status != "paused":
        return None
    from openheim.snapshot import state_of

    state = state_of(cp)
    if not state.pending:
        return None
    return PausedRun(state.run_id, state.agent, state.session, list(state.pending), cp.at)


async def paused_runs(checkpointer: Checkpointer) -> list[PausedRun]:
    """Every run in the checkpointer's store (one tenant) paused for approval, oldest first."""
    found = []
    for run_id in await checkpointer.runs():
        paused = await paused_run(checkpointer, run_id)
        if paused is not None:
            found.append(paused)
    return sorted(found, key=lambda p: (p.at, p.run_id))


def check_decisions(paused: PausedRun, approvals: Mapping[str, Decision]) -> dict[str, Approval]:
    """``approvals`` as Approval records; ApprovalError unless it decides every pending call.

    Checked before anything runs, so a bad request changes nothing.
    """
    ids = [p.id for p in paused.pending]
    unknown = [c for c in approvals if c not in ids]
    if unknown:
        raise ApprovalError(
            f"run {paused.run_id!r} has no pending tool call {', '.join(map(repr, unknown))} "
            f"(pending: {', '.join(ids)})"
        )
    missing = [c for c in ids if c not in approvals]
    if missing:
        raise ApprovalError(
            f"run {paused.run_id!r}: decide every pending call; {', '.join(missing)} "
            "has no decision (approve or reject each one)"
        )
    out: dict[str, Approval] = {}
    for call_id, decision in approvals.items():
        if isinstance(decision, Approval):
            out[call_id] = decision
        elif isinstance(decision, bool):
            out[call_id] = Approval(decision)
        else:
            raise ConfigError(
                f"the decision on {call_id!r} must be True/False or an Approval, "
                f"got {type(decision).__name__}"
            )
    return out


def _checkpointer(agent: Agent) -> Checkpointer:
    if agent.checkpointer is None:
        raise ConfigError(
            f"agent {agent.name!r} has no checkpointer, so its paused runs are not stored: "
            "create it with Agent(..., checkpointer=...) to decide them later"
        )
    return agent.checkpointer


async def resume_paused(
    agent: Agent,
    run_id: str,
    approvals: Mapping[str, Decision],
    *,
    lease: Lease | None = None,
) -> AsyncGenerator[AgentEvent, None]:
    """Decide the pending calls of paused run ``run_id`` and continue it, yielding its events.

    ``approvals`` decides every pending call (True/False or an
    :class:`Approval` with a reason). The run's lease is held while it runs
    (pass ``lease`` to use one you hold already). ApprovalError if the run is
    not paused, belongs to another agent, is being continued elsewhere, or
    the decisions do not match its pending calls.
    """
    ckpt = _checkpointer(agent)
    own = lease is None
    if lease is None:
        lease = run_lease(ckpt, run_id)
        if not await lease.acquire():
            raise ApprovalError(
                f"run {run_id!r} is being continued by another process; "
                "read its events or try again when it has paused or finished"
            )
    try:
        paused = await paused_run(ckpt, run_id)
        if paused is None:
            raise ApprovalError(
                f"run {run_id!r} is not waiting for approvals (unknown, finished, or "
                "already decided)"
            )
        if paused.agent != agent.name:
            raise ApprovalError(
                f"run {run_id!r} belongs to agent {paused.agent!r}, not {agent.name!r}"
            )
        decisions = check_decisions(paused, approvals)
        cp = await ckpt.load(run_id)
        assert cp is not None
        from openheim.snapshot import state_of

        state = state_of(cp)
        state.decisions = {}
        keep = lease.kept() if own else contextlib.nullcontext(lease)
        async with (
            keep,
            contextlib.aclosing(agent.stream(resume=state, approvals=decisions)) as events,
        ):
            async for event in events:
                yield event
    finally:
        if own and lease.held:
            await lease.release()


async def decide(agent: Agent, run_id: str, approvals: Mapping[str, Decision]) -> RunResult:
    """:func:`resume_paused` to the end: the continued run's result."""
    return await result_of(resume_paused(agent, run_id, approvals))
