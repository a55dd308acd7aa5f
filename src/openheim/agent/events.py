"""What ``agent.stream(...)`` yields, in order, for one run.

Each model turn: :class:`TextDelta` pieces of the assistant's text and, for
each tool call it makes, :class:`ToolCallStarted` then :class:`ToolCallArgsDelta`
fragments of its JSON arguments (they join to the arguments text); then one
:class:`UsageEvent`. Each tool call the agent then runs: :class:`ToolCalled`
(the parsed arguments, just before the call) and later its
:class:`ToolResult`. A run paused for approvals yields :class:`ApprovalRequired`.
The last event is always :class:`Done`, which carries the :class:`RunResult`;
:func:`result_of` drains a stream to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import AgentError
from openheim.messages import Usage
from openheim.models.base import TextDelta

if TYPE_CHECKING:
    from openheim.agent.result import PendingApproval, RunResult

__all__ = [
    "AgentEvent",
    "ApprovalRequired",
    "Done",
    "TextDelta",
    "ToolCallArgsDelta",
    "ToolCallStarted",
    "ToolCalled",
    "ToolResult",
    "UsageEvent",
    "result_of",
]


class ToolCallStarted(msgspec.Struct, frozen=True):
    """The model began a tool call (its arguments stream next)."""

    id: str
    name: str


class ToolCallArgsDelta(msgspec.Struct, frozen=True):
    """A fragment of a streaming tool call's JSON arguments."""

    id: str
    delta: str


class ToolCalled(msgspec.Struct, frozen=True):
    """A tool is about to run with these (validated) arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


class ToolResult(msgspec.Struct, frozen=True):
    """A tool call's result as sent back to the model; ``is_error`` for failures."""

    id: str
    name: str
    content: str
    is_error: bool = False


class UsageEvent(msgspec.Struct, frozen=True):
    """Usage of one model request (``usage``) and of the run so far (``total``)."""

    usage: Usage
    total: Usage


class ApprovalRequired(msgspec.Struct, frozen=True):
    """The run paused: these tool calls wait for the caller's approval."""

    pending: list[PendingApproval]


class Done(msgspec.Struct, frozen=True):
    """The run ended (with an answer, or paused); ``result`` is what ``run`` returns."""

    result: RunResult


AgentEvent = (
    TextDelta
    | ToolCallStarted
    | ToolCallArgsDelta
    | ToolCalled
    | ToolResult
    | UsageEvent
    | ApprovalRequired
    | Done
)


async def result_of(events: AsyncIterable[AgentEvent]) -> RunResult:
    """Drain a run's events and return the :class:`RunResult` its :class:`Done` carries.

    ``await result_of(agent.stream(prompt))`` is ``await agent.run(prompt)``.
    A consumer that handles some events itself (prints text, forwards
    events) passes the events on to finish with the result. Raises
    :class:`~openheim.errors.AgentError` if the stream ends without ``Done``.
    """
    result: RunResult | None = None
    async for event in events:
        if type(event) is Done:
            result = event.result
    if result is None:
        raise AgentError(
            "the run's event stream ended without a Done event; give result_of the whole "
            "stream of one run (agent.stream(...)), not one already consumed"
        )
    return result
