"""``/openapi.json``, generated from the wire structs (``server/_schemas.py``).

:data:`OPERATIONS` says which struct each route takes and answers with; the
schemas themselves come from ``msgspec.json.schema_components``, so the
document cannot drift from what the routes decode and encode.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, NamedTuple

import msgspec

from openheim._version import __version__
from openheim.server import _schemas as s
from openheim.server import _wf_schemas as w

_REF = "#/components/schemas/{name}"
# Server-sent events: each event's data is JSON (an agent event or a completion chunk) or
# the literal [DONE], so their schema is left open.
SSE = "text/event-stream"
TEXT = "text/plain"


class Param(NamedTuple):
    name: str
    where: str  # "path", "query" or "header"
    description: str


class Operation(NamedTuple):
    method: str
    path: str
    summary: str
    # status -> (description, {media type: struct type, or None for an open schema})
    responses: dict[int, tuple[str, dict[str, Any]]]
    body: type[Any] | None = None
    params: tuple[Param, ...] = ()
    public: bool = False


def _json(description: str, kind: Any = s.ErrorBody) -> tuple[str, dict[str, Any]]:
    return description, {"application/json": kind}


_NOT_FOUND = {404: _json("not found, or owned by another tenant")}
_BUSY = {429: _json("too many concurrent runs for the tenant (see Retry-After)")}
_BAD = {400: _json("invalid request")}
_DOWN = {503: _json("shutting down")}
_RUN_ID = Param("run_id", "path", "run id")
_SESSION_ID = Param("session_id", "path", "session id")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get", "/", "Where the API is described", {200: _json("links", s.Index)}, public=True
    ),
    Operation(
        "get",
        "/docs",
        "The routes, as a web page linking this document",
        {200: ("an HTML page", {"text/html": str})},
        public=True,
    ),
    Operation("get", "/healthz", "Liveness", {200: _json("alive", s.Status)}, public=True),
    Operation(
        "get",
        "/readyz",
        "Readiness",
        {200: _json("ready", s.Status), 503: _json("not ready or shutting down", s.Status)},
        public=True,
    ),
    Operation(
        "get", "/metrics", "Prometheus metrics", {200: ("metrics", {TEXT: str})}, public=True
    ),
    Operation(
        "get",
        "/openapi.json",
        "This document",
        {200: _json("OpenAPI 3.1", dict[str, Any])},
        public=True,
    ),
    Operation(
        "get",
        "/v1/models",
        "Configured agents (and listed provider models), as OpenAI models",
        {200: _json("models", s.ModelList)},
    ),
    Operation(
        "post",
        "/v1/chat/completions",
        "OpenAI-compatible chat completion",
        {
            200: (
                "the completion (JSON), or SSE chunks ending with `data: [DONE]` when stream=true",
                {"application/json": s.ChatCompletion, SSE: None},
            ),
            **_BAD,
            **_NOT_FOUND,
            **_BUSY,
            422: _json("the agent could not finish (max_iterations, invalid output, ...)"),
            500: _json("a fault of this server (logged with its traceback)"),
            502: _json("the upstream model failed"),
            **_DOWN,
        },
        body=s.ChatCompletionRequest,
    ),
    Operation(
        "post",
        "/v1/agents/{name}/runs",
        "Run an agent",
        {
            200: (
                "the finished run (JSON), or its events as SSE when stream=true",
                {"application/json": s.Run, SSE: None},
            ),
            **_BAD,
            **_NOT_FOUND,
            **_BUSY,
            **_DOWN,
        },
        body=s.RunRequest,
        params=(Param("name", "path", "agent name"),),
    ),
    Operation(
        "get",
        "/v1/runs/{run_id}",
        "A run's status",
        {200: _json("the run", s.Run), **_NOT_FOUND},
        params=(_RUN_ID,),
    ),
    Operation(
        "get",
        "/v1/runs/{run_id}/events",
        "A run's events as SSE (from the store: also after a restart), after Last-Event-ID",
        {
            200: ("agent events", {SSE: None}),
            400: _json("Last-Event-ID / after is not an event id of the run"),
            **_NOT_FOUND,
        },
        params=(
            _RUN_ID,
            Param("Last-Event-ID", "header", "the id of the last event received"),
            Param("after", "query", "the same as Last-Event-ID, for clients that cannot send it"),
        ),
    ),
    Operation(
        "get",
        "/v1/runs/{run_id}/approvals",
        "The tool calls a paused run waits for",
        {200: _json("the run's pending calls", s.Approvals), **_NOT_FOUND},
        params=(_RUN_ID,),
    ),
    Operation(
        "post",
        "/v1/runs/{run_id}/approvals",
        "Approve or reject every pending call; the run goes on",
        {
            200: (
                "the continued run (JSON), or its events as SSE when stream=true",
                {"application/json": s.Run, SSE: None},
            ),
            400: _json("invalid decisions (unknown, missing or repeated call ids)"),
            **_NOT_FOUND,
            409: _json("the run is not waiting for approvals, or is being continued"),
            **_BUSY,
            **_DOWN,
        },
        body=s.ApprovalsRequest,
        params=(_RUN_ID,),
    ),
    Operation(
        "get",
        "/v1/sessions",
        "The tenant's sessions",
        {200: _json("session ids", s.SessionList)},
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}",
        "A session's messages and usage",
        {200: _json("the session", s.Session), 400: _json("invalid session id"), **_NOT_FOUND},
        params=(_SESSION_ID,),
    ),
    Operation(
        "delete",
        "/v1/sessions/{session_id}",
        "Delete a session",
        {204: ("deleted", {}), 400: _json("invalid session id"), **_NOT_FOUND},
        params=(_SESSION_ID,),
    ),
)

# ---- workflows (routes/workflows.py): each tenant sees only its own runs and approvals

_WF = "/v1/workflows/{name}"
_WF_NAME = Param("name", "path", "workflow name ([workflows.NAME] of the config)")
_WF_RUN = (_WF_NAME, _RUN_ID)
_WF_MISSING = {404: _json("no such workflow, or no such run of the tenant")}
_WF_CONFLICT = {
    409: _json(
        "the run exists already or was cancelled, the approval is already decided, or "
        "another server drives the run right now (it holds the run's lease)"
    ),
    **_DOWN,
}
_WF_FAILED = {500: _json("the workflow's code failed (recorded in the run)")}

OPERATIONS += (
    Operation(
        "post",
        f"{_WF}/runs",
        "Start a workflow run (in the background, or until it ends or waits with wait=true)",
        {
            200: _json("the run, once it ended or waits for approvals (wait=true)", w.WorkflowRun),
            202: _json("started; follow it at Location", w.WorkflowStarted),
            **_BAD,
            **_WF_MISSING,
            **_WF_CONFLICT,
            **_WF_FAILED,
        },
        body=w.WorkflowSubmit,
        params=(_WF_NAME,),
    ),
    Operation(
        "get",
        f"{_WF}/runs/{{run_id}}",
        "A workflow run's status, state and pending approvals",
        {200: _json("the run", w.WorkflowRun), **_WF_MISSING, **_WF_FAILED},
        params=_WF_RUN,
    ),
    Operation(
        "get",
        f"{_WF}/runs/{{run_id}}/events",
        "A workflow run's checkpoints as SSE (id: the checkpoint id), then its final status",
        {200: ("checkpoints, then the run", {SSE: None}), **_WF_MISSING, **_WF_FAILED},
        params=(
            *_WF_RUN,
            Param("Last-Event-ID", "header", "the last checkpoint id received"),
        ),
    ),
    Operation(
        "post",
        f"{_WF}/runs/{{run_id}}/cancel",
        "Cancel a workflow run",
        {200: _json("the cancelled run", w.WorkflowRun), **_WF_MISSING, **_WF_FAILED},
        params=_WF_RUN,
    ),
    Operation(
        "delete",
        f"{_WF}/runs/{{run_id}}",
        "Delete a finished workflow run (done, failed or cancelled): its checkpoints, "
        "history, sub-workflow runs and approvals",
        {
            204: ("deleted", {}),
            **_WF_MISSING,
            409: _json("the run is still running or waiting: cancel it first"),
        },
        params=_WF_RUN,
    ),
    Operation(
        "post",
        f"{_WF}/runs/{{run_id}}/resume",
        "Continue a workflow run from its last checkpoint (in the background)",
        {
            202: _json("resuming", w.WorkflowStarted),
            **_WF_MISSING,
            **_WF_CONFLICT,
            **_WF_FAILED,
        },
        params=_WF_RUN,
    ),
    Operation(
        "post",
        f"{_WF}/runs/{{run_id}}/fork",
        "Start a new run from a checkpoint of a run, with edited state (the original is kept)",
        {
            202: _json("the new run, running", w.WorkflowForked),
            **_BAD,
            **_WF_MISSING,
            **_WF_CONFLICT,
            **_WF_FAILED,
        },
        body=w.WorkflowFork,
        params=_WF_RUN,
    ),
    Operation(
        "get",
        f"{_WF}/approvals",
        "The tenant's pending approvals of a workflow",
        {200: _json("pending approvals", w.WorkflowApprovals), **_WF_MISSING, **_WF_FAILED},
        params=(_WF_NAME,),
    ),
    Operation(
        "post",
        f"{_WF}/approvals/{{approval_id}}",
        "Decide an approval; its run goes on (in the background) without re-running anything",
        {
            202: _json("decided; the run goes on", w.WorkflowDecided),
            **_BAD,
            **_WF_MISSING,
            **_WF_CONFLICT,
            **_WF_FAILED,
        },
        body=w.WorkflowDecision,
        params=(_WF_NAME, Param("approval_id", "path", "approval id")),
    ),
)

_AUTH_ERRORS = {
    401: _json("missing or unknown API key"),
    413: _json("request body too large"),
}


def _types() -> list[Any]:
    found: list[Any] = [s.ErrorBody]
    for op in OPERATIONS:
        if op.body is not None:
            found.append(op.body)
        for _desc, content in op.responses.values():
            found.extend(t for t in content.values() if t is not None)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=1)
def _components() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    types = _types()
    refs, schemas = msgspec.json.schema_components(types, ref_template=_REF)
    return dict(zip(types, refs, strict=True)), schemas


def _parameter(p: Param, names: tuple[str, ...]) -> dict[str, Any]:
    # `names`: the agents, or the workflows on /v1/workflows/ paths (see _operation).
    schema: dict[str, Any] = {"type": "string"}
    if p.name == "name" and names:
        schema["enum"] = list(names)
    return {
        "name": p.name,
        "in": p.where,
        "required": p.where == "path",
        "schema": schema,
        "description": p.description,
    }


def _operation(
    op: Operation,
    refs: dict[Any, Any],
    agents: tuple[str, ...],
    workflows: tuple[str, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    all_responses = op.responses if op.public else {**_AUTH_ERRORS, **op.responses}
    for status, (description, content) in sorted(all_responses.items()):
        entry: dict[str, Any] = {"description": description}
        if content:
            entry["content"] = {
                media: {"schema": refs[kind] if kind is not None else {}}
                for media, kind in content.items()
            }
        responses[str(status)] = entry
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if op.params:
        names = workflows if op.path.startswith("/v1/workflows/") else agents
        out["parameters"] = [_parameter(p, names) for p in op.params]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[op.body]}},
        }
    if op.public:
        out["security"] = []
    return out


@functools.lru_cache(maxsize=4)
def openapi_document(
    agents: tuple[str, ...] = (), models: tuple[str, ...] = (), workflows: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The document; the configured agent names (and ``models``, the listed
    ``<provider>:<model>`` names) become the enums of ``model`` and ``{name}``
    (the workflow names on the workflow routes)."""
    refs, schemas = _components()
    schemas = copy.deepcopy(schemas)
    if agents or models:
        props = schemas["ChatCompletionRequest"]["properties"]
        props["model"]["enum"] = [*agents, *models]
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs, agents, workflows)
    return {
        "openapi": "3.1.0",
        "info": {"title": "openheim", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
