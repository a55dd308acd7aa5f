"""Private NATS and Redis servers for restart tests (the shared ones are never restarted).

Each runs on a free port with its data in a temporary directory; ``restart()``
stops it cleanly (SIGTERM) and starts it again on the same port and data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed; the restart tests need the binary")
    return found


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the private server on port {port} exited: {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the private server on port {port} did not start within {deadline} s")


class PrivateServer:
    """A server process we own: ``url``, ``stop()``, ``start()``, ``restart()``."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = tmp / f"{kind}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "nats":
            self.url = f"nats://127.0.0.1:{self.port}"
            self.argv = [
                _binary("nats-server"),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.dir),
            ]
        else:
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.argv = [
                _binary("redis-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
            ]  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc)
        if self.kind == "nats":
            time.sleep(0.3)  # JetStream answers a moment after the port opens

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
