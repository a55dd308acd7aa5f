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
again to ``resume``. The records themselves belong to the state layer
(:mod:`openheim.snapshot`); they are re-exported here.
"""

from __future__ import annotations

from typing import Any, Literal

from openheim.messages import Message, Usage
from openheim.snapshot import Approval, PendingApproval, RunState

__all__ = ["Approval", "PendingApproval", "RunResult", "RunState", "StopReason"]

StopReason = Literal["final", "approval_required"]


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
