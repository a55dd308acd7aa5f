"""schemathesis against /openapi.json: no 5xx, responses match the document (bounded run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import KEYS, Served, start_server, stop_server, write_project

CONFIG = """\
[agents.echo]
model = "ixtools:echo_model"

[agents.weather]
model = "ixtools:echo_model"
tools = ["ixtools:get_weather"]

[store]
url = "memory://"

[server]
max_body_bytes = 65536
max_concurrent_runs_per_tenant = 64

[[server.api_keys]]
tenant = "acme"
key_env = "IX_ACME_KEY"
"""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(write_project(tmp_path_factory.mktemp("fuzz"), CONFIG), grpc=False)
    yield served
    stop_server(served)


def test_schemathesis_finds_no_server_errors_or_schema_mismatches(
    fuzzed: Served, tmp_path: Path
) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is not installed (it is in the dev extra)")
    res = subprocess.run(
        [
            exe,
            "run",
            f"{fuzzed.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {KEYS['acme']}",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,"
            "status_code_conformance",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
