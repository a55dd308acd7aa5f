"""Agents: a model, instructions and tools, run as a tool loop.

``Agent.run`` returns a :class:`RunResult`; ``Agent.stream`` yields the
events of :mod:`openheim.agent.events` (:func:`result_of` drains them to the
result); ``Agent.run_sync`` runs from synchronous code; ``Agent.resume``
continues a run paused for approvals. Each run executes with one frozen
:class:`RunSettings`.
"""

from __future__ import annotations

from openheim.agent._agent import Agent
from openheim.agent._settings import RunSettings
from openheim.agent.events import (
    AgentEvent,
    ApprovalRequired,
    Done,
    TextDelta,
    ToolCallArgsDelta,
    ToolCalled,
    ToolCallStarted,
    ToolResult,
    UsageEvent,
    result_of,
)
from openheim.agent.result import Approval, PendingApproval, RunResult, RunState, StopReason

__all__ = [
    "Agent",
    "AgentEvent",
    "Approval",
    "ApprovalRequired",
    "Done",
    "PendingApproval",
    "RunResult",
    "RunSettings",
    "RunState",
    "StopReason",
    "TextDelta",
    "ToolCallArgsDelta",
    "ToolCallStarted",
    "ToolCalled",
    "ToolResult",
    "UsageEvent",
    "result_of",
]
