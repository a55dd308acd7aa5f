"""The workflow routes' structs on the HTTP wire (``routes/workflows.py``).

Requests are decoded into them and ``/openapi.json`` is generated from them
(with the other wire structs of ``_schemas.py``); the answers are built from
the engine's own records (:class:`~openheim.workflow.ApprovalRecord`,
:class:`~openheim.workflow.Usage`, :class:`~openheim.workflow.Checkpoint`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from openheim.workflow import ApprovalRecord, Usage

__all__ = [
    "WorkflowApprovals",
    "WorkflowDecided",
    "WorkflowDecision",
    "WorkflowFork",
    "WorkflowForked",
    "WorkflowRun",
    "WorkflowStarted",
    "WorkflowSubmit",
]


class WorkflowSubmit(msgspec.Struct, forbid_unknown_fields=True):
    """Start a run: its input state fields; ``wait`` answers once it ends or waits."""

    input: dict[str, Any] = msgspec.field(default_factory=dict)
    run_id: str | None = None
    wait: bool = False


class WorkflowFork(msgspec.Struct, forbid_unknown_fields=True):
    """Fork a run at a checkpoint (default: its last) with state fields changed."""

    checkpoint: int | None = None
    state: dict[str, Any] | None = None


class WorkflowDecision(msgspec.Struct, forbid_unknown_fields=True):
    """Decide an approval; ``edits`` change state fields as the run goes on."""

    approved: bool
    by: str | None = None
    reason: str | None = None
    edits: dict[str, Any] | None = None


class WorkflowRun(msgspec.Struct):
    """A run: running, waiting (for approvals), done, failed or cancelled."""

    run_id: str
    status: str
    state: dict[str, Any]
    pending: list[ApprovalRecord]
    usage: Usage
    error: str | None = None


class WorkflowStarted(msgspec.Struct):
    run_id: str
    status: str


class WorkflowForked(msgspec.Struct):
    run_id: str
    forked_from: str


class WorkflowApprovals(msgspec.Struct):
    approvals: list[ApprovalRecord]


class WorkflowDecided(msgspec.Struct):
    approval_id: str
    run_id: str
