"""MCP tools through the official `mcp` package: stdio and streamable HTTP servers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import openheim as oh
from openheim.models import ScriptedModel

pytest.importorskip("mcp")

SERVER = textwrap.dedent(
    '''
    import sys
    try:
        from mcp.server.mcpserver import MCPServer as Server  # mcp 2
    except ImportError:
        from mcp.server.fastmcp import FastMCP as Server  # mcp 1

    server = Server("calc")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise ValueError(reason)

    if len(sys.argv) > 1 and sys.argv[1] == "http":
        port = int(sys.argv[2])
        try:
            server.run("streamable-http", host="127.0.0.1", port=port)
        except TypeError:  # mcp 1: host and port are settings
            server.settings.host, server.settings.port = "127.0.0.1", port
            server.run("streamable-http")
    else:
        server.run()
    '''
)


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    path = tmp_path / "calc_server.py"
    path.write_text(SERVER)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def http_server(server_script: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(server_script), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the MCP HTTP server did not start (exit code {proc.poll()})")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(30)


def _agent(server: oh.MCPServerStdio | oh.MCPServerHTTP) -> tuple[oh.Agent, ScriptedModel]:
    model = ScriptedModel(
        [
            [
                oh.ToolCall("calc_add", {"a": 2, "b": 40}, "c1"),
                oh.ToolCall("calc_fail", {"reason": "on purpose"}, "c2"),
            ],
            "42",
        ]
    )
    return oh.Agent(model, tools=[server]), model


async def _check(server: oh.MCPServerStdio | oh.MCPServerHTTP) -> None:
    agent, model = _agent(server)
    async with server:
        tools = {t.name: t for t in await server.list_tools()}
        assert set(tools) == {"calc_add", "calc_fail"}
        assert tools["calc_add"].description == "Add two integers."
        assert tools["calc_add"].parameters["required"] == ["a", "b"]
        res = await agent.run("2+40?")
        assert res.output == "42"
        definitions = {d.name for d in model.requests[0].tools}
        assert definitions == {"calc_add", "calc_fail"}
        added, failed = (m for m in res.new_messages if m.role == "tool")
        assert (added.content, added.is_error) == ("42", False)
        # The server reports the failure as an error result (mcp 2 hides the message).
        assert failed.is_error
        assert "fail" in (failed.content or "")


async def test_stdio_server(server_script: Path) -> None:
    server = oh.MCPServerStdio(
        sys.executable, [str(server_script)], tool_prefix="calc_", connect_timeout=120
    )
    await asyncio.wait_for(_check(server), 300)
    assert not server.connected


async def test_http_server(http_server: str) -> None:
    server = oh.MCPServerHTTP(http_server, tool_prefix="calc_", connect_timeout=120)
    await asyncio.wait_for(_check(server), 300)


async def test_approval_on_mcp_tools(server_script: Path) -> None:
    server = oh.MCPServerStdio(
        sys.executable,
        [str(server_script)],
        tool_prefix="calc_",
        requires_approval={"add"},
        connect_timeout=120,
    )
    agent, _ = _agent(server)
    async with server:
        res = await asyncio.wait_for(agent.run("2+40?"), 120)
        assert [p.tool for p in res.pending] == ["calc_add"]
        final = await asyncio.wait_for(agent.resume(res, {"c1": True}), 120)
        assert final.output == "42"


async def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    server = oh.MCPServerStdio(str(tmp_path / "no-such-program"))
    with pytest.raises(oh.errors.MCPConnectionError, match="could not connect"):
        await server.connect()


def test_run_sync_connects_on_its_own_loop(server_script: Path) -> None:
    server = oh.MCPServerStdio(
        sys.executable, [str(server_script)], tool_prefix="calc_", connect_timeout=120
    )
    agent, _ = _agent(server)
    assert agent.run_sync("2+40?").output == "42"
