"""The records a workflow run is made of, and their frames.

A run is an append-only log ``wf/<run_id>`` of records in the store; its state
at any point is the fold of the records up to there (see ``_view.RunView``),
so every record is a checkpoint and the log is incremental: a record holds
only what one node changed. Approvals also live under the key
``wfapproval/<approval_id>`` so that they can be found and decided (with a
compare-and-set) without knowing their run. Records are msgspec structs in the
native codec's checksummed frames; nothing is pickled.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from openheim._core import decode_frame, encode_frame
from openheim.errors import CorruptStateError, IncompatibleStateError

__all__ = [
    "FORMAT_VERSION",
    "ApprovalRecord",
    "Budget",
    "Decided",
    "Decision",
    "Ended",
    "ItemDone",
    "Lineage",
    "Record",
    "Retried",
    "Started",
    "StepDone",
    "Usage",
    "Waiting",
    "decode_approval",
    "decode_record",
    "encode_approval",
    "encode_record",
    "step_done",
]

# 2: a failed run resumed has a Retried record (before, the next StepDone after the
# failure meant the run went on: a run started at 1 is still read that way).
FORMAT_VERSION = 2
KIND_RECORD = 0x4F480301
KIND_APPROVAL = 0x4F480302

RunStatus = Literal["running", "waiting", "done", "failed", "cancelled"]


class Budget(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Limits on one run: model ``tokens``, node executions (``steps``), active ``seconds``.

    ``on_exceed="fail"`` fails the run with :class:`BudgetExceededError`;
    ``"pause"`` makes it wait for an approval (kind ``"budget"``): approving
    it raises each exceeded limit by its original amount (or to the values in
    ``edits``, e.g. ``{"tokens": 50_000}``). A budget survives resume and is
    inherited, with what was already used, by forks.
    """

    tokens: int | None = None
    steps: int | None = None
    seconds: float | None = None
    on_exceed: Literal["fail", "pause"] = "fail"


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a run has used: node executions, model tokens, active seconds."""

    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The decision on an approval, as written into the approval node's ``output`` field."""

    approved: bool
    by: str | None = None
    reason: str | None = None
    edits: dict[str, Any] | None = None
    escalated: bool = False
    at: float = 0.0


class ApprovalRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A durable approval request: pending until decided (or its deadline passes)."""

    id: str
    run_id: str
    root: str  # the run to resume once decided (the parent of a sub-workflow run)
    workflow: str
    node: str
    task: str
    kind: Literal["node", "budget"] = "node"
    payload: Any = None
    requested_at: float = 0.0
    deadline: float | None = None
    on_deadline: Literal["reject", "escalate"] = "reject"
    # ("cancelled": its run was cancelled before anyone decided it)
    status: Literal["pending", "approved", "rejected", "escalated", "cancelled"] = "pending"
    decision: Decision | None = None


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Where a forked run came from: the run and the checkpoint (log sequence number)."""

    run_id: str
    checkpoint: int


class Started(msgspec.Struct, tag="start", kw_only=True, omit_defaults=True):
    v: int = FORMAT_VERSION
    run_id: str
    workflow: str
    state: dict[str, Any]
    frontier: list[str]
    step: int = 0
    usage: Usage = msgspec.field(default_factory=Usage)
    budget: Budget | None = None
    joins: dict[str, list[str]] = msgspec.field(default_factory=dict)
    fork_of: Lineage | None = None
    at: float = 0.0


class StepDone(msgspec.Struct, tag="done", kw_only=True, omit_defaults=True):
    task: str  # "<step>:<node>"
    updates: dict[str, Any] = msgspec.field(default_factory=dict)
    routes: list[str] | None = None  # chosen successors (branches); None: the static edges
    tokens: int = 0
    active: float = 0.0  # the run's active seconds when this was committed
    attempt: int = 1
    at: float = 0.0


def step_done(
    task: str,
    updates: dict[str, Any],
    *,
    routes: list[str] | None = None,
    tokens: int = 0,
    active: float = 0.0,
    attempt: int = 1,
) -> StepDone:
    """The record of a finished node, stamped now (both executors commit these)."""
    return StepDone(
        task=task,
        updates=updates,
        routes=routes,
        tokens=tokens,
        active=active,
        attempt=attempt,
        at=time.time(),
    )


class ItemDone(msgspec.Struct, tag="item", kw_only=True, omit_defaults=True):
    task: str
    index: int
    value: Any = None
    tokens: int = 0
    active: float = 0.0


class Waiting(msgspec.Struct, tag="wait", kw_only=True, omit_defaults=True):
    task: str
    approval: ApprovalRecord
    active: float = 0.0


class Decided(msgspec.Struct, tag="decide", kw_only=True, omit_defaults=True):
    task: str
    approval_id: str
    decision: Decision
    updates: dict[str, Any] = msgspec.field(default_factory=dict)
    routes: list[str] | None = None
    budget: Budget | None = None  # the new limits, when a budget pause was approved


class Ended(msgspec.Struct, tag="end", kw_only=True, omit_defaults=True):
    status: Literal["done", "failed", "cancelled"]
    error: str | None = None
    active: float = 0.0
    at: float = 0.0


class Retried(msgspec.Struct, tag="retry", kw_only=True, omit_defaults=True):
    """A failed batch run resumed: it runs again from the failed superstep (its nodes
    without a result). ``n``: this run's retries with this one; a record whose ``n`` is
    not the run's retries so far + 1, or that finds the run not failed, changes nothing
    (two processes resuming the same failure at once append one each)."""

    n: int
    at: float = 0.0


Record = Started | StepDone | ItemDone | Waiting | Decided | Ended | Retried


def encode_record(record: Record) -> bytes:
    return encode_frame(record, kind=KIND_RECORD)


def _decode(data: bytes, tp: Any, where: str) -> Any:
    try:
        return decode_frame(data, type=tp)
    except CorruptStateError as exc:
        raise CorruptStateError(
            f"{where} is damaged ({exc}); restore it from a backup or delete the run"
        ) from None
    except IncompatibleStateError as exc:
        raise IncompatibleStateError(
            f"{where} was written by another openheim version ({exc}); upgrade openheim"
        ) from None


def decode_record(data: bytes, where: str) -> Record:
    record: Record = _decode(data, Record, where)
    return record


def encode_approval(record: ApprovalRecord) -> bytes:
    return encode_frame(record, kind=KIND_APPROVAL)


def decode_approval(data: bytes, where: str) -> ApprovalRecord:
    record: ApprovalRecord = _decode(data, ApprovalRecord, where)
    return record
