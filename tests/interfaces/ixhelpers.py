"""Helpers for the interface tests: a config directory with ScriptedModel agents, a served app."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

HERE = Path(__file__).parent
KEYS = {"acme": "sk-acme-test-key", "globex": "sk-globex-test-key"}

CONFIG = f"""\
[agents.echo]
model = "ixtools:echo_model"
instructions = "Repeat the user."

[agents.weather]
model = "ixtools:echo_model"
tools = ["ixtools:get_weather"]

[agents.slow]
model = "ixtools:slow_model"
tools = ["ixtools:delete_file"]

[agents.broken]
model = "ixtools:failing_model"

[store]
url = "memory://"

[server]
max_body_bytes = 4096
max_concurrent_runs_per_tenant = 2
shutdown_grace = 5

[[server.api_keys]]
tenant = "acme"
key_env = "IX_ACME_KEY"

[[server.api_keys]]
tenant = "globex"
key_sha256 = "{hashlib.sha256(KEYS["globex"].encode()).hexdigest()}"
"""


def write_project(folder: Path, config: str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "ixtools.py", folder / "ixtools.py")
    path = folder / "openheim.toml"
    path.write_text(config, encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["IX_ACME_KEY"] = KEYS["acme"]
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, grpc_port: int, config: Path
    ) -> None:
        self.proc = proc
        self.port = port
        self.grpc_port = grpc_port
        self.config = config
        self.url = f"http://127.0.0.1:{port}"

    def client(self, tenant: str = "acme") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEYS[tenant]}"}, timeout=30
        )


def start_server(config: Path, grpc: bool = True, args: Sequence[str] = ()) -> Served:
    port, gport = free_port(), free_port()
    cmd = [sys.executable, "-m", "openheim", "serve", "--config", str(config), "--port", str(port)]
    if grpc:
        cmd += ["--grpc-port", str(gport)]
    cmd += args
    # stderr to a file, not a pipe nobody reads (a full pipe would stall the server).
    log = config.parent / f"serve-{port}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=child_env(), cwd=config.parent, stderr=err)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"openheim serve exited with {proc.returncode}: {log.read_text()}")
        try:
            # Ready: every agent is built and every model loaded.
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("openheim serve did not come up within 60 s")
        time.sleep(0.05)
    return Served(proc, port, gport, config)


def stop_server(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.terminate()
        try:
            served.proc.wait(20)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()
