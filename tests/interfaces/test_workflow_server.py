"""Workflow routes of a real ``openheim serve`` on loopback: the Guard, tenants, SSE, OpenAPI.

The workflow is the config's [workflows.triage] (a branch, a map and an
approval) on SQLite; the CLI on the same store sees the runs the server made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ixhelpers import CONFIG, Served, child_env, start_server, stop_server, write_project
from wfflows import TABLE

HERE = Path(__file__).parent
TEXT = "The app crashes. It loses data"
WF = "/v1/workflows/triage"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("wfserve")
    store = f"sqlite:///{folder / 'wf.db'}"
    config = CONFIG.replace('url = "memory://"', f'url = "{store}"') + TABLE
    path = write_project(folder, config)
    shutil.copy(HERE / "wfflows.py", folder / "wfflows.py")
    server = start_server(path, grpc=False)
    yield server
    stop_server(server)


def settled(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The run once it is no longer running (the server resumes it in the background)."""
    for _ in range(600):
        body: dict[str, Any] = client.get(f"{WF}/runs/{run_id}").json()
        if body["status"] != "running":
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still running: {body}")


def test_requests_need_an_api_key(served: Served) -> None:
    res = httpx.get(f"{served.url}{WF}/approvals")
    assert res.status_code == 401
    assert res.json()["error"]["type"]


