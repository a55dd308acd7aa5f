"""Workflow approvals in `openheim chat`, through a pseudo-terminal (pexpect, like test_repl.py):
start a run, list what waits, approve or reject with a reason, and watch the run go on.

The workflow is the config's [workflows.slow] on SQLite; its steps append their names
to ``effects``, so the test sees that nothing before the approval ran again.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import CONFIG, child_env, write_project
from wfopsflows import TABLE

pexpect = pytest.importorskip("pexpect")

HERE = Path(__file__).parent
ID = r"(wf-[0-9a-f]+-\d+:\d+:gate)"


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[object]:
    folder = tmp_path / "proj"
    store = f"sqlite:///{folder / 'wf.db'}"
    write_project(folder, CONFIG.replace('url = "memory://"', f'url = "{store}"') + TABLE)
    shutil.copy(HERE / "wfopsflows.py", folder / "wfopsflows.py")
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
