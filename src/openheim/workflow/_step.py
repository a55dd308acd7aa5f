"""``current_step()``: which run, step and attempt the running node code belongs to.

Node code reads it to make its side effects idempotent: the key is the same
each time the same attempt of the same step runs, whether a worker re-runs it
after another worker died (batch mode) or a process resumes the run after a
crash (real-time mode), and differs between retries::

    @wf.step
    async def charge(order: Order) -> dict:
        key = oh.workflow.current_step().idempotency_key
        await payments.charge(order.total, idempotency_key=key)
        return {"charged": True}
"""

from __future__ import annotations

import contextvars
from typing import Any

from openheim.errors import WorkflowError

__all__ = ["StepInfo", "current_step"]

# (run_id, task, attempt) of the node running in this context; set by the executors.
_STEP: contextvars.ContextVar[tuple[str, str, int] | None] = contextvars.ContextVar(
    "openheim_workflow_step", default=None
)


# The plain sync step running right now, if any: [view, node name, attempt]. A sync step
# runs to its end without yielding to the loop, so one cell is enough, and cheaper than
# setting the context variable for every step.
_FAST: list[Any] = [None, None, 1]


class StepInfo:
    """The step a piece of node code runs as."""

    __slots__ = ("attempt", "run_id", "task")

    def __init__(self, run_id: str, task: str, attempt: int) -> None:
        self.run_id = run_id
        self.task = task  # "<superstep>:<node>" or "<superstep>:<node>#<item index>"
        self.attempt = attempt  # 1, then 2, ... when the node's Retry policy retries it

    @property
    def node(self) -> str:
        return self.task.partition(":")[2].partition("#")[0]

    @property
    def idempotency_key(self) -> str:
        """``"<run id>/<task>/<attempt>"``: stable across re-runs of this attempt."""
        return f"{self.run_id}/{self.task}/{self.attempt}"

    def __repr__(self) -> str:
        return f"StepInfo(run_id={self.run_id!r}, task={self.task!r}, attempt={self.attempt})"


def current_step() -> StepInfo:
    """The step the calling node code runs as (see the module docstring).

    Raises :class:`WorkflowError` outside node code.
    """
    view = _FAST[0]
    if view is not None:
        return StepInfo(view.run_id, f"{view.step}:{_FAST[1]}", _FAST[2])
    got = _STEP.get()
    if got is None:
        raise WorkflowError(
            "current_step() is only available inside a workflow node's code (a step, "
            "an agent or tool node's callbacks, a map item)"
        )
    return StepInfo(*got)
