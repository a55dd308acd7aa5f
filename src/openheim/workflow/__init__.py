"""Workflows: a typed state, nodes and edges, run in-process with a checkpoint after every node.

::

    import msgspec, openheim as oh

    class Ticket(msgspec.Struct):
        text: str = ""
        kind: str = ""

    wf = oh.Workflow("triage", state=Ticket, store="sqlite:///state.db")

    @wf.step
    def classify(t: Ticket) -> dict:
        return {"kind": "bug" if "crash" in t.text else "question"}

    result = await wf.run({"text": "it crashes"})

Nodes: :meth:`Workflow.step`, ``agent``, ``tool``, ``branch``, ``map``,
``approval``, ``subworkflow``; edges: ``edge(a, b)``, ``edge((a, b), c)``
(a join), ``edge(a, fn, targets=...)`` (conditional). The graph is checked
when it is first run (or by ``validate()``). With a store, runs are
durable: ``resume``, ``fork``, ``history``, ``cancel``, and approvals decided
by ``approve(id, ...)`` from any process. :func:`from_config` builds one from
an ``openheim.toml`` ``[workflows.NAME]`` table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openheim.workflow._declare import from_config
from openheim.workflow._nodes import END, Retry
from openheim.workflow._records import ApprovalRecord, Budget, Decision, Lineage, Usage
from openheim.workflow._state import reducer
from openheim.workflow._step import StepInfo, current_step
from openheim.workflow._workflow import Workflow
from openheim.workflow.events import (
    ApprovalRequested,
    Checkpoint,
    NodeFinished,
    NodeRetrying,
    NodeStarted,
    RunFinished,
    RunStarted,
    TokenDelta,
    WorkflowEvent,
    WorkflowResult,
)

if TYPE_CHECKING:
    from openheim.workflow._batch import RunHandle
    from openheim.workflow._worker import Worker


def __getattr__(name: str) -> object:
    # Batch mode's classes, imported when used (they pull in the queue protocol).
    if name == "RunHandle":
        from openheim.workflow._batch import RunHandle

        return RunHandle
    if name == "Worker":
        from openheim.workflow._worker import Worker

        return Worker
    raise AttributeError(f"module 'openheim.workflow' has no attribute {name!r}")


__all__ = [
    "END",
    "ApprovalRecord",
    "ApprovalRequested",
    "Budget",
    "Checkpoint",
    "Decision",
    "Lineage",
    "NodeFinished",
    "NodeRetrying",
    "NodeStarted",
    "Retry",
    "RunFinished",
    "RunHandle",
    "RunStarted",
    "StepInfo",
    "TokenDelta",
    "Usage",
    "Worker",
    "Workflow",
    "WorkflowEvent",
    "WorkflowResult",
    "current_step",
    "from_config",
    "reducer",
]
