"""Workflow runs a real ``openheim serve`` continues (resume, fork, decide) are driven under
the run's lease, tracked, and drained on shutdown like the runs it starts.

Two servers share one SQLite store: the lease makes exactly one of them drive a
run. SIGTERM lets the runs in flight finish within ``[server] shutdown_grace``;
a run that does not is cancelled, stays resumable from its last checkpoint, and
its lease is released at once (another server resumes it without waiting for it
to expire). ``effects`` (written by every step of wfopsflows.py) counts what ran.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ixhelpers import CONFIG, Served, start_server, stop_server, write_project
from wfopsflows import PARALLEL, TABLE, TIMED

HERE = Path(__file__).parent
WF = "/v1/workflows/slow"


def project(folder: Path, grace: float = 5) -> Path:
    store = f"sqlite:///{folder / 'wf.db'}"
    config = (
        CONFIG.replace('url = "memory://"', f'url = "{store}"').replace(
            "shutdown_grace = 5", f"shutdown_grace = {grace}"
        )
        + TABLE
        + TIMED
        + PARALLEL
    )
    path = write_project(folder, config)
    shutil.copy(HERE / "wfopsflows.py", folder / "wfopsflows.py")
    return path


def effects(folder: Path) -> list[str]:
    path = folder / "effects"
    return path.read_text().split() if path.exists() else []


def wait_for(client: httpx.Client, run_id: str, *statuses: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(1200):
        body = client.get(f"{WF}/runs/{run_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {statuses}: {body}")


def wait_effect(folder: Path, name: str, count: int = 1) -> None:
    for _ in range(1200):
        if effects(folder).count(name) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name!r} did not run {count} time(s): {effects(folder)}")


def terminate(served: Served) -> bool:
    """SIGTERM; True once the server left cleanly (uvicorn re-raises the signal at the end)."""
    served.proc.send_signal(signal.SIGTERM)
    return served.proc.wait(60) in (0, -signal.SIGTERM)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    """Two servers on one store."""
    path = project(tmp_path)
    a = start_server(path, grpc=False)
    try:
        b = start_server(path, grpc=False)
    except BaseException:
        stop_server(a)
        raise
    yield a, b
    stop_server(a)
    stop_server(b)


def test_two_servers_never_both_drive_a_run(pair: tuple[Served, Served], tmp_path: Path) -> None:
    a, b = pair
    with a.client() as ca, b.client() as cb:
        # A started it and drives it (the lease is A's): B can neither resume nor fork-and-
        # resume it under the same id, and says who should be asked instead.
        res = ca.post(f"{WF}/runs", json={"input": {"nap": 3}})
        assert res.status_code == 202, res.text
        run_id = res.json()["run_id"]
        wait_effect(tmp_path, "nap")
        busy = cb.post(f"{WF}/runs/{run_id}/resume")
        assert busy.status_code == 409, busy.text
        assert "driven by another process" in busy.json()["error"]["message"]
        assert ca.post(f"{WF}/runs/{run_id}/resume").status_code == 409  # A itself: driving
        assert wait_for(cb, run_id, "done")["state"]["version"] == "v1"
        assert effects(tmp_path).count("nap") == 1

        # A run waiting for approval, decided on both servers at once: one continues it.
        run = ca.post(f"{WF}/runs", json={"input": {"gate": True, "after": 2}, "wait": True})
        assert run.status_code == 200, run.text
        (pending,) = run.json()["pending"]
        first = ca.post(f"{WF}/approvals/{pending['id']}", json={"approved": True, "by": "a"})
        assert first.status_code == 202, first.text
        second = cb.post(f"{WF}/approvals/{pending['id']}", json={"approved": False, "by": "b"})
        assert second.status_code == 409, second.text
        resumed = cb.post(f"{WF}/runs/{run.json()['run_id']}/resume")
        assert resumed.status_code == 409  # A continues it right now
        done = wait_for(ca, run.json()["run_id"], "done")
        assert done["state"]["decision"]["by"] == "a"
        assert done["state"]["decision"]["approved"] is True
    assert effects(tmp_path).count("finish") == 2


def test_shutdown_drains_continued_runs(tmp_path: Path) -> None:
    path = project(tmp_path, grace=20)
    a = start_server(path, grpc=False)
    try:
        with a.client() as ca:
            waiting = [
                ca.post(f"{WF}/runs", json={"input": {"gate": True, "after": 1.5}, "wait": True})
                for _ in range(2)
            ]
            assert all(r.json()["status"] == "waiting" for r in waiting)
            # One continued by a decision, a fork of it (continued too) and another
            # continued by a rejection: all three are in flight when SIGTERM comes.
            first = waiting[0].json()
            decided = ca.post(
                f"{WF}/approvals/{first['pending'][0]['id']}", json={"approved": True}
            )
            assert decided.status_code == 202
            fork = ca.post(f"{WF}/runs/{first['run_id']}/fork", json={"state": {"after": 1.5}})
            assert fork.status_code == 202, fork.text
            second = waiting[1].json()
            ca.post(f"{WF}/approvals/{second['pending'][0]['id']}", json={"approved": False})
        assert terminate(a)
        # SIGTERM came while they ran: each finished before the server left.
        assert effects(tmp_path).count("finish") == 3
    finally:
        stop_server(a)
    b = start_server(path, grpc=False)
    try:
        with b.client() as cb:
            for run_id in (first["run_id"], fork.json()["run_id"], second["run_id"]):
                body = cb.get(f"{WF}/runs/{run_id}").json()
                assert body["status"] == "done", body
            assert (
                cb.get(f"{WF}/runs/{second['run_id']}").json()["state"]["decision"]["approved"]
                is False
            )
    finally:
        stop_server(b)


def test_a_run_past_the_grace_is_cancelled_resumable_and_its_lease_released(
    tmp_path: Path,
) -> None:
    path = project(tmp_path, grace=1)
    a = start_server(path, grpc=False)
    try:
        with a.client() as ca:
            run = ca.post(f"{WF}/runs", json={"input": {"gate": True, "after": 60}, "wait": True})
            (pending,) = run.json()["pending"]
            assert ca.post(f"{WF}/approvals/{pending['id']}", json={"approved": True}).status_code
            wait_effect(tmp_path, "nap")
            time.sleep(0.5)  # `finish` is asleep now
        assert terminate(a)
    finally:
        stop_server(a)
    assert "finish" not in effects(tmp_path)
    b = start_server(path, grpc=False)
    try:
        with b.client() as cb:
            run_id = run.json()["run_id"]
            assert cb.get(f"{WF}/runs/{run_id}").json()["status"] == "running"
            # The lease was released at the cancel: B takes the run over at once (a lease
            # still held would answer 409 for its whole 30 s ttl).
            patched = cb.post(f"{WF}/runs/{run_id}/fork", json={"state": {"after": 0}})
            assert patched.status_code == 202, patched.text
            resumed = cb.post(f"{WF}/runs/{run_id}/resume")
            assert resumed.status_code == 202, resumed.text
            done = wait_for(cb, patched.json()["run_id"], "done")
            assert done["state"]["decision"]["approved"] is True
            assert effects(tmp_path).count("nap") == 1  # nothing before `finish` ran again
            cb.post(f"{WF}/runs/{run_id}/cancel")
    finally:
        stop_server(b)


def test_a_deadline_passes_while_no_server_runs(tmp_path: Path) -> None:
    """The server that asked for the approval is gone when its deadline passes: the next
    server on the store rejects it and finishes the run (nothing before it runs again)."""
    path = project(tmp_path)
    a = start_server(path, grpc=False)
    try:
        with a.client() as ca:
            run = ca.post("/v1/workflows/timed/runs", json={"input": {}, "wait": True}).json()
            assert run["status"] == "waiting"
            (pending,) = run["pending"]
            assert pending["deadline"] > time.time()
        assert terminate(a)
    finally:
        stop_server(a)
    while time.time() < pending["deadline"]:
        time.sleep(0.1)
    b = start_server(path, grpc=False)
    try:
        with b.client() as cb:
            for _ in range(400):
                body = cb.get(f"/v1/workflows/timed/runs/{run['run_id']}").json()
                if body["status"] == "done":
                    break
                time.sleep(0.05)
            assert body["status"] == "done", body
            decision = body["state"]["decision"]
            assert decision["approved"] is False
            assert decision["by"] == "deadline"
            assert cb.get("/v1/workflows/timed/approvals").json() == {"approvals": []}
    finally:
        stop_server(b)
    assert effects(tmp_path) == ["finish"]


def test_a_decision_while_the_server_still_drives_the_run(tmp_path: Path) -> None:
    """The approval waits in one branch while the other still runs here: the decision
    goes to the run's driver, which carries on; nothing ran twice."""
    path = project(tmp_path)
    a = start_server(path, grpc=False)
    try:
        with a.client() as ca:
            res = ca.post("/v1/workflows/par/runs", json={"input": {"nap": 2}})
            run_id = res.json()["run_id"]
            for _ in range(400):
                pending = ca.get("/v1/workflows/par/approvals").json()["approvals"]
                if pending:
                    break
                time.sleep(0.02)
            (approval,) = pending
            assert ca.get(f"/v1/workflows/par/runs/{run_id}").json()["status"] == "running"
            decided = ca.post(
                f"/v1/workflows/par/approvals/{approval['id']}", json={"approved": True, "by": "x"}
            )
            assert decided.status_code == 202, decided.text
            for _ in range(400):
                body = ca.get(f"/v1/workflows/par/runs/{run_id}").json()
                if body["status"] != "running":
                    break
                time.sleep(0.05)
            assert body["status"] == "done", body
            assert body["state"]["decision"]["by"] == "x"
    finally:
        stop_server(a)
    assert sorted(effects(tmp_path)) == ["begin", "finish", "nap"]