def test_a_run_waits_for_approval_and_is_decided_over_http(served: Served) -> None:
    with served.client("acme") as acme, served.client("globex") as globex:
        res = acme.post(f"{WF}/runs", json={"input": {"text": TEXT}, "wait": True})
        assert res.status_code == 200, res.text
        run = res.json()
        assert run["status"] == "waiting"
        assert run["state"]["kind"] == "bug"
        assert run["state"]["notes"] == ["checked: The app crashes", "checked: It loses data"]
        (pending,) = run["pending"]
        # Another tenant sees neither the run nor its approval, and cannot decide it.
        assert globex.get(f"{WF}/runs/{run['run_id']}").status_code == 404
        assert globex.get(f"{WF}/approvals").json() == {"approvals": []}
        denied = globex.post(f"{WF}/approvals/{pending['id']}", json={"approved": True})
        assert denied.status_code == 404
        listed = acme.get(f"{WF}/approvals").json()["approvals"]
        assert [a["id"] for a in listed] == [pending["id"]]

        res = acme.post(f"{WF}/approvals/{pending['id']}", json={"approved": True, "by": "ann"})
        assert res.status_code == 202, res.text
        assert res.json() == {"approval_id": pending["id"], "run_id": run["run_id"]}
        done = settled(acme, run["run_id"])
        assert done["status"] == "done"
        assert done["state"]["reply"] == "fixed"
        assert done["state"]["decision"]["by"] == "ann"

        # Events: the checkpoints after Last-Event-ID, then the final status.
        with acme.stream(
            "GET", f"{WF}/runs/{run['run_id']}/events", headers={"Last-Event-ID": "2"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
        assert ids
        assert min(ids) == 3
        assert ids == sorted(ids)
        assert "event: done" in text
        assert '"node":"close"' in text

    # The CLI, as tenant acme on the same store, sees what the server made.
    script = Path(sys.executable).parent / "openheim"
    proc = subprocess.run(
        [str(script), "workflow", "status", "triage", run["run_id"], "--tenant", "acme"],
        cwd=served.config.parent,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"]["reply"] == "fixed"


def test_fork_cancel_and_errors(served: Served) -> None:
    with served.client("acme") as acme:
        run = acme.post(f"{WF}/runs", json={"input": {"text": "crash"}, "wait": True}).json()
        res = acme.post(f"{WF}/runs/{run['run_id']}/fork", json={"state": {"kind": "question"}})
        assert res.status_code == 202, res.text
        fork = res.json()
        assert fork["forked_from"] == run["run_id"]
        assert fork["run_id"] != run["run_id"]
        cancelled = acme.post(f"{WF}/runs/{run['run_id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert acme.post(f"{WF}/runs/{run['run_id']}/resume").status_code == 409

        # Deleted once finished (the cancelled run, the fork); a waiting run is refused
        # until it is cancelled; for another tenant the run does not exist.
        waiting = acme.post(f"{WF}/runs", json={"input": {"text": TEXT}, "wait": True}).json()
        assert waiting["status"] == "waiting"
        refused = acme.delete(f"{WF}/runs/{waiting['run_id']}")
        assert refused.status_code == 409, refused.text
        assert "is waiting: cancel it first" in refused.json()["error"]["message"]
        with served.client("globex") as globex:
            assert globex.delete(f"{WF}/runs/{run['run_id']}").status_code == 404
        if settled(acme, fork["run_id"])["status"] == "waiting":
            acme.post(f"{WF}/runs/{fork['run_id']}/cancel")
        for run_id in (fork["run_id"], run["run_id"]):
            gone = acme.delete(f"{WF}/runs/{run_id}")
            assert gone.status_code == 204, gone.text
            assert acme.get(f"{WF}/runs/{run_id}").status_code == 404
        assert acme.delete(f"{WF}/runs/{run['run_id']}").status_code == 404
        acme.post(f"{WF}/runs/{waiting['run_id']}/cancel")
        assert acme.delete(f"{WF}/runs/{waiting['run_id']}").status_code == 204
        assert acme.get(f"{WF}/approvals").json() == {"approvals": []}

        started = acme.post(f"{WF}/runs", json={"input": {"text": "how?"}})
        assert started.status_code == 202
        assert started.headers["location"] == f"{WF}/runs/{started.json()['run_id']}"
        assert settled(acme, started.json()["run_id"])["state"]["reply"] == "answered"

        missing = acme.get("/v1/workflows/nope/approvals")
        assert missing.status_code == 404
        assert "no workflow 'nope' (workflows: triage)" in missing.json()["error"]["message"]
        bad = acme.post(f"{WF}/runs", json={"inputs": {}})
        assert bad.status_code == 400
        assert acme.get(f"{WF}/runs/no-such-run").status_code == 404


def test_the_routes_are_in_the_openapi_document(served: Served) -> None:
    doc = httpx.get(f"{served.url}/openapi.json").json()
    ops = {
        (method, path)
        for path, item in doc["paths"].items()
        if path.startswith("/v1/workflows/")
        for method in item
    }
    assert ops == {
        ("post", "/v1/workflows/{name}/runs"),
        ("get", "/v1/workflows/{name}/runs/{run_id}"),
        ("delete", "/v1/workflows/{name}/runs/{run_id}"),
        ("get", "/v1/workflows/{name}/runs/{run_id}/events"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/cancel"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/resume"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/fork"),
        ("get", "/v1/workflows/{name}/approvals"),
        ("post", "/v1/workflows/{name}/approvals/{approval_id}"),
    }
    submit = doc["paths"]["/v1/workflows/{name}/runs"]["post"]
    assert submit["parameters"][0]["schema"]["enum"] == ["triage"]
    assert "401" in submit["responses"]
    run_schema = doc["components"]["schemas"]["WorkflowRun"]
    assert set(run_schema["required"]) == {"run_id", "status", "state", "pending", "usage"}
    agent_runs = doc["paths"]["/v1/agents/{name}/runs"]["post"]
    assert "triage" not in agent_runs["parameters"][0]["schema"]["enum"]


def test_serve_refuses_a_workflow_without_a_store(tmp_path: Path) -> None:
    path = write_project(tmp_path, '[workflows.b]\nworkflow = "wfflows:built"\n')
    shutil.copy(HERE / "wfflows.py", tmp_path / "wfflows.py")
    proc = subprocess.run(
        [sys.executable, "-m", "openheim", "serve", "--config", str(path), "--port", "0"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:1: workflows.b: workflow 'built' has no store" in proc.stderr
