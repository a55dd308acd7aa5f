"""SIGHUP on `openheim serve` rebuilds the [workflows.NAME] tables (and their step code); runs
in flight finish on the definition they started with; a broken table keeps the old ones."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ixhelpers import CONFIG, Served, start_server, stop_server, write_project
from wfopsflows import TABLE

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")

HERE = Path(__file__).parent


def config_text(folder: Path, tables: str) -> str:
    store = f"sqlite:///{folder / 'wf.db'}"
    return CONFIG.replace('url = "memory://"', f'url = "{store}"') + tables


def hup(served: Served, word: str, n: int) -> str:
    """SIGHUP; wait until the log has said ``word`` n times; the log."""
    log = served.config.parent / f"serve-{served.port}.log"
    os.kill(served.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while log.read_text().count(word) < n:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return log.read_text()


def settled(c: httpx.Client, name: str, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(1200):
        body = c.get(f"/v1/workflows/{name}/runs/{run_id}").json()
        if body["status"] not in ("running",):
            return body
        time.sleep(0.05)
    raise AssertionError(body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    folder = tmp_path / "proj"
    path = write_project(folder, config_text(folder, TABLE))
    shutil.copy(HERE / "wfopsflows.py", folder / "wfopsflows.py")
    served = start_server(path, grpc=False)
    yield served
    stop_server(served)


def test_reload_rebuilds_the_workflows_and_runs_in_flight_keep_theirs(served: Served) -> None:
    folder = served.config.parent
    code = folder / "wfopsflows.py"
    with served.client() as c:
        assert c.get("/v1/workflows/quick/approvals").status_code == 404
        old = c.post("/v1/workflows/slow/runs", json={"input": {"after": 2}})
        assert old.status_code == 202, old.text

        # New step code, and a second workflow: both there after the reload.
        code.write_text(code.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        quick = TABLE.replace("[workflows.slow", "[workflows.quick")
        served.config.write_text(config_text(folder, TABLE + quick))
        hup(served, "reloaded", 1)
        assert c.get("/v1/workflows/quick/approvals").status_code == 200
        new = c.post("/v1/workflows/quick/runs", json={"input": {}, "wait": True}).json()
        assert new["state"]["version"] == "v2"
        again = c.post("/v1/workflows/slow/runs", json={"input": {}, "wait": True}).json()
        assert again["state"]["version"] == "v2"
        # The run started before the reload finished on the code it started with.
        assert settled(c, "slow", old.json()["run_id"])["state"]["version"] == "v1"

        # A table that does not build: the reload fails, the workflows served stay.
        served.config.write_text(
            config_text(folder, '[workflows.bad]\nstate = "wfopsflows:Nope"\n')
        )
        log = hup(served, "reload failed", 1)
        assert "workflows.bad" in log.split("reload failed", 1)[1]
        assert c.get("/v1/workflows/quick/approvals").status_code == 200

        # Dropped from the file: no longer served.
        served.config.write_text(config_text(folder, TABLE))
        hup(served, "reloaded", 2)
        missing = c.get("/v1/workflows/quick/approvals")
        assert missing.status_code == 404
        assert "(workflows: slow)" in missing.json()["error"]["message"]
