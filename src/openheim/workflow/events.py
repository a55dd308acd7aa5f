"""What ``wf.stream(...)`` yields, and what runs return.

A stream begins with :class:`RunStarted` (it carries the run id) and ends with
:class:`RunFinished` (the :class:`WorkflowResult`). In between: each node's
:class:`NodeStarted` and :class:`NodeFinished` (with the fields it updated),
:class:`NodeRetrying` after a failed attempt, :class:`TokenDelta` pieces of an
agent node's text, and :class:`ApprovalRequested` when a run starts waiting.
"""

from __future__ import annotations

from typing import Any

import msgspec

from openheim.workflow._records import ApprovalRecord, Usage

__all__ = [
    "ApprovalRequested",
    "Checkpoint",
    "NodeFinished",
    "NodeRetrying",
    "NodeStarted",
    "RunFinished",
    "RunStarted",
    "TokenDelta",
    "WorkflowEvent",
    "WorkflowResult",
]


class RunStarted(msgspec.Struct, frozen=True):
    run_id: str
    workflow: str


class NodeStarted(msgspec.Struct, frozen=True):
    run_id: str
    node: str
    task: str


class NodeFinished(msgspec.Struct, frozen=True):
    run_id: str
    node: str
    task: str
    updates: dict[str, Any]


class NodeRetrying(msgspec.Struct, frozen=True):
    run_id: str
    node: str
    attempt: int
    error: str
    delay: float


class TokenDelta(msgspec.Struct, frozen=True):
    """A piece of text from an agent node's model."""

    run_id: str
    node: str
    text: str


class ApprovalRequested(msgspec.Struct, frozen=True):
    approval: ApprovalRecord


class WorkflowResult:
    """A run's outcome: ``state``, ``status`` and ``run_id``.

    ``status`` is ``"done"``, or ``"waiting"`` when the run waits for the
    approvals in ``pending`` (``wf.approve(pending[0].id, True)`` continues
    it). ``usage`` counts node executions, model tokens and active seconds.
    """

    __slots__ = ("error", "pending", "run_id", "state", "status", "usage")

    def __init__(
        self,
        run_id: str,
        state: Any,
        status: str,
        pending: list[ApprovalRecord],
        usage: Usage,
        error: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.state = state
        self.status = status
        self.pending = pending
        self.usage = usage
        self.error = error

    def to_builtins(self) -> dict[str, Any]:
        """The result as JSON-ready builtins (what the CLI prints and the HTTP routes answer)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "state": to_builtins(self.state),
            "pending": [to_builtins(p) for p in self.pending],
            "usage": to_builtins(self.usage),
            "error": self.error,
        }

    def __repr__(self) -> str:
        waiting = f", pending={[p.id for p in self.pending]}" if self.pending else ""
        return (
            f"WorkflowResult(run_id={self.run_id!r}, status={self.status!r}, "
            f"state={self.state!r}{waiting})"
        )


class RunFinished(msgspec.Struct, frozen=True):
    """The last event: the run ended or now waits (see ``result.status``)."""

    result: Any  # WorkflowResult


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One record of a run's history: ``id`` is what ``fork(run_id, id, ...)`` takes."""

    id: int
    kind: str  # start | step | item | approval | decision | retry | end
    node: str | None = None
    task: str | None = None
    changed: dict[str, Any] = msgspec.field(default_factory=dict)
    detail: str | None = None
    at: float = 0.0


WorkflowEvent = (
    RunStarted
    | NodeStarted
    | NodeFinished
    | NodeRetrying
    | TokenDelta
    | ApprovalRequested
    | RunFinished
)


def to_builtins(obj: Any) -> Any:
    """A workflow value (msgspec Struct, pydantic model, record) as JSON-ready builtins."""
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if dump is not None else msgspec.to_builtins(obj)
