"""``openheim workflow ...``: the installed script, one process per command, on SQLite.

The workflows come from the project's openheim.toml ([workflows.triage], with
a branch, a map and an approval); the runs live in its configured store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ixhelpers import child_env
from wfflows import TABLE

HERE = Path(__file__).parent
TEXT = "The app crashes. It loses data"


def make_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "wfflows.py", folder / "wfflows.py")
    config = folder / "openheim.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{folder / "wf.db"}"\n{TABLE}', encoding="utf-8")
    return config


def oh(cwd: Path, *args: str, ok: int = 0) -> Any:
    script = Path(sys.executable).parent / "openheim"
    proc = subprocess.run(
        [str(script), "workflow", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == ok, (proc.stdout, proc.stderr)
    if ok:
        return proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_run_approve_history_and_fork_from_the_config(tmp_path: Path) -> None:
    make_project(tmp_path)
    (started,) = oh(tmp_path, "run", "triage", "--input", json.dumps({"text": TEXT}))
    run_id = started["run_id"]
    assert started["status"] == "waiting"
    assert started["state"]["notes"] == ["checked: The app crashes", "checked: It loses data"]
    (pending,) = started["pending"]
    # Options go anywhere, like every openheim command.
    listed = oh(tmp_path, "approvals", "--config", "openheim.toml", "triage")
    assert [a["id"] for a in listed] == [pending["id"]]
    assert listed[0]["payload"] == {"notes": started["state"]["notes"]}

    (done,) = oh(tmp_path, "approve", "triage", pending["id"], "--by", "alice")
    assert done["status"] == "done"
    assert done["state"]["reply"] == "fixed"
    assert done["state"]["decision"]["by"] == "alice"
    assert oh(tmp_path, "approvals", "triage") == []

    history = oh(tmp_path, "history", "triage", run_id)
    steps = [(cp["kind"], cp["node"]) for cp in history]
    assert ("step", "classify") in steps
    assert ("approval", "review") in steps
    assert steps[-1] == ("step", "close")
    classify = next(cp for cp in history if cp["node"] == "classify")
    assert classify["changed"] == {"kind": "bug", "parts": ["The app crashes", "It loses data"]}

    # A fork after classify with edited state takes the other branch; the original is intact.
    (forked,) = oh(
        tmp_path,
        "fork",
        "triage",
        run_id,
        "--checkpoint",
        str(classify["id"]),
        "--set",
        '{"kind": "question"}',
        "--run",
    )
    assert forked["run_id"] != run_id
    assert forked["status"] == "done"
    assert forked["state"]["reply"] == "answered"
    (original,) = oh(tmp_path, "status", "triage", run_id)
    assert original["state"]["reply"] == "fixed"
    assert original["state"]["kind"] == "bug"


def test_tenants_see_only_their_runs_and_cancel_works(tmp_path: Path) -> None:
    make_project(tmp_path)
    (run,) = oh(tmp_path, "run", "triage", "--tenant", "acme", "--input", '{"text": "crash"}')
    assert run["status"] == "waiting"
    assert oh(tmp_path, "approvals", "triage") == []
    assert oh(tmp_path, "approvals", "triage", "--tenant", "globex") == []
    assert [a["run_id"] for a in oh(tmp_path, "approvals", "triage", "--tenant", "acme")] == [
        run["run_id"]
    ]
    err = oh(tmp_path, "status", "triage", run["run_id"], "--tenant", "globex", ok=1)
    assert run["run_id"] in err
    oh(tmp_path, "cancel", "triage", run["run_id"], "--tenant", "acme")
    (status,) = oh(tmp_path, "status", "triage", run["run_id"], "--tenant", "acme")
    assert status["status"] == "cancelled"


def test_unknown_workflows_and_bad_input_are_usage_errors(tmp_path: Path) -> None:
    config = make_project(tmp_path)
    err = oh(tmp_path, "run", "triag", ok=2)
    assert "no workflow 'triag' in openheim.toml (workflows: triage)" in err
    err = oh(tmp_path, "run", "triage", "--input", "[1, 2]", ok=2)
    assert "--input must be a JSON object of state fields" in err
    config.write_text(
        config.read_text().replace('"wfflows:close"', '"wfflows:closed"'), encoding="utf-8"
    )
    err = oh(tmp_path, "run", "triage", ok=2)
    assert "openheim.toml:" in err
    assert "workflows.triage.nodes[5].step: module 'wfflows' has no attribute 'closed'" in err


def test_every_workflow_option_has_help_text() -> None:
    from openheim.cli import _WORKFLOW_COMMANDS, _build_parser

    _build_parser()
    assert set(_WORKFLOW_COMMANDS) == {
        "run", "status", "resume", "cancel", "history", "fork", "approvals", "approve",
        "delete", "prune", "submit", "result", "dead-letters",
    }  # fmt: skip
    missing = [
        f"workflow {name} {'/'.join(a.option_strings) or a.dest}"
        for name, sub in _WORKFLOW_COMMANDS.items()
        for a in sub._actions
        if not a.help
    ]
    assert missing == []
