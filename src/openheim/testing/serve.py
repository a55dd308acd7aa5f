"""Run ``openheim serve`` in a child process for a test, a benchmark or a soak.

    from openheim.testing.serve import free_port, start_serve, stop_process

    port = free_port()
    proc = start_serve(config, port=port, log=tmp_path / "serve.log")
    try:
        httpx.get(f"http://127.0.0.1:{port}/v1/models")
    finally:
        stop_process(proc)

:func:`start_serve` returns once ``/readyz`` answers 200 (every agent built, every
model loaded). The server's output goes to a file, never to a pipe nobody reads
(a full pipe would stall the server).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["free_port", "start_serve", "stop_process", "wait_ready"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    timeout: float = 60.0,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``url`` until it answers 200.

    Raises RuntimeError (with ``log``'s text) if ``proc`` exits first, or after
    ``timeout`` seconds (``proc`` is killed then).
    """
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log is not None and log.exists() else ""
            raise RuntimeError(
                f"the server exited with {proc.returncode} before it was ready: {text}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the server was not ready at {url} within {timeout:g} s")
        time.sleep(interval)


def start_serve(
    config: Path | None,
    *,
    log: Path,
    port: int | None = None,
    grpc_port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    """``python -m openheim serve`` on 127.0.0.1, returned once ``/readyz`` answers 200.

    ``config``: the openheim.toml (None: the one in ``cwd``). ``port``: the HTTP
    port (default: a free one; read it back from :func:`free_port` first if you
    need it). Output (stdout and stderr) is appended to ``log``. ``cwd``
    defaults to the config's folder.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "openheim", "serve", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    cmd += args
    if cwd is None and config is not None:
        cwd = config.parent
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_ready(proc, f"http://127.0.0.1:{port}/readyz", timeout=timeout, log=log)
    return proc


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still running after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
