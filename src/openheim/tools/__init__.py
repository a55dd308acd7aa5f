"""Tools: functions a model may call.

``@tool`` makes a function (sync or async) into a :class:`Tool` whose JSON
schema comes from its signature and docstring; a :class:`Toolset` groups
tools; :class:`MCPServerStdio` / :class:`MCPServerHTTP` bring the tools of
MCP servers. Pass any of them in ``Agent(tools=[...])``.
"""

from __future__ import annotations

from openheim.tools._context import RunContext
from openheim.tools._tool import Tool, tool
from openheim.tools._toolset import ToolProvider, Toolset
from openheim.tools.mcp import MCPServer, MCPServerHTTP, MCPServerStdio

__all__ = [
    "MCPServer",
    "MCPServerHTTP",
    "MCPServerStdio",
    "RunContext",
    "Tool",
    "ToolProvider",
    "Toolset",
    "tool",
]
