"""Batch mode from the shell: ``openheim worker`` processes and ``openheim workflow submit |
status | result | approve | cancel | dead-letters`` on a Redis queue, one process each."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ixhelpers import child_env
from test_workflow_cli import make_project

pytestmark = pytest.mark.redis

REDIS = "redis://127.0.0.1:6379/0"
SCRIPT = str(Path(sys.executable).parent / "openheim")


class Project:
    def __init__(self, folder: Path) -> None:
        make_project(folder)
        self.folder = folder
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.queue = ["--queue", REDIS, "--queue-name", self.name]
        self.workers: list[subprocess.Popen[str]] = []
        self.ready: dict[str, Any] = {}  # the last worker's first line

    def oh(self, *args: str, ok: int = 0) -> tuple[list[Any], str]:
        proc = subprocess.run(
            [SCRIPT, *args],
            cwd=self.folder,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == ok, (proc.stdout, proc.stderr)
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        return lines, proc.stderr

    def worker(self, workflows: str, *more: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [
                SCRIPT,
                "worker",
                "--workflows",
                workflows,
                *self.queue,
                "--stats-every",
                "0.5",
                *more,
            ],
            cwd=self.folder,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        ready = json.loads(p.stdout.readline())
        assert ready["queue"] == REDIS
        self.ready = ready
        self.workers.append(p)
        return p

    def stop(self, p: subprocess.Popen[str]) -> list[dict[str, Any]]:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    try:
        yield p
    finally:
        for w in p.workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
        asyncio.run(_purge(p.name))


async def _purge(name: str) -> None:
    from openheim.workflow.queues import open_queue

    q = open_queue(REDIS, name=name)
    await q.purge()
    await q.aclose()


def test_submit_a_file_of_inputs_then_steer_the_runs(project: Project, tmp_path: Path) -> None:
    # Two tasks taken at a time (of 64 that may run): the runs finish all the same.
    w = project.worker("triage", "--take", "2", "--cache-mb", "0.5")
    assert (project.ready["concurrency"], project.ready["take"]) == (64, 2)
    assert project.ready["cache_mb"] == 0.5
    inputs = tmp_path / "runs.jsonl"
    inputs.write_text(
        "\n".join(json.dumps({"text": t}) for t in ["why?", "how?", "It crashes. Badly"]) + "\n"
    )
    runs, err = project.oh("workflow", "submit", "triage", "--input", str(inputs), *project.queue)
    assert len(runs) == 3
    # Not a terminal: the progress is plain lines, then the summary table.
    assert re.search(r"runs 3/3 +done 2 +failed 0 +[\d.]+/s", err), err
    assert re.search(r"^other \(waiting, cancelled\) +1$", err, re.M), err
    bug = runs[2]["run_id"]
    (status,), _ = project.oh("workflow", "status", "triage", bug, *project.queue)
    assert status["status"] == "waiting"
    (pending,) = status["pending"]
    assert pending["node"] == "review"
    project.oh("workflow", "approve", "triage", pending["id"], "--by", "ops", *project.queue)
    (done,), _ = project.oh("workflow", "result", "triage", bug, "--timeout", "30", *project.queue)
    assert done["status"] == "done"
    assert done["state"]["reply"] == "fixed"
    (answered,), _ = project.oh("workflow", "result", "triage", runs[0]["run_id"], *project.queue)
    assert answered["state"]["reply"] == "answered"
    lines = project.stop(w)
    stats = [x for x in lines if "stats" in x]
    assert stats
    assert {"depth", "in_flight", "redeliveries", "dead_letters"} <= set(stats[-1]["stats"])
    assert lines[-1]["committed"] >= 8


def test_cancel_and_dead_letters(project: Project, tmp_path: Path) -> None:
    inputs = tmp_path / "one.jsonl"
    inputs.write_text(json.dumps({"text": "why?"}) + "\n")
    (run,), _ = project.oh(
        "workflow", "submit", "triage", "--input", str(inputs), "--no-wait", *project.queue
    )
    project.oh("workflow", "cancel", "triage", run["run_id"], *project.queue)
    (status,), _ = project.oh("workflow", "status", "triage", run["run_id"], *project.queue)
    assert status["status"] == "cancelled"
    err = project.oh("workflow", "result", "triage", run["run_id"], *project.queue, ok=1)[1]
    assert "was cancelled" in err

    none, err = project.oh("workflow", "dead-letters", *project.queue)
    assert none == []
    assert "no dead letters on queue" in err
    # A worker that does not know the workflow gives its task up as a dead letter.
    (other,), _ = project.oh(
        "workflow", "submit", "wfflows:built", "--input", str(inputs), "--no-wait", *project.queue
    )
    w = project.worker("triage")
    assert project.ready["take"] == 64  # (by default: --concurrency)
    for _ in range(100):
        dead, _ = project.oh("workflow", "dead-letters", *project.queue)
        if dead:
            break
    project.stop(w)
    (letter,) = dead
    assert letter["task"]["run_id"] == other["run_id"]
    assert "does not run workflow 'built'" in letter["reason"]
    (retried,), _ = project.oh("workflow", "dead-letters", "retry", letter["id"], *project.queue)
    assert retried == {"retried": letter["id"]}
    err = project.oh("workflow", "dead-letters", "retry", letter["id"], *project.queue, ok=2)[1]
    assert "no dead letter" in err
    w = project.worker("triage,wfflows:built")
    (done,), _ = project.oh(
        "workflow", "result", "wfflows:built", other["run_id"], "--timeout", "30", *project.queue
    )
    assert done["state"]["reply"] == "answered"
    project.stop(w)


def test_bad_worker_arguments_are_refused_clearly(project: Project, tmp_path: Path) -> None:
    _, err = project.oh("worker", "--queue", "kafka://x", "--workflows", "triage", ok=2)
    assert "unknown queue URL 'kafka://x'" in err
    _, err = project.oh("worker", *project.queue, "--workflows", "nope:wf", ok=2)
    assert "cannot load workflow 'nope:wf'" in err
    _, err = project.oh("worker", *project.queue, "--workflows", "triage", "--take", "0", ok=2)
    assert "--take must be at least 1, got 0" in err
    _, err = project.oh("worker", *project.queue, "--workflows", "triage", "--cache-mb", "-1", ok=2)
    assert "--cache-mb must be positive, got -1" in err
    _, err = project.oh(
        "worker", *project.queue, "--workflows", "triage", "--deadline-every", "0", ok=2
    )
    assert "--deadline-every must be positive, got 0" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n[1, 2]\n')
    _, err = project.oh("workflow", "submit", "triage", "--input", str(bad), *project.queue, ok=2)
    assert f"{bad}:2: each line is a JSON object" in err
    # JSON given where a file is expected: what --input takes, and how to pipe it.
    inline = '{"text": "why?"}'
    _, err = project.oh("workflow", "submit", "triage", "--input", inline, *project.queue, ok=2)
    assert "cannot read --input" in err
    assert "No such file or directory" in err
    assert "--input takes a JSON-lines file" in err
    assert f"echo '{inline}' | openheim workflow submit ... --input -" in err
    (stats,), _ = project.oh("worker", *project.queue, "--workflows", "triage", "--stats")
    assert stats["depth"] == 0
    assert stats["queue"] == project.name


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    """``openheim worker``'s garbage collector settings (in a process of its own: this
    one's stay as they are)."""
    import subprocess
    import sys

    code = (
        "import gc; from openheim.workflow._worker import tune_gc; "
        "before = gc.get_threshold(); tune_gc(); "
        "print(before[0], gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["700", "50000", "True"]


def test_delete_and_prune_finished_batch_runs(project: Project, tmp_path: Path) -> None:
    ns = ["--namespace", project.name]  # (its own namespace: prune sees only these runs)
    w = project.worker("triage")
    inputs = tmp_path / "runs.jsonl"
    inputs.write_text(
        "\n".join(json.dumps({"text": t}) for t in ["why?", "how?", "It crashes. Badly"]) + "\n"
    )
    runs, _ = project.oh(
        "workflow", "submit", "triage", "--input", str(inputs), *ns, *project.queue
    )
    done = sorted(r["run_id"] for r in runs[:2])
    waiting = runs[2]["run_id"]
    _, err = project.oh("workflow", "delete", "triage", waiting, *ns, *project.queue, ok=1)
    assert "is waiting: cancel it first" in err

    listed, err = project.oh(
        "workflow", "prune", "triage", "--older-than", "0", "--dry-run", *ns, *project.queue
    )
    assert sorted(r["run_id"] for r in listed) == done
    assert "2 finished run(s) would be deleted" in err
    gone, err = project.oh("workflow", "prune", "triage", "--older-than", "0s", *ns, *project.queue)
    assert sorted(r["run_id"] for r in gone) == done
    assert all(r["deleted"] for r in gone)
    for run_id in done:
        _, err = project.oh("workflow", "status", "triage", run_id, *ns, *project.queue, ok=1)
        assert "no run" in err
    (status,), _ = project.oh("workflow", "status", "triage", waiting, *ns, *project.queue)
    assert status["status"] == "waiting"  # (not finished: pruning leaves it)
    kept, _ = project.oh("workflow", "prune", "triage", "--older-than", "7d", *ns, *project.queue)
    assert kept == []

    project.oh("workflow", "cancel", "triage", waiting, *ns, *project.queue)
    (deleted,), _ = project.oh("workflow", "delete", "triage", waiting, *ns, *project.queue)
    assert deleted == {"run_id": waiting, "deleted": True}
    _, err = project.oh(
        "workflow", "prune", "triage", "--older-than", "7x", *ns, *project.queue, ok=2
    )
    assert "--older-than '7x' is not an age" in err
    project.stop(w)
