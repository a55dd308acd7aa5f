"""[workflows.NAME] in openheim.toml: built on the configured store, errors at file:line:key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from wfflows import TABLE

from openheim.config import load_config
from openheim.errors import ConfigError

HERE = Path(__file__).parent


def project(folder: Path, text: str, store: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "wfflows.py", folder / "wfflows.py")
    head = f'[store]\nurl = "{store}"\n' if store is not None else ""
    path = folder / "openheim.toml"
    path.write_text(head + text, encoding="utf-8")
    return path


def error_of(path: Path, build: str | None = None) -> str:
    def load() -> None:
        config = load_config(path)
        if build is not None:
            config.build_workflow(build)

    with pytest.raises(ConfigError) as err:
        load()
    return str(err.value).replace(str(path), "F")


async def test_a_configured_workflow_keeps_its_runs_in_the_configured_store(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'wf.db'}"
    path = project(tmp_path / "p", TABLE, store)
    config = load_config(path)
    assert config.workflow_names() == ["triage"]
    wf = config.build_workflow("triage")
    res = await wf.run({"text": "The app crashes. It loses data"})
    assert res.status == "waiting"
    assert res.state.notes == ["checked: The app crashes", "checked: It loses data"]
    approval = res.pending[0].id
    await wf.aclose()
    # Another load of the file (another process, say) finds the run in the same store.
    again = load_config(path).build_workflows()["triage"]
    try:
        assert [a.id for a in await again.approvals()] == [approval]
        done = await again.approve(approval, True, by="alice")
        assert done is not None
        assert done.status == "done"
        assert done.state.reply == "fixed"
        assert done.state.decision.by == "alice"
    finally:
        await again.aclose()
    assert (tmp_path / "wf.db").is_file()


async def test_a_table_can_name_a_workflow_built_in_python(tmp_path: Path) -> None:
    path = project(tmp_path, '[workflows.b]\nworkflow = "wfflows:built"\n', "memory://")
    wf = load_config(path).build_workflow("b")
    assert wf.name == "built"
    assert (await wf.run({"text": "hi"})).state.reply == "answered"


def test_a_missing_function_names_the_line_and_key(tmp_path: Path) -> None:
    text = TABLE.replace('step = "wfflows:answer"', 'step = "wfflows:no_such_step"')
    line = text.splitlines().index('step = "wfflows:no_such_step"') + 1
    msg = error_of(project(tmp_path, text), "triage")
    assert msg == (
        f"F:{line}: workflows.triage.nodes[3].step: "
        "module 'wfflows' has no attribute 'no_such_step'"
    )


def test_unknown_keys_and_shapes_fail_when_the_file_loads(tmp_path: Path) -> None:
    msg = error_of(project(tmp_path, '[workflows.t]\nstate = "wfflows:Ticket"\nstepz = 1\n'))
    assert msg.startswith("F:3: workflows.t.stepz: unknown key 'stepz'; the keys are ")
    msg = error_of(project(tmp_path, "[workflows.t]\nmax_steps = 3\n"))
    assert msg.startswith("F:1: workflows.t: give either workflow = 'module:wf' or state")
    msg = error_of(project(tmp_path, 'workflows = "triage"\n'))
    assert msg == "F:1: workflows: workflows must be a table ([workflows.NAME])"


def test_a_graph_error_names_the_workflow(tmp_path: Path) -> None:
    text = TABLE.replace('["review", "close"]', '["review", "closee"]')
    msg = error_of(project(tmp_path, text), "triage")
    assert msg.startswith("F:2: workflows.triage: ")
    assert "closee" in msg


def test_a_module_shadowing_an_installed_one_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path, '[workflows.t]\nstate = "csv:Ticket"\n')
    shutil.copy(HERE / "wfflows.py", tmp_path / "csv.py")
    msg = error_of(path, "t")
    assert msg.startswith("F:2: workflows.t.state: ")
    assert "has the name of the installed module 'csv'" in msg


def test_an_unknown_workflow_lists_the_configured_ones(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, TABLE))
    with pytest.raises(ConfigError, match=r"no workflow 'triag' in .* \(workflows: triage\)"):
        config.build_workflow("triag")
