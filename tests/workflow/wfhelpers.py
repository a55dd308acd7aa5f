"""Helpers shared by the workflow tests (a module of its own: no clash with other conftests)."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from openheim.stores import Store

POSTGRES_URL = os.environ.get(
    "OPENHEIM_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)


async def cleanup(store: Store) -> None:
    """Remove every key and log of the store's namespace."""
    for key in await store.list():
        await store.delete(key)
    for log in await store.list_logs():
        await store.delete_log(log)


class Counter:
    """Counts executions per node name (a step calls ``hit(name)``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


@contextlib.contextmanager
def uvicorn_app(
    folder: Path, app: str, probe: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real uvicorn server on loopback serving ``app`` (``module:attribute``, from
    ``folder``), once GET ``probe`` answers; its URL and process. Its log: server.log."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(folder), **(env or {})},
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(url + probe, timeout=1)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, (folder / "server.log").read_text()
                    time.sleep(0.05)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
