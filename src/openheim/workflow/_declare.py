"""Workflows declared as data (an ``openheim.toml`` ``[workflows.NAME]`` table).

Either point at a workflow built in Python::

    [workflows.triage]
    workflow = "myapp.flows:triage"

or declare it, every callable as ``module:function``::

    [workflows.triage]
    state = "myapp.models:Ticket"
    store = "sqlite:///state.db"          # optional; also max_steps, timeout, start
    edges = [["classify", "route"], ["fix", "review"]]

    [[workflows.triage.nodes]]
    name = "classify"
    step = "myapp.steps:classify"

    [[workflows.triage.nodes]]
    name = "route"
    branch = "myapp.steps:route"
    targets = ["fix", "reply"]

    [[workflows.triage.nodes]]
    name = "review"
    approval = { payload = "myapp.steps:summary", output = "decision", deadline = 3600 }

A node table has one kind key: ``step``, ``branch``, ``map`` (a table with
``over``, ``do``, ``output`` and optional ``reduce``), ``approval`` (a table,
possibly empty), ``agent`` (``"module:agent_object"``, with ``prompt`` and
``output``), ``tool`` (with ``args`` and ``output``) or ``workflow`` (a
sub-workflow object, with ``input`` and ``output``). :func:`from_config` is
what the configuration loader calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from openheim.errors import WorkflowDefinitionError
from openheim.workflow._graph import Graph
from openheim.workflow._records import Budget

__all__ = ["from_config"]


_KINDS = ("step", "branch", "map", "approval", "agent", "tool", "workflow")
TABLE_KEYS = _TOP = {
    "workflow",
    "state",
    "store",
    "namespace",
    "max_steps",
    "timeout",
    "start",
    "edges",
    "nodes",
    "budget",
}


Importer = Callable[[str], Any]


def _resolve(ref: Any, where: str, importer: Importer | None = None) -> Any:
    """The object ``"package.module:attr"`` names (or ``ref`` itself if not a string)."""
    if not isinstance(ref, str):
        return ref
    if importer is not None:
        try:
            return importer(ref)
        except WorkflowDefinitionError:
            raise
        except Exception as exc:
            raise WorkflowDefinitionError(f"{where}: {exc}") from None
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise WorkflowDefinitionError(f"{where}: {ref!r} is not of the form 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowDefinitionError(f"{where}: cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkflowDefinitionError(
                f"{where}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def from_config(
    name: str, table: Mapping[str, Any], *, store: Any = None, importer: Importer | None = None
) -> Any:
    """The :class:`Workflow` a ``[workflows.NAME]`` table describes (validated).

    ``store`` is used when the table gives none (the configuration's default
    store); ``importer`` turns a ``module:attr`` string into the object (the
    configuration's own, which also looks beside the file); by default
    ``importlib``.
    """
    from openheim.workflow._workflow import Workflow

    def resolve(ref: Any, where: str) -> Any:
        return _resolve(ref, where, importer)

    where = f"[workflows.{name}]"
    unknown = set(table) - _TOP
    if unknown:
        raise WorkflowDefinitionError(
            f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(_TOP))})"
        )
    if "workflow" in table:
        wf = resolve(table["workflow"], f"{where} workflow")
        if not isinstance(wf, Workflow):
            raise WorkflowDefinitionError(
                f"{where} workflow: {table['workflow']!r} is a {type(wf).__name__}, "
                "not an oh.Workflow"
            )
        wf.validate()
        return wf
    if "state" not in table:
        raise WorkflowDefinitionError(
            f"{where}: give either workflow = 'module:wf' or state = 'module:StateClass' with nodes"
        )
    budget = table.get("budget")
    wf = Workflow(
        name,
        state=resolve(table["state"], f"{where} state"),
        store=table.get("store", store),
        namespace=table.get("namespace"),
        max_steps=int(table.get("max_steps", 1000)),
        timeout=table.get("timeout"),
        budget=Budget(**budget) if isinstance(budget, Mapping) else None,
    )
    nodes = table.get("nodes") or []
    for i, node in enumerate(nodes):
        _add_node(wf, node, f"{where} nodes[{i}]", resolve)
    for j, edge in enumerate(table.get("edges") or []):
        if not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise WorkflowDefinitionError(
                f"{where} edges[{j}]: an edge is [source, target] (or [[a, b], target] to join)"
            )
        source, target = edge
        wf.edge(tuple(source) if isinstance(source, list) else source, target)
    if "start" in table:
        wf.start = table["start"]
    wf.validate()
    return wf


def _add_node(wf: Graph, node: Any, where: str, resolve: Callable[[Any, str], Any]) -> None:
    if not isinstance(node, Mapping) or not isinstance(node.get("name"), str):
        raise WorkflowDefinitionError(f"{where}: a node is a table with a name")
    name = node["name"]
    kinds = [k for k in _KINDS if k in node]
    if len(kinds) != 1:
        raise WorkflowDefinitionError(
            f"{where} ({name!r}): give exactly one of {', '.join(_KINDS)}, got {kinds or 'none'}"
        )
    kind = kinds[0]
    spec = node[kind]

    def ref(key: str, value: Any = None) -> Any:
        v = node.get(key, value) if value is None else value
        return resolve(v, f"{where} {key}") if v is not None else None

    if kind == "step":
        wf.step(
            resolve(spec, f"{where} step"),
            name=name,
            timeout=node.get("timeout"),
            writes=node.get("writes"),
            thread=bool(node.get("thread", False)),
        )
    elif kind == "branch":
        wf.branch(name, resolve(spec, f"{where} branch"), node.get("targets"))
    elif kind == "map":
        if not isinstance(spec, Mapping) or "do" not in spec or "output" not in spec:
            raise WorkflowDefinitionError(f"{where} map: a table with over, do and output")
        over = spec.get("over")
        wf.map(
            name,
            over if isinstance(over, str) and ":" not in over else ref("over", over),
            ref("do", spec["do"]),
            output=spec["output"],
            reduce=ref("reduce", spec.get("reduce")),
        )
    elif kind == "approval":
        opts = dict(spec) if isinstance(spec, Mapping) else {}
        if "payload" in opts:
            opts["payload"] = resolve(opts["payload"], f"{where} payload")
        wf.approval(name, **opts)
    elif kind == "agent":
        wf.agent(
            name, resolve(spec, f"{where} agent"), prompt=ref("prompt"), output=node.get("output")
        )
    elif kind == "tool":
        wf.tool(name, resolve(spec, f"{where} tool"), args=ref("args"), output=node.get("output"))
    else:
        wf.subworkflow(
            name, resolve(spec, f"{where} workflow"), input=ref("input"), output=ref("output")
        )
