"""Workflow approvals in `openheim chat`, through a pseudo-terminal (pexpect, like test_repl.py):
start a run, list what waits, approve or reject with a reason, and watch the run go on.

The workflow is the config's [workflows.slow] on SQLite; its steps append their names
to ``effects``, so the test sees that nothing before the approval ran again.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ixhelpers import CONFIG, child_env, write_project
from wfopsflows import TABLE

pexpect = pytest.importorskip("pexpect")

HERE = Path(__file__).parent
ID = r"(wf-[0-9a-f]+-\d+:\d+:gate)"
OPENHEIM = (sys.executable, "-m", "openheim")


def _project(tmp_path: Path, store: str) -> Path:
    folder = tmp_path / "proj"
    write_project(folder, CONFIG.replace('url = "memory://"', f'url = "{store}"') + TABLE)
    shutil.copy(HERE / "wfopsflows.py", folder / "wfopsflows.py")
    return folder


def _spawn(folder: Path, tmp_path: Path) -> Any:
    env = child_env(
        PROMPT_TOOLKIT_NO_CPR="1",
        TERM="dumb",
        OPENHEIM_HISTORY_FILE=str(tmp_path / "history"),
        USER="ann",
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "openheim", "chat", "echo"],
        cwd=str(folder),
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 400),  # wide: rich wraps nothing
    )
    child.expect("you> ")
    return child


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[object]:
    folder = _project(tmp_path, f"sqlite:///{tmp_path / 'proj' / 'wf.db'}")
    child = _spawn(folder, tmp_path)
    yield child
    if child.isalive():
        child.terminate(force=True)
    child.close()


def send(child: object, line: str) -> None:
    time.sleep(0.3)  # prompt_toolkit drops keys typed before the terminal is raw
    child.sendline(line)  # type: ignore[attr-defined]


def start(chat: object) -> str:
    send(chat, "/wf slow " + json.dumps({"gate": True}))
    chat.expect(r"run (wf-[0-9a-f]+-\d+) of slow")  # type: ignore[attr-defined]
    chat.expect("→ nap")  # type: ignore[attr-defined]
    chat.expect("approval " + ID + " waits at gate")  # type: ignore[attr-defined]
    approval: str = chat.match.group(1)  # type: ignore[attr-defined]
    chat.expect("waiting")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    return approval


def test_approve_a_workflow_and_see_it_continue(chat: object, tmp_path: Path) -> None:
    send(chat, "/workflows")
    chat.expect("slow")  # type: ignore[attr-defined]
    first, second = start(chat), start(chat)
    send(chat, "/approvals")
    chat.expect(first)  # type: ignore[attr-defined]
    chat.expect(second)  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]

    send(chat, f"/approve {first} ship it")
    chat.expect(f"{first} approved")  # type: ignore[attr-defined]
    chat.expect("→ finish")  # type: ignore[attr-defined]
    chat.expect(r": done")  # type: ignore[attr-defined]
    chat.expect(r"approved=True, by='repl:ann', reason='ship it'")  # type: ignore[attr-defined]
    chat.expect("version='v1'")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]

    send(chat, f"/reject {second} not today")
    chat.expect(f"{second} rejected")  # type: ignore[attr-defined]
    chat.expect(r"approved=False, by='repl:ann', reason='not today'")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]

    send(chat, "/approvals")
    chat.expect("no pending approvals")  # type: ignore[attr-defined]
    send(chat, f"/approve {first}")
    chat.expect(f"WorkflowApprovalError: approval '{first}' was already approved by repl:ann")  # type: ignore[attr-defined]
    send(chat, "/approve nope")
    chat.expect("no approval 'nope'")  # type: ignore[attr-defined]
    send(chat, "/wf nope")
    chat.expect("no workflow 'nope'")  # type: ignore[attr-defined]
    send(chat, "/wf slow [1]")
    chat.expect("the input must be a JSON object")  # type: ignore[attr-defined]
    send(chat, "/wf slow {nope")
    chat.expect("the input is not valid JSON")  # type: ignore[attr-defined]

    # Ctrl-C stops following a run (it stays resumable) and the REPL goes on.
    send(chat, "/wf slow " + json.dumps({"nap": 30}))
    chat.expect("→ nap")  # type: ignore[attr-defined]
    time.sleep(0.3)
    chat.sendintr()  # type: ignore[attr-defined]
    chat.expect("cancelled")  # type: ignore[attr-defined]
    chat.expect("openheim workflow resume")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "/workflows")
    chat.expect("slow")  # type: ignore[attr-defined]
    send(chat, "/exit")
    chat.expect(pexpect.EOF)  # type: ignore[attr-defined]
    effects = (tmp_path / "proj" / "effects").read_text().split()
    assert effects.count("nap") == 3  # the decisions ran nothing before the approval again
    assert effects.count("finish") == 2


async def _purge(url: str, name: str) -> None:
    from openheim.workflow._batch import Batch

    b = Batch(url, queue_name=name)
    await b.queue.purge()
    await b.aclose()


@pytest.mark.redis
def test_approving_a_batch_run_in_the_repl_leaves_it_to_the_workers(tmp_path: Path) -> None:
    """The run was submitted to a Redis queue and an `openheim worker` moves it: the
    REPL's decision puts it back on its queue; the REPL runs none of its steps."""
    redis = os.environ.get("OPENHEIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    ns = f"repl-{uuid.uuid4().hex[:8]}"
    folder = _project(tmp_path, redis)
    queue = ["--queue", redis, "--queue-name", ns]
    env = child_env()
    (folder / "in.jsonl").write_text(json.dumps({"gate": True}) + "\n")
    worker = subprocess.Popen(
        [*OPENHEIM, "worker", *queue, "--workflows", "slow"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    child = None
    try:
        out = subprocess.run(
            [*OPENHEIM, "workflow", "submit", "slow", *queue, "--input", "in.jsonl"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        run_id = json.loads(out.stdout.splitlines()[0])["run_id"]
        child = _spawn(folder, tmp_path)
        send(child, "/approvals")
        child.expect(ID)
        approval = child.match.group(1)
        assert approval.startswith(run_id + ":")
        child.expect("you> ")
        send(child, f"/approve {approval}")
        child.expect(f"{approval} approved; run {run_id} goes on in the workers of {redis}")
        child.expect("you> ")
        status: dict[str, Any] = {}
        for _ in range(600):
            got = subprocess.run(
                [*OPENHEIM, "workflow", "status", "slow", run_id],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            status = json.loads(got.stdout)
            if status["status"] == "done":
                break
            time.sleep(0.05)
        assert status["status"] == "done", status
        assert status["state"]["decision"]["by"] == "repl:ann"
        send(child, "/exit")
        child.expect(pexpect.EOF)
    finally:
        if child is not None and child.isalive():
            child.terminate(force=True)
        worker.terminate()
        worker.communicate(timeout=60)
        asyncio.run(_purge(redis, ns))
    effects = (folder / "effects").read_text().split()
    assert effects == ["nap", "finish"]  # once each, by the worker
