"""`openheim serve` as a user runs it: what it refuses, what it prints, when it is ready."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from ixhelpers import child_env, free_port, write_project

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
