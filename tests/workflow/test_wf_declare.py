"""Workflows declared as ``[workflows.NAME]`` tables (what openheim.toml holds)."""

from __future__ import annotations

import sys

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from openheim.errors import WorkflowDefinitionError
from openheim.workflow import from_config

TOML = """
[workflows.triage]
state = "wfdeclared:Ticket"
edges = [["classify", "route"], ["fix", "lengths"], ["lengths", "review"]]

[[workflows.triage.nodes]]
name = "classify"
step = "wfdeclared:classify"

[[workflows.triage.nodes]]
name = "route"
branch = "wfdeclared:route"
targets = ["fix", "reply"]

[[workflows.triage.nodes]]
name = "fix"
step = "wfdeclared:fix"

[[workflows.triage.nodes]]
name = "reply"
step = "wfdeclared:reply"

[[workflows.triage.nodes]]
name = "lengths"
map = { over = "items", do = "builtins:len", output = "lengths", reduce = "wfdeclared:total" }

[[workflows.triage.nodes]]
name = "review"
approval = { payload = "wfdeclared:summary", output = "decision" }
"""


async def test_a_declared_workflow_runs() -> None:
    table = tomllib.loads(TOML)["workflows"]["triage"]
    wf = from_config("triage", table)
    res = await wf.run({"text": "it crashes often"})
    assert res.status == "waiting"
    assert res.state.kind == "bug"
    assert res.state.reply == "fixed"
    assert res.state.lengths == len("it") + len("crashes") + len("often")
    assert res.pending[0].payload == {"text": "it crashes often"}
    done = await wf.approve(res.pending[0].id, True, by="ops")
    assert done is not None
    assert done.state.decision is not None
    assert done.state.decision.by == "ops"
    quiet = await wf.run({"text": "why"})
    assert quiet.status == "done"
    assert quiet.state.reply == "answered"


def test_a_workflow_built_in_python() -> None:
    wf = from_config("built", {"workflow": "wfdeclared:built"})
    assert list(wf.nodes) == ["classify"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"workflow": "wfdeclared:Ticket"}, "is a StructMeta, not an oh.Workflow"),
        ({"state": "wfdeclared:Nope"}, "has no attribute 'Nope'"),
        ({"state": "no_such_module:X"}, "cannot import 'no_such_module'"),
        ({"state": "wfdeclared"}, "not of the form 'module:attribute'"),
        ({"nodes": []}, "give either workflow"),
        ({"state": "wfdeclared:Ticket", "colour": 1}, r"unknown keys \['colour'\]"),
        (
            {"state": "wfdeclared:Ticket", "nodes": [{"name": "a"}]},
            r"nodes\[0\] \('a'\): give exactly one of",
        ),
        (
            {
                "state": "wfdeclared:Ticket",
                "nodes": [{"name": "a", "step": "wfdeclared:fix"}],
                "edges": [["a"]],
            },
            r"edges\[0\]: an edge is \[source, target\]",
        ),
        (
            {
                "state": "wfdeclared:Ticket",
                "nodes": [
                    {"name": "a", "step": "wfdeclared:fix"},
                    {"name": "b", "step": "wfdeclared:fix"},
                ],
            },
            "node 'b' can never run",
        ),
    ],
)
def test_declaration_errors_name_the_table(table: dict[str, object], message: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=message) as err:
        from_config("t", table)
    assert "[workflows.t" in str(err.value) or "workflow 't'" in str(err.value)


def test_an_importer_resolves_references() -> None:
    import wfdeclared

    seen: list[str] = []

    def importer(ref: str) -> object:
        seen.append(ref)
        if ref == "missing:thing":
            raise LookupError("no such thing beside the config file")
        return getattr(wfdeclared, ref.partition(":")[2])

    wf = from_config(
        "t",
        {"state": "cfg:Ticket", "nodes": [{"name": "a", "step": "cfg:fix"}]},
        importer=importer,
    )
    assert seen == ["cfg:Ticket", "cfg:fix"]
    assert list(wf.nodes) == ["a"]
    with pytest.raises(WorkflowDefinitionError, match=r"state: no such thing beside"):
        from_config("t", {"state": "missing:thing"}, importer=importer)
