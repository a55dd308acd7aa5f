"""Agents: a model, instructions and tools, run as a tool loop.

``Agent.run`` returns a :class:`RunResult`; ``Agent.stream`` yields the
events of :mod:`openheim.agent.events`; ``Agent.run_sync`` runs from
synchronous code; ``Agent.resume`` continues a run paused for approvals.
"""

from __future__ import annotations

from openheim.agent._agent import Agent
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
    "RunState",
    "StopReason",
    "TextDelta",
    "ToolCallArgsDelta",
    "ToolCallStarted",
    "ToolCalled",
    "ToolResult",
    "UsageEvent",
]
