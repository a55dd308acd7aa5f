"""``Toolset``: a named collection of tools, and the ``ToolProvider`` seam for MCP servers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from openheim.errors import ConfigError
from openheim.models.base import ToolDefinition
from openheim.tools._tool import Tool

__all__ = ["ToolProvider", "Toolset", "as_tool"]


@runtime_checkable
class ToolProvider(Protocol):
    """A source of tools known only at run time (an MCP server).

    ``list_tools`` is awaited at the start of each run; providers cache.
    """

    async def list_tools(self) -> list[Tool]: ...


def as_tool(item: Any) -> Tool:
    if isinstance(item, Tool):
        return item
    if callable(item):
        return Tool(item)
    raise ConfigError(
        f"not a tool: {item!r}; pass functions, @tool-decorated functions, Toolsets or MCP servers"
    )


def _origin(t: Tool) -> str:
    fn = t.function
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class Toolset:
    """Tools by name; a name can be used once.

    ``Toolset([f, g])``, ``toolset.add(h)``, or ``@toolset.tool`` on a function.
    Pass it in ``Agent(tools=[...])`` like a single tool.
    """

    def __init__(self, tools: Iterable[Any] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            if isinstance(item, Toolset):
                for t in item:
                    self.add(t)
            else:
                self.add(item)

    def add(self, item: Tool | Callable[..., Any]) -> Tool:
        """Register a tool (a plain function is wrapped with ``tool``); returns the Tool."""
        t = as_tool(item)
        other = self._tools.get(t.name)
        if other is not None and other is not t:
            raise ConfigError(
                f"two tools are named {t.name!r} ({_origin(other)} and {_origin(t)}); "
                "tool names must be unique within an agent: rename one with "
                "@tool(name=...)"
            )
        self._tools[t.name] = t
        return t

    def tool(self, function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Decorator: ``@toolset.tool`` or ``@toolset.tool(name=..., ...)``; returns the Tool."""
        caller = sys._getframe(1)
        localns = dict(caller.f_locals) if caller.f_code.co_name != "<module>" else None

        def register(fn: Callable[..., Any]) -> Tool:
            return self.add(Tool(fn, _localns=localns, **options))

        return register(function) if function is not None else register

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    @property
    def definitions(self) -> list[ToolDefinition]:
        return [t.definition for t in self._tools.values()]

    def __repr__(self) -> str:
        return f"Toolset({self.names!r})"
