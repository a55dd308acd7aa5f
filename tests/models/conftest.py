"""Fixtures for connector tests: a tiny GGUF and llama-cpp-python's OpenAI-compatible server.

The server fixture is session-scoped (loading takes a second or two): it starts
``python -m llama_cpp.server`` on a free loopback port, waits for
``/v1/models``, and stops it at the end. Its output goes to a log file whose
tail is shown when it fails to start.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _llama_server import N_CTX, SERVER_MODULES, SERVER_START_TIMEOUT, LlamaServer, free_port


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def llama_server(
    tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"llama_cpp.server needs {', '.join(missing)}: install llama-cpp-python with its "
            "server extra (pip install -e '.[dev]'), or set OPENHEIM_TEST_NO_LLAMA=1",
            pytrace=False,
        )
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(tiny_gguf),
        "--model_alias",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--n_threads",
        "2",
    ]
    base = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(base, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode} before serving:\n"
                    + server.log_tail(),
                    pytrace=False,
                )
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read())["data"]:
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer {base}/models within "
                    f"{SERVER_START_TIMEOUT:g}s:\n" + server.log_tail(),
                    pytrace=False,
                )
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
