"""Fixtures for the `openheim bench` tests: the tiny GGUF, a real `openheim serve` on loopback."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from openheim.testing.serve import free_port, start_serve, stop_process


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@dataclass
class Served:
    url: str
    pid: int


@pytest.fixture(scope="module")
def served(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`openheim serve` with one agent on the tiny GGUF (4 slots, 1 thread), no API keys."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "openheim.toml").write_text(
        "[agents.tiny]\n"
        f'model = "llama:{tiny_gguf}"\n'
        "model_settings = { n_parallel = 4, n_ctx = 1024, n_threads = 1 }\n\n"
        '[store]\nurl = "memory://"\n'
    )
    port = free_port()
    proc = start_serve(
        None, port=port, args=["--log-level", "warning"], cwd=folder, log=folder / "serve.log"
    )
    try:
        yield Served(f"http://127.0.0.1:{port}/v1", proc.pid)
    finally:
        stop_process(proc)


def bench(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `openheim bench ARGS` in this process (the CLI's own entry point)."""
    from openheim.cli import main

    code = main(["bench", *args, "--quiet"] if args and args[0] != "compare" else ["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def validate(path: Path) -> dict[str, Any]:
    """The report file, checked against the schema the package publishes."""
    import jsonschema

    from openheim.bench import schema

    data: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(data, schema(), cls=jsonschema.Draft202012Validator)
    return data


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND"[:8] or data[-8:-4] == b"IEND"
    return width, height


def env_without(var: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != var}
