"""schemathesis on the workflow routes of /openapi.json: no 5xx, answers match the document."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import KEYS, Served, start_server, stop_server, write_project
from wfflows import TABLE

HERE = Path(__file__).parent

CONFIG = """\
[store]
url = "memory://"

[server]
max_body_bytes = 65536

[[server.api_keys]]
tenant = "acme"
key_env = "IX_ACME_KEY"
"""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("wffuzz")
    path = write_project(folder, CONFIG + TABLE)
    shutil.copy(HERE / "wfflows.py", folder / "wfflows.py")
    served = start_server(path, grpc=False)
    yield served
    stop_server(served)


def test_schemathesis_on_the_workflow_routes(fuzzed: Served, tmp_path: Path) -> None:
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
            "--include-path-regex",
            "^/v1/workflows/",
            "--max-examples",
            "25",
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
    assert "/v1/workflows/{name}/runs" in res.stdout  # the routes were exercised
