"""Helpers for the interface tests: a config directory with ScriptedModel agents, a served app."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx

from openheim.testing.serve import free_port, start_serve, stop_process

__all__ = [
    "CONFIG",
    "HERE",
    "KEYS",
    "Served",
    "child_env",
    "free_port",
    "start_server",
    "stop_server",
    "write_project",
]

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
    log = config.parent / f"serve-{port}.log"
    proc = start_serve(
        config, port=port, grpc_port=gport if grpc else None, args=args, env=child_env(), log=log
    )
    return Served(proc, port, gport, config)


def stop_server(served: Served) -> None:
    stop_process(served.proc, 20)
