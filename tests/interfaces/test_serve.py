"""`openheim serve` as a user runs it: what it refuses, what it prints, when it is ready."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from ixhelpers import (
    CONFIG,
    child_env,
    free_port,
    start_server,
    stop_server,
    write_project,
)

OPEN_CONFIG = """\
[agents.echo]
model = "ixtools:echo_model"

[store]
url = "memory://"
"""


def serve(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "openheim", "serve", "--config", str(config), *args],
        env=child_env(),
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_an_open_server_on_a_public_address_is_refused(tmp_path: Path) -> None:
    config = write_project(tmp_path, OPEN_CONFIG)
    proc = serve(config, "--host", "0.0.0.0", "--port", str(free_port()))
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode != 0
    assert "--allow-unauthenticated" in err
    assert "api_keys" in err
    assert "serving" not in err


def test_allow_unauthenticated_serves_with_a_warning(tmp_path: Path) -> None:
    config = write_project(tmp_path, OPEN_CONFIG)
    port = free_port()
    proc = serve(config, "--host", "0.0.0.0", "--port", str(port), "--allow-unauthenticated")
    try:
        wait_healthy(port, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    finally:
        _out, err = stop(proc)
    assert "warning" in err.lower()
    assert "without API keys" in err


def test_loopback_without_keys_needs_no_flag(tmp_path: Path) -> None:
    config = write_project(tmp_path, OPEN_CONFIG)
    port = free_port()
    proc = serve(config, "--port", str(port))
    try:
        wait_healthy(port, proc)
    finally:
        _out, err = stop(proc)
    assert "warning" not in err.lower()


# ---- start-up: everything is built before the server is ready ---------------------------


def test_a_missing_tool_module_stops_start_up_with_the_config_error(tmp_path: Path) -> None:
    config = write_project(
        tmp_path,
        OPEN_CONFIG + '\n[agents.broken]\nmodel = "ixtools:echo_model"\n'
        'tools = ["no_such_tools_module:lookup"]\n',
    )
    proc = serve(config, "--port", str(free_port()))
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode != 0
    assert "no_such_tools_module" in err
    assert "agents.broken.tools" in err
    assert "Traceback" not in err


def test_a_missing_gguf_stops_start_up_with_the_config_error(tmp_path: Path) -> None:
    config = write_project(
        tmp_path, OPEN_CONFIG + f'\n[agents.local]\nmodel = "llama:{tmp_path}/missing.gguf"\n'
    )
    proc = serve(config, "--port", str(free_port()))
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode != 0
    assert "missing.gguf" in err
    assert "agents.local.model" in err
    assert "Traceback" not in err


GATED_TOOLS = '''
import os
import time
from pathlib import Path

import openheim as oh

# Importing this module waits for the test to create the "go" file: building the agent
# that uses it takes as long as the test wants.
while not (Path(__file__).parent / "go").exists():
    time.sleep(0.02)


@oh.tool
def ping() -> str:
    """Ping."""
    return "pong"
'''


def test_ready_only_once_every_agent_is_built_and_start_up_is_printed(tmp_path: Path) -> None:
    (tmp_path / "gated.py").write_text(GATED_TOOLS)
    config = write_project(
        tmp_path,
        OPEN_CONFIG + '\n[agents.gated]\nmodel = "ixtools:echo_model"\ntools = ["gated:ping"]\n',
    )
    port, gport = free_port(), free_port()
    proc = serve(config, "--port", str(port), "--grpc-port", str(gport))
    try:
        wait_healthy(port, proc)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "loading"}
        busy = httpx.post(
            f"http://127.0.0.1:{port}/v1/agents/echo/runs", json={"input": "x"}, timeout=30
        )
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "loading"
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run = httpx.post(
            f"http://127.0.0.1:{port}/v1/agents/gated/runs", json={"input": "x"}, timeout=30
        )
        assert run.json()["status"] == "finished"
    finally:
        _out, err = stop(proc)
    assert "agent 'echo'" in err
    assert "agent 'gated'" in err
    assert f"gRPC on 127.0.0.1:{gport}" in err
    assert "ready in" in err


def test_requests_are_logged_as_json_lines(tmp_path: Path) -> None:
    config = write_project(tmp_path, CONFIG)
    served = start_server(config, grpc=False, args=["--log-format", "json"])
    try:
        with served.client() as c:
            run = c.post("/v1/agents/echo/runs", json={"input": "x"}).json()
            assert c.get("/v1/models").status_code == 200
            assert c.get("/v1/sessions/a%2Fb").status_code in (400, 404)
    finally:
        stop_server(served)
    log = (config.parent / f"serve-{served.port}.log").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records, log
    requests = [r for r in records if r.get("path") == "/v1/agents/echo/runs"]
    assert len(requests) == 1, records
    req = requests[0]
    assert req["level"] == "info"
    assert req["method"] == "POST"
    assert req["status"] == 200
    assert req["tenant"] == "acme"
    assert req["run_id"] == run["run_id"]
    assert isinstance(req["duration_ms"], float)
    assert any(r.get("path") == "/v1/models" and r["status"] == 200 for r in records)


def test_log_level_warning_keeps_requests_out(tmp_path: Path) -> None:
    config = write_project(tmp_path, CONFIG)
    served = start_server(config, grpc=False, args=["--log-level", "warning"])
    try:
        with served.client() as c:
            assert c.get("/v1/models").status_code == 200
    finally:
        stop_server(served)
    log = (config.parent / f"serve-{served.port}.log").read_text()
    assert "/v1/models" not in log
