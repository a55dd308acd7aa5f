"""Tools served by MCP servers, through the official ``mcp`` package (the ``mcp`` extra).

``MCPServerStdio("python", ["server.py"])`` starts a server as a subprocess
and talks to it over stdin/stdout; ``MCPServerHTTP("http://host/mcp")``
connects to a streamable-HTTP server. Put either in ``Agent(tools=[...])``:
its tools are listed at the start of a run and called like local ones.

A connection lives in a background task of the event loop that opened it
(the ``mcp`` client's anyio task groups must be entered and left by one task).
It opens on first use and stays open for later runs on the same loop; close
it with ``await server.aclose()`` or use ``async with server:``. A connection
made inside ``agent.run_sync`` ends with that call's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, TextIO

import msgspec

from openheim.errors import ConfigError, MCPConnectionError, ToolError
from openheim.tools._tool import Tool

__all__ = ["MCPServer", "MCPServerHTTP", "MCPServerStdio"]

logger = logging.getLogger("openheim.tools.mcp")


def _import_mcp() -> Any:
    try:
        import mcp
    except ImportError as exc:
        raise ConfigError(
            f"MCP tools need the `mcp` package ({exc}); install it with "
            "`pip install 'openheim[mcp]'`"
        ) from exc
    return mcp


def _field(obj: Any, snake: str, camel: str, default: Any = None) -> Any:
    """A field of an mcp type: snake_case in mcp 2, camelCase in mcp 1."""
    value = getattr(obj, snake, None)
    if value is None:
        value = getattr(obj, camel, default)
    return value


class MCPServer:
    """Base class of MCP server connections; use MCPServerStdio or MCPServerHTTP.

    ``tool_prefix`` is put before every tool name (``"fs_"`` makes ``read``
    ``fs_read``); ``requires_approval`` is True for all tools or a collection of
    (unprefixed) tool names; ``timeout`` is each call's timeout in seconds.
    """

    def __init__(
        self,
        *,
        tool_prefix: str = "",
        requires_approval: bool | Collection[str] = False,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.tool_prefix = tool_prefix
        self.requires_approval = requires_approval
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._tools: list[Tool] | None = None

    # ---- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> MCPServer:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._session is not None and self._loop is asyncio.get_running_loop()

    async def connect(self) -> None:
        """Start the server (or connect to it) and run the MCP handshake; idempotent."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # First use, or the loop that owned the previous connection is gone
            # (each run_sync has its own loop): start afresh on this one.
            self._loop = loop
            self._session = None
            self._ready = loop.create_future()
            self._stop = asyncio.Event()
            self._task = loop.create_task(self._serve(self._ready, self._stop))
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.connect_timeout)
        except asyncio.TimeoutError:
            await self.aclose()
            raise MCPConnectionError(
                f"{self!r} did not finish the MCP handshake within {self.connect_timeout} s"
            ) from None

    async def aclose(self) -> None:
        """Close the connection (and stop a stdio server's process)."""
        task, stop = self._task, self._stop
        self._task = None
        self._session = None
        if task is None or stop is None or self._loop is not asyncio.get_running_loop():
            return
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task

    async def _serve(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        mcp = _import_mcp()
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(mcp.ClientSession(streams[0], streams[1]))
                await session.initialize()
                self._session = session
                ready.set_result(None)
                await stop.wait()
        except Exception as exc:
            if not ready.done():
                error = MCPConnectionError(f"{self!r} could not connect: {exc}")
                error.__cause__ = exc
                ready.set_exception(error)
            else:
                logger.warning("%r: the MCP connection ended with an error", self, exc_info=exc)
        finally:
            self._session = None
            if not ready.done():
                ready.cancel()

    def _transport(self) -> Any:
        raise NotImplementedError

    # ---- tools ----------------------------------------------------------------------

    async def list_tools(self) -> list[Tool]:
        """The server's tools as openheim Tools (listed once, then cached)."""
        if self._tools is not None:
            return self._tools
        await self.connect()
        listed: list[Any] = []
        result = await self._session.list_tools()
        listed.extend(result.tools)
        cursor = _field(result, "next_cursor", "nextCursor")
        while cursor:
            result = await self._list_page(cursor)
            listed.extend(result.tools)
            cursor = _field(result, "next_cursor", "nextCursor")
        self._tools = [self._make_tool(t) for t in listed]
        return self._tools

    async def _list_page(self, cursor: str) -> Any:
        mcp = _import_mcp()
        params_type = getattr(mcp.types, "PaginatedRequestParams", None)
        if params_type is not None:
            try:
                return await self._session.list_tools(params=params_type(cursor=cursor))
            except TypeError:
                pass
        return await self._session.list_tools(cursor=cursor)

    def _make_tool(self, spec: Any) -> Tool:
        remote_name: str = spec.name
        needs_approval = (
            self.requires_approval
            if isinstance(self.requires_approval, bool)
            else remote_name in self.requires_approval
        )

        async def call(**arguments: Any) -> str:
            return await self.call_tool(remote_name, arguments)

        schema = _field(spec, "input_schema", "inputSchema") or {"type": "object"}
        return Tool(
            call,
            name=self.tool_prefix + remote_name,
            description=spec.description or "",
            requires_approval=needs_approval,
            timeout=self.timeout,
            parameters=dict(schema),
        )

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call a tool by its server-side name; an error result raises ToolError."""
        await self.connect()
        result = await self._session.call_tool(name, arguments)
        texts: list[str] = []
        for block in result.content:
            text = getattr(block, "text", None)
            if text is None:
                text = block.model_dump_json(exclude_none=True)
            texts.append(text)
        structured = _field(result, "structured_content", "structuredContent")
        if texts:
            content = "\n".join(texts)
        elif structured is not None:
            content = msgspec.json.encode(structured).decode()
        else:
            content = ""
        if _field(result, "is_error", "isError", False):
            raise ToolError(content or f"the MCP tool {name!r} failed")
        return content


class MCPServerStdio(MCPServer):
    """An MCP server started as a subprocess, spoken to over its stdin/stdout."""

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        errlog: TextIO | None = None,
        tool_prefix: str = "",
        requires_approval: bool | Collection[str] = False,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            tool_prefix=tool_prefix,
            requires_approval=requires_approval,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.command = command
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.errlog = errlog

    def _transport(self) -> Any:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(
            command=self.command, args=self.args, env=self.env, cwd=self.cwd
        )
        return stdio_client(params, errlog=self.errlog or sys.stderr)

    def __repr__(self) -> str:
        return f"MCPServerStdio({self.command!r}, {self.args!r})"


class MCPServerHTTP(MCPServer):
    """An MCP server reached over streamable HTTP at ``url`` (e.g. ``http://host:8000/mcp``)."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        tool_prefix: str = "",
        requires_approval: bool | Collection[str] = False,
        timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            tool_prefix=tool_prefix,
            requires_approval=requires_approval,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self.url = url
        self.headers = headers

    def _transport(self) -> Any:
        from mcp.client import streamable_http

        modern = getattr(streamable_http, "streamable_http_client", None)
        if modern is None:  # mcp 1.x
            legacy: Any = getattr(streamable_http, "streamablehttp_client")  # noqa: B009
            return legacy(self.url, headers=self.headers)
        return self._modern(modern)

    @contextlib.asynccontextmanager
    async def _modern(self, client_factory: Any) -> AsyncIterator[Any]:
        # mcp 2 takes headers through an http client that the caller owns.
        from mcp.shared._httpx_utils import create_mcp_http_client

        async with (
            create_mcp_http_client(headers=self.headers) as http,
            client_factory(self.url, http_client=http) as streams,
        ):
            yield streams

    def __repr__(self) -> str:
        return f"MCPServerHTTP({self.url!r})"
