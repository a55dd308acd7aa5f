"""A run's outcome (:class:`RunResult`) and the state of a paused run (:class:`RunState`).

A run that calls a ``requires_approval=True`` tool stops with
``stop_reason == "approval_required"``; its ``pending`` calls wait for a
decision::

    res = await agent.run("delete the report", session="u1")
    if res.stop_reason == "approval_required":
        for call in res.pending:
            res.approve(call.id)              # or res.reject(call.id, "not now")
        res = await agent.resume(res)

:class:`RunState` is a msgspec Struct holding everything needed to resume
(the run's messages, usage, decisions), so it can be encoded, stored and
resumed later (``msgspec.msgpack.encode(res.state)``); ``deps`` are given
again to ``resume``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from openheim.errors import ApprovalError
from openheim.messages import Message, Usage

__all__ = ["Approval", "PendingApproval", "RunResult", "RunState", "StopReason"]

StopReason = Literal["final", "approval_required"]


class PendingApproval(msgspec.Struct, frozen=True):
    """A tool call waiting for approval: its call ``id``, ``tool`` name and ``arguments``."""

    id: str
    tool: str
    arguments: dict[str, Any]


class Approval(msgspec.Struct, frozen=True):
    """A decision on a pending call; a rejection's ``reason`` is shown to the model."""

    approved: bool
    reason: str | None = None


class RunState(msgspec.Struct, kw_only=True):
    """Everything a paused run needs to continue (encodable with msgspec)."""

    run_id: str
    agent: str
    session: str | None = None
    messages: list[Message] = msgspec.field(default_factory=list)  # this run's, prompt first
    usage: Usage = msgspec.field(default_factory=Usage)
    iterations: int = 0
    output_retries: int = 0
    tool_retries: dict[str, int] = msgspec.field(default_factory=dict)
    pending: list[PendingApproval] = msgspec.field(default_factory=list)
    # Results of the paused turn's calls that did not need approval, by call id.
    completed: dict[str, Message] = msgspec.field(default_factory=dict)
    decisions: dict[str, Approval] = msgspec.field(default_factory=dict)

    def decide(self, call_id: str, approval: Approval) -> None:
        """Record a decision on a pending call (ApprovalError if unknown or already decided)."""
        if not any(p.id == call_id for p in self.pending):
            known = ", ".join(p.id for p in self.pending) or "none"
            raise ApprovalError(
                f"no pending tool call {call_id!r} in run {self.run_id!r} (pending: {known})"
            )
        if call_id in self.decisions:
            verb = "approved" if self.decisions[call_id].approved else "rejected"
            raise ApprovalError(f"tool call {call_id!r} was already {verb}")
        self.decisions[call_id] = approval


class RunResult:
    """What a run returns.

    ``output`` is the final answer (text, or an instance of ``output_type``;
    None while paused); ``new_messages`` are this run's messages (the prompt
    first), ``messages`` the session history before it plus these; ``usage``
    counts this run's tokens and requests; ``stop_reason`` is ``"final"`` or
    ``"approval_required"`` (then see ``pending``, ``approve``, ``reject``).
    """

    __slots__ = ("_history", "new_messages", "output", "state", "stop_reason", "usage")

    def __init__(
        self,
        output: Any,
        state: RunState,
        stop_reason: StopReason,
        history: list[Message],
    ) -> None:
        self.output = output
        self.state = state
        self.stop_reason: StopReason = stop_reason
        self.new_messages: list[Message] = state.messages
        self.usage: Usage = state.usage
        self._history = history

    @property
    def messages(self) -> list[Message]:
        return self._history + self.new_messages

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def session(self) -> str | None:
        return self.state.session

    @property
    def pending(self) -> list[PendingApproval]:
        return self.state.pending

    def approve(self, call_id: str) -> None:
        """Approve a pending tool call; ``agent.resume(result)`` then runs it."""
        self.state.decide(call_id, Approval(True))

    def reject(self, call_id: str, reason: str | None = None) -> None:
        """Reject a pending tool call; the model is told, with ``reason``."""
        self.state.decide(call_id, Approval(False, reason))

    def __repr__(self) -> str:
        shown = repr(self.output)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return (
            f"RunResult(output={shown}, stop_reason={self.stop_reason!r}, "
            f"usage={self.usage!r}, run_id={self.run_id!r})"
        )
