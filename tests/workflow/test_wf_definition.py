"""Building a workflow: state types, reducers, and the errors raised before anything runs."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import msgspec
import pydantic
import pytest

import openheim as oh
from openheim.errors import WorkflowDefinitionError, WorkflowStateError
from openheim.workflow import END, Workflow


class Ticket(msgspec.Struct):
    text: str = ""
    kind: str = ""
    notes: Annotated[list[str], oh.reducer(operator.add)] = msgspec.field(default_factory=list)
    score: int = 0


def noop(state: Any) -> None:
    return None


class Connection:
    """Not data: a workflow state cannot hold one."""


class Bad(msgspec.Struct):
    conn: Connection | None = None


class BadModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    conn: Connection | None = None


def test_oh_exports_workflow_lazily() -> None:
    assert oh.Workflow is Workflow
    wf = oh.Workflow("t", state=Ticket)
    assert wf.spec.reducers == {"notes": operator.add}


def test_state_must_be_a_struct_or_pydantic_model() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"msgspec\.Struct or a pydantic model"):
        Workflow("t", state=dict)


def test_unserializable_state_fails_at_definition() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"Bad\.conn has type .* cannot be"):
        Workflow("t", state=Bad)
    with pytest.raises(WorkflowDefinitionError, match="BadModel cannot be serialized"):
        Workflow("t", state=BadModel)


def test_reducers_argument_names_a_field() -> None:
    with pytest.raises(WorkflowDefinitionError, match="'nope', which is not a field of Ticket"):
        Workflow("t", state=Ticket, reducers={"nope": operator.add})
    wf = Workflow("t", state=Ticket, reducers={"score": operator.add})
    assert set(wf.spec.reducers) == {"notes", "score"}


async def test_unknown_nodes_in_edges_are_listed_together() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="a")
    wf.edge("a", "missing")
    wf.edge("ghost", "a")
    with pytest.raises(WorkflowDefinitionError) as err:
        await wf.run()
    msg = str(err.value)
    assert "edge 'a' -> 'missing': unknown node 'missing'" in msg
    assert "unknown node 'ghost'" in msg


def test_unreachable_node() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="a")
    wf.step(noop, name="island")
    with pytest.raises(WorkflowDefinitionError, match="node 'island' can never run"):
        wf.validate()
    wf.edge("a", "island")
    wf.validate()


def test_branch_targets_make_nodes_reachable_and_must_exist() -> None:
    wf = Workflow("t", state=Ticket)
    wf.branch("route", lambda s: "x", targets=["x", "nowhere"])
    wf.step(noop, name="x")
    with pytest.raises(WorkflowDefinitionError, match="target 'nowhere' -> unknown node"):
        wf.validate()


def test_parallel_writes_without_reducer_fail_before_running() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="start")
    wf.step(noop, name="left", writes=["kind"])
    wf.step(noop, name="right", writes=["kind", "notes"])
    wf.edge("start", "left")
    wf.edge("start", "right")
    with pytest.raises(WorkflowDefinitionError) as err:
        wf.validate()
    assert "'left' and 'right' can run in parallel" in str(err.value)
    assert "Ticket.kind, which has no reducer" in str(err.value)
    assert "notes" not in str(err.value)  # it has a reducer


class Out(TypedDict):
    score: int


def test_parallel_writes_found_deeper_in_the_branches() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="start")
    wf.step(noop, name="l1")
    wf.step(noop, name="r1")

    @wf.step
    def l2(s: Ticket) -> Out:
        return {"score": 1}

    @wf.step
    def r2(s: Ticket) -> Out:
        return {"score": 2}

    wf.edge("start", "l1")
    wf.edge("start", "r1")
    wf.edge("l1", "l2")
    wf.edge("r1", "r2")
    with pytest.raises(WorkflowDefinitionError, match="'l2' and 'r2' can run in parallel"):
        wf.validate()


def test_writes_must_be_fields_and_names_unique() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="a", writes=["colour"])
    with pytest.raises(WorkflowDefinitionError, match="writes 'colour', which is not a field"):
        wf.validate()
    with pytest.raises(WorkflowDefinitionError, match="already has a node named 'a'"):
        wf.step(noop, name="a")
    with pytest.raises(WorkflowDefinitionError, match="non-empty string without ':'"):
        wf.step(noop, name="a:b")


def test_empty_workflow_and_bad_options() -> None:
    with pytest.raises(WorkflowDefinitionError, match="has no nodes"):
        Workflow("t", state=Ticket).validate()
    with pytest.raises(WorkflowDefinitionError, match="needs escalate_to"):
        Workflow("t", state=Ticket).approval("a", on_deadline="escalate")
    with pytest.raises(WorkflowDefinitionError, match=r"needs an oh\.Agent"):
        Workflow("t", state=Ticket).agent("a", object())
    with pytest.raises(WorkflowDefinitionError, match="over='nope' is not a field"):
        Workflow("t", state=Ticket).map("m", "nope", noop, output="score")
    with pytest.raises(WorkflowDefinitionError, match="attempts must be >= 1"):
        oh.Retry(attempts=0)


def test_conditional_edge_and_plain_edges_do_not_mix() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="a")
    wf.step(noop, name="b")
    wf.edge("a", "b")
    wf.edge("a", lambda s: "b", targets=["b"])
    with pytest.raises(WorkflowDefinitionError, match="both a conditional edge and plain edges"):
        wf.validate()


async def test_bad_updates_are_refused_with_the_field_named() -> None:
    wf = Workflow("t", state=Ticket)

    @wf.step
    def typo(s: Ticket) -> dict[str, Any]:
        return {"scor": 3}

    with pytest.raises(WorkflowStateError, match="'scor', which is not a field of Ticket"):
        await wf.run()

    wf2 = Workflow("t2", state=Ticket)

    @wf2.step
    def wrong_type(s: Ticket) -> dict[str, Any]:
        return {"score": "high"}

    with pytest.raises(WorkflowStateError, match=r"Ticket\.score to 'high'"):
        await wf2.run()


async def test_input_is_validated() -> None:
    wf = Workflow("t", state=Ticket)
    wf.step(noop, name="a")
    with pytest.raises(WorkflowStateError, match=r"unknown fields \['txt'\]"):
        await wf.run({"txt": "x"})
    with pytest.raises(WorkflowStateError, match="invalid input"):
        await wf.run({"score": "x"})


async def test_branch_returning_an_undeclared_target_fails_the_run() -> None:
    wf = Workflow("t", state=Ticket)
    wf.branch("route", lambda s: "elsewhere", targets={"ok": END})
    with pytest.raises(WorkflowStateError, match="returned 'elsewhere', which is not one of"):
        await wf.run()


async def test_pydantic_state() -> None:
    class Doc(pydantic.BaseModel):
        title: str = ""
        tags: Annotated[list[str], oh.reducer(operator.add)] = []

    wf = Workflow("p", state=Doc)

    @wf.step
    def a(d: Doc) -> dict[str, Any]:
        return {"title": d.title.upper(), "tags": ["a"]}

    @wf.step
    async def b(d: Doc) -> dict[str, Any]:
        return {"tags": ["b"]}

    wf.edge("a", "b")
    res = await wf.run({"title": "hi"})
    assert res.state == Doc(title="HI", tags=["a", "b"])
    with pytest.raises(WorkflowStateError):
        await wf.run({"title": 3.5j})
