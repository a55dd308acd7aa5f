"""llama-cpp-python's OpenAI-compatible server as a test peer (see conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

N_CTX = 512
SERVER_START_TIMEOUT = 180.0
# What `llama-cpp-python[server]` adds; without them the server dies at import.
SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    def __init__(self, base_url: str, log: Path) -> None:
        self.base_url = base_url
        self.log = log

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])
