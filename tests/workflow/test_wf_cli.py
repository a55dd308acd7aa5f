"""``python -m openheim.cli_workflow``: each command in a process of its own, on SQLite.

The run waits for an approval in one process and is decided, inspected,
forked and cancelled from others; an execution log proves that no step
before the approval ran again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

APP = textwrap.dedent(
    """
    import os
    import msgspec
    import openheim as oh
    from openheim.workflow import Decision

    class Ticket(msgspec.Struct):
        text: str = ""
        kind: str = ""
        decision: Decision | None = None

    HERE = os.path.dirname(os.path.abspath(__file__))

    def effect(name):
        with open(os.path.join(HERE, "effects"), "a") as f:
            f.write(name + "\\n")

    triage = oh.Workflow("triage", state=Ticket, store=f"sqlite:///{HERE}/state.db")

    @triage.step
    def classify(t):
        effect("classify")
        return {"kind": "bug" if "crash" in t.text else "question"}

    triage.approval("review", payload=lambda t: {"text": t.text}, output="decision")

    @triage.step
    def publish(t):
        effect("publish")
        return None

    triage.edge("classify", "review")
    triage.edge("review", "publish")
    """
)


def _cli(tmp: Path, *args: str, ok: int = 0) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "openheim.cli_workflow", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp)},
    )
    assert proc.returncode == ok, proc.stderr
    if ok:
        return [{"stderr": proc.stderr}]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _effects(tmp: Path) -> list[str]:
    path = tmp / "effects"
    return path.read_text().split() if path.exists() else []


def test_workflow_commands_across_processes(tmp_path: Path) -> None:
    (tmp_path / "wfcliapp.py").write_text(APP)
    ref = "wfcliapp:triage"
    (started,) = _cli(tmp_path, "run", ref, "--input", '{"text": "it crashes"}')
    assert started["status"] == "waiting"
    assert started["state"]["kind"] == "bug"
    run_id = started["run_id"]
    (pending,) = _cli(tmp_path, "approvals", ref)
    assert pending["payload"] == {"text": "it crashes"}
    assert pending["run_id"] == run_id

    (done,) = _cli(
        tmp_path, "approve", ref, pending["id"], "--by", "bob", "--edits", '{"text": "fixed"}'
    )
    assert done["status"] == "done"
    assert done["state"]["text"] == "fixed"
    assert done["state"]["decision"]["by"] == "bob"
    assert _effects(tmp_path) == ["classify", "publish"]  # classify did not run again

    history = _cli(tmp_path, "history", ref, run_id)
    assert [(c["kind"], c.get("node")) for c in history] == [
        ("start", None),
        ("step", "classify"),
        ("approval", "review"),
        ("decision", "review"),
        ("step", "publish"),
    ]
    (status,) = _cli(tmp_path, "status", ref, run_id)
    assert status["status"] == "done"

    (forked,) = _cli(
        tmp_path,
        "fork",
        ref,
        run_id,
        "--checkpoint",
        str(history[1]["id"]),
        "--set",
        '{"text": "forked"}',
        "--run",
    )
    assert forked["run_id"] != run_id
    assert forked["status"] == "waiting"
    assert forked["state"]["text"] == "forked"
    assert _effects(tmp_path) == ["classify", "publish"]  # the fork kept classify's result

    (cancelled,) = _cli(tmp_path, "cancel", ref, forked["run_id"])
    assert cancelled["status"] == "cancelled"
    (err,) = _cli(tmp_path, "resume", ref, forked["run_id"], ok=1)
    assert "was cancelled" in err["stderr"]
    (original,) = _cli(tmp_path, "status", ref, run_id)
    assert original["state"]["text"] == "fixed"  # the original is untouched


def test_bad_references_and_input(tmp_path: Path) -> None:
    (tmp_path / "wfcliapp.py").write_text(APP)
    (err,) = _cli(tmp_path, "approvals", "wfcliapp", ok=2)
    assert "module:attribute" in err["stderr"]
    (err,) = _cli(tmp_path, "approvals", "wfcliapp:nothing", ok=2)
    assert "has no attribute 'nothing'" in err["stderr"]
    (err,) = _cli(tmp_path, "approvals", "wfcliapp:HERE", ok=2)
    assert "not an oh.Workflow" in err["stderr"]
    (err,) = _cli(tmp_path, "run", "wfcliapp:triage", "--input", "[1]", ok=2)
    assert "must be a JSON object" in err["stderr"]
    (err,) = _cli(tmp_path, "status", "wfcliapp:triage", "nope", ok=1)
    assert "no run 'nope'" in err["stderr"]
