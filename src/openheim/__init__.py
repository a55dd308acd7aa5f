"""openheim: build, run and serve LLM agents in production.

The public API is re-exported here; heavy parts load on first use so that
``import openheim`` stays cheap (no pydantic, httpx, llama_cpp, ... until used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openheim._version import __version__

try:
    from openheim import _core  # noqa: F401  (fail here, loudly, if the build is missing)
except ImportError as exc:  # pragma: no cover - exercised by the wheel test
    from openheim.errors import CoreMissingError

    raise CoreMissingError(
        "openheim's compiled core (openheim._core) is not installed or failed to load: "
        f"{exc}. openheim has no pure-Python fallback. Install a prebuilt wheel "
        "(`pip install openheim`) or build from source with a C compiler, "
        "CMake and Cython (`pip install .` in a checkout, or `make run`)."
    ) from exc

from openheim._core import Mailbox

if TYPE_CHECKING:
    from openheim import errors
    from openheim.agent import (
        Agent,
        AgentEvent,
        Approval,
        ApprovalRequired,
        Done,
        PendingApproval,
        RunResult,
        RunState,
        ToolCallArgsDelta,
        ToolCalled,
        ToolCallStarted,
        ToolResult,
        UsageEvent,
    )
    from openheim.errors import StopRun, ToolError
    from openheim.messages import Message, ToolCall, Usage
    from openheim.models.base import ModelSettings, TextDelta
    from openheim.runtime import Runtime
    from openheim.stores.history import HistoryStore, InMemoryHistory
    from openheim.tools import RunContext, Tool, Toolset, tool
    from openheim.tools.mcp import MCPServerHTTP, MCPServerStdio
    from openheim.workflow import Budget, Retry, Workflow, WorkflowResult, reducer

__all__ = [
    "Agent",
    "AgentEvent",
    "Approval",
    "ApprovalRequired",
    "Budget",
    "Done",
    "HistoryStore",
    "InMemoryHistory",
    "MCPServerHTTP",
    "MCPServerStdio",
    "Mailbox",
    "Message",
    "ModelSettings",
    "PendingApproval",
    "Retry",
    "RunContext",
    "RunResult",
    "RunState",
    "Runtime",
    "StopRun",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallArgsDelta",
    "ToolCallStarted",
    "ToolCalled",
    "ToolError",
    "ToolResult",
    "Toolset",
    "Usage",
    "UsageEvent",
    "Workflow",
    "WorkflowResult",
    "__version__",
    "errors",
    "reducer",
    "tool",
]

_LAZY: dict[str, str] = {
    "Agent": "openheim.agent:Agent",
    "AgentEvent": "openheim.agent:AgentEvent",
    "Approval": "openheim.agent:Approval",
    "ApprovalRequired": "openheim.agent:ApprovalRequired",
    "Done": "openheim.agent:Done",
    "HistoryStore": "openheim.stores.history:HistoryStore",
    "InMemoryHistory": "openheim.stores.history:InMemoryHistory",
    "MCPServerHTTP": "openheim.tools.mcp:MCPServerHTTP",
    "MCPServerStdio": "openheim.tools.mcp:MCPServerStdio",
    "Message": "openheim.messages:Message",
    "ModelSettings": "openheim.models.base:ModelSettings",
    "PendingApproval": "openheim.agent:PendingApproval",
    "RunContext": "openheim.tools._context:RunContext",
    "RunResult": "openheim.agent:RunResult",
    "RunState": "openheim.agent:RunState",
    "StopRun": "openheim.errors:StopRun",
    "TextDelta": "openheim.models.base:TextDelta",
    "Tool": "openheim.tools._tool:Tool",
    "ToolCall": "openheim.messages:ToolCall",
    "ToolCallArgsDelta": "openheim.agent.events:ToolCallArgsDelta",
    "ToolCallStarted": "openheim.agent.events:ToolCallStarted",
    "ToolCalled": "openheim.agent.events:ToolCalled",
    "ToolError": "openheim.errors:ToolError",
    "ToolResult": "openheim.agent.events:ToolResult",
    "Toolset": "openheim.tools._toolset:Toolset",
    "Usage": "openheim.messages:Usage",
    "UsageEvent": "openheim.agent.events:UsageEvent",
    "errors": "openheim.errors",
    # actors
    "Runtime": "openheim.runtime:Runtime",
    # workflows
    "Budget": "openheim.workflow:Budget",
    "Retry": "openheim.workflow:Retry",
    "Workflow": "openheim.workflow:Workflow",
    "WorkflowResult": "openheim.workflow:WorkflowResult",
    "reducer": "openheim.workflow:reducer",
    "tool": "openheim.tools._tool:tool",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'openheim' has no attribute {name!r}")
    import importlib

    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attr) if attr else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
