"""Private Redis and NATS servers for tests, benchmarks and soaks that stop, restart or
kill them (a shared server is never restarted).

    from openheim.testing.servers import private_server

    with private_server("redis", tmp_path) as server:   # or "nats"
        ...  # server.url; server.stop(); server.start(); server.restart()

Each runs on a free port of 127.0.0.1 with its data in a folder of its own: Redis with
AOF and fsync always, NATS with JetStream, so what a server acknowledged survives its
restart. Needs the ``redis-server`` / ``nats-server`` binaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from openheim.testing.serve import free_port, stop_process

__all__ = ["PrivateServer", "private_server"]


def _binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed; a private {name} needs the binary")
    return found


class PrivateServer:
    """A server process of our own: ``url``, ``start()``, ``stop()``, ``restart()``."""

    def __init__(self, kind: str, folder: Path) -> None:
        if kind not in ("redis", "nats"):
            raise ValueError(f"a private server is 'redis' or 'nats', not {kind!r}")
        self.kind = kind
        self.port = free_port()
        self.dir = folder / f"{kind}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "nats":
            self.url = f"nats://127.0.0.1:{self.port}"
            self.argv = [_binary("nats-server"), "-js", "-a", "127.0.0.1"]
            self.argv += ["-p", str(self.port), "-sd", str(self.dir)]
        else:
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.argv = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
            self.argv += ["--dir", str(self.dir), "--appendonly", "yes"]
            self.argv += ["--appendfsync", "always", "--save", ""]

    def start(self, deadline: float = 30.0) -> None:
        """Start it and return once its port accepts connections."""
        proc = self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        end = time.monotonic() + deadline
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.kind}-server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(
                        f"{self.kind}-server did not start on port {self.port} "
                        f"within {deadline:g} s"
                    ) from None
                time.sleep(0.05)
        if self.kind == "nats":
            time.sleep(0.3)  # JetStream answers a moment after the port opens

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it is still up after 30 s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def private_server(kind: str, folder: Path) -> Iterator[PrivateServer]:
    """A started :class:`PrivateServer`, stopped on exit."""
    server = PrivateServer(kind, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
