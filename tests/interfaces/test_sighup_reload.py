"""SIGHUP on `openheim serve`: the new config is applied (store, agents, tool code) and what it
replaces is closed (MCP stdio subprocesses, stores)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import Served, start_server, stop_server, write_project

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")

MCP_SERVER = textwrap.dedent(
    '''
    try:
        from mcp.server.mcpserver import MCPServer as Server  # mcp 2
    except ImportError:
        from mcp.server.fastmcp import FastMCP as Server  # mcp 1

    server = Server("calc")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    server.run()
    '''
)


def config_text(store: str) -> str:
    return f"""\
[agents.echo]
model = "ixtools:echo_model"

[agents.weather]
model = "ixtools:echo_model"
tools = ["ixtools:get_weather"]

[agents.calc]
model = "ixtools:echo_model"
mcp = [{{ command = ["{sys.executable}", "calc_server.py"] }}]

[store]
url = "{store}"
"""


def children(pid: int, marker: str) -> list[int]:
    """Live child processes of ``pid`` whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and marker in cmdline:
            found.append(int(entry.name))
    return found


def reload(served: Served, n: int) -> None:
    """SIGHUP, then wait until the log says the n-th reload is done."""
    log = served.config.parent / f"serve-{served.port}.log"
    os.kill(served.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while log.read_text().count("reloaded") < n:
        assert "reload failed" not in log.read_text(), log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    folder = tmp_path / "proj"
    config = write_project(folder, config_text(f"sqlite:///{folder}/a.db"))
    (folder / "calc_server.py").write_text(MCP_SERVER)
    served = start_server(config, grpc=False)
    yield served
    stop_server(served)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_reload_closes_replaced_mcp_subprocesses(served: Served) -> None:
    with served.client() as c:
        for n in range(3):
            r = c.post("/v1/agents/calc/runs", json={"input": "hi"})
            assert r.json()["status"] == "finished", r.text
            # One MCP server: the run's (those of the agents replaced before are closed).
            deadline = time.monotonic() + 10
            while len(children(served.proc.pid, "calc_server.py")) > 1:
                assert time.monotonic() < deadline, children(served.proc.pid, "calc_server.py")
                time.sleep(0.05)
            assert len(children(served.proc.pid, "calc_server.py")) == 1
            reload(served, n + 1)
        # The replaced agents' MCP servers are gone, without a new run starting one.
        deadline = time.monotonic() + 10
        while children(served.proc.pid, "calc_server.py") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children(served.proc.pid, "calc_server.py") == []


def test_reload_applies_a_new_store_url(served: Served) -> None:
    folder = served.config.parent
    with served.client() as c:
        assert c.post("/v1/agents/echo/runs", json={"input": "x", "session": "old"}).is_success
        assert "old" in c.get("/v1/sessions").json()["sessions"]
        served.config.write_text(config_text(f"sqlite:///{folder}/b.db"))
        reload(served, 1)
        assert c.get("/v1/sessions").json()["sessions"] == []
        assert c.post("/v1/agents/echo/runs", json={"input": "y", "session": "new"}).is_success
        assert c.get("/v1/sessions").json()["sessions"] == ["new"]
    assert (folder / "b.db").exists()


def test_reload_picks_up_changed_tool_code(served: Served) -> None:
    tools = served.config.parent / "ixtools.py"
    with served.client() as c:
        before = c.post("/v1/agents/weather/runs", json={"input": "weather Oslo"}).json()
        assert before["output"] == "tool said: sunny in Oslo"
        tools.write_text(tools.read_text().replace('f"sunny in {city}"', 'f"rainy in {city}"'))
        reload(served, 1)
        after = c.post("/v1/agents/weather/runs", json={"input": "weather Oslo"}).json()
        assert after["output"] == "tool said: rainy in Oslo"


async def test_reload_closes_the_replaced_agents_provider_connections(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from ixhelpers import KEYS

    from openheim.config import load_config
    from openheim.server._state import ServerState

    monkeypatch.setenv("IX_ACME_KEY", KEYS["acme"])
    config = write_project(
        server.config.parent / "upstream-agent",
        f'[providers.up]\nbase_url = "{server.url}/v1"\napi_key_env = "IX_ACME_KEY"\n\n'
        '[agents.relay]\nmodel = "up:echo"\n\n[store]\nurl = "memory://"\n',
    )
    state = ServerState(load_config(config))
    await state.load(lambda line: None)
    old = state.agent("default", "relay")
    assert (await old.run("hello")).output == "echo: hello (turn 1)"
    assert old.model._http._client is not None  # type: ignore[attr-defined]  # a pool is open
    await state.reload(load_config(config))
    new = state.agent("default", "relay")
    assert new is not old
    for _ in range(200):  # closed once nothing is in flight (at once here)
        if old.model._http._client is None:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert old.model._http._client is None  # type: ignore[attr-defined]
    assert (await new.run("again")).output == "echo: again (turn 1)"
    await state.aclose()
