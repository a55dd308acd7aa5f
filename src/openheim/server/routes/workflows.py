"""Workflow runs over HTTP: submit, status, events (SSE), cancel, resume, fork, approvals.

``routes_for(workflows)`` gives the routes for a name -> ``oh.Workflow``
mapping (each built with a store); every request works in its tenant's
namespace of that store (``Workflow.scoped``), so tenants never see each
other's runs or approvals::

    POST /v1/workflows/{name}/runs                 {"input": {...}, "wait": false}
    GET  /v1/workflows/{name}/runs/{run_id}
    GET  /v1/workflows/{name}/runs/{run_id}/events  SSE; resumable with Last-Event-ID
    POST /v1/workflows/{name}/runs/{run_id}/cancel
    POST /v1/workflows/{name}/runs/{run_id}/resume
    POST /v1/workflows/{name}/runs/{run_id}/fork    {"checkpoint": 3, "state": {...}}
    GET  /v1/workflows/{name}/approvals
    POST /v1/workflows/{name}/approvals/{approval_id}  {"approved": true, "by": ..., "edits": {...}}

Starting, resuming, forking and deciding take the run's lease before they
answer (409 when another server drives the run) and the server drains those
runs on shutdown (``server/_workflows.py``, shared with gRPC).

A run's events are its checkpoints (``Workflow.history``): each SSE event's id
is the checkpoint id, so a client that reconnects with ``Last-Event-ID`` gets
exactly the checkpoints it has not seen, from any server process on the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.errors import (
    RunNotFoundError,
    WorkflowApprovalError,
    WorkflowBusyError,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowError,
    WorkflowStateError,
    WorkflowStepError,
)
from openheim.server._http import error_response, event_stream, json_response, shutting_down
from openheim.server._wf_schemas import WorkflowDecision, WorkflowFork, WorkflowSubmit
from openheim.server._wire import BadRequest, decode_body, shown
from openheim.server._workflows import RunLeased, ServedWorkflows, ShuttingDown
from openheim.workflow import Workflow
from openheim.workflow.events import WorkflowResult, to_builtins

__all__ = ["routes_for"]

# The request bodies (also in /openapi.json).
SubmitBody = WorkflowSubmit
ForkBody = WorkflowFork
DecideBody = WorkflowDecision


_plain = to_builtins


def _result(res: WorkflowResult) -> dict[str, Any]:
    return res.to_builtins()


class _Conflict(Exception):
    """A request that contradicts what the store holds (a 409)."""


def _error(exc: BaseException) -> Response:
    if isinstance(exc, BadRequest):
        return error_response(400, str(exc), param=exc.param)
    if isinstance(exc, ShuttingDown):
        return shutting_down()
    if isinstance(exc, RunNotFoundError):
        return error_response(404, str(exc), code="not_found")
    if isinstance(exc, RunLeased):
        headers = {"Retry-After": str(exc.retry_after)}
        return error_response(409, str(exc), code="conflict", headers=headers)
    if isinstance(
        exc,
        (WorkflowApprovalError, WorkflowCancelled, WorkflowBusyError, WorkflowStepError, _Conflict),
    ):
        return error_response(409, str(exc), code="conflict")
    if isinstance(exc, (WorkflowStateError, WorkflowDefinitionError)):
        return error_response(400, str(exc))
    return error_response(500, f"the workflow failed: {exc}", "server_error")


class _Routes:
    """The handlers, over the served workflows (and the runs this process drives)."""

    def __init__(self, served: ServedWorkflows) -> None:
        self.served = served

    def _wf(self, request: Request) -> Workflow:
        tenant = str(request.scope.get("state", {}).get("tenant", "default"))
        return self.served.get(request.path_params["name"], tenant)

    async def submit(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            body = decode_body(await request.body() or b"{}", SubmitBody)
            if body.run_id is not None:
                if not body.run_id.strip():
                    raise BadRequest("run_id must not be empty (omit it for a new id)", "run_id")
                if await wf.journal.read(body.run_id):
                    raise _Conflict(
                        f"run {shown(body.run_id)} already exists; resume it, or choose "
                        "a new run_id"
                    )
            if body.wait:
                return json_response(_result(await self.served.run(wf, body.input, body.run_id)))
            run_id = await self.served.start(wf, body.input, body.run_id)
            name = quote(request.path_params["name"], safe="")
            headers = {"Location": f"/v1/workflows/{name}/runs/{quote(run_id, safe='')}"}
            return json_response({"run_id": run_id, "status": "running"}, 202, headers)
        except Exception as exc:
            return _error(exc)

    async def status(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            return json_response(_result(await wf.status(request.path_params["run_id"])))
        except Exception as exc:
            return _error(exc)

    async def cancel(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            run_id = request.path_params["run_id"]
            await wf.cancel(run_id)
            return json_response(_result(await wf.status(run_id)))
        except Exception as exc:
            return _error(exc)

    async def delete(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            run_id = request.path_params["run_id"]
            if self.served.driving(wf, run_id):
                raise _Conflict(f"run {run_id!r} is running in this server: cancel it first")
            try:
                await wf.delete(run_id)
            except RunNotFoundError:
                raise
            except WorkflowError as exc:  # running or waiting
                raise _Conflict(str(exc)) from None
            return Response(status_code=204)
        except Exception as exc:
            return _error(exc)

    async def resume(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            run_id = request.path_params["run_id"]
            await self.served.resume(wf, run_id)
            return json_response({"run_id": run_id, "status": "running"}, 202)
        except Exception as exc:
            return _error(exc)

    async def fork(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            body = decode_body(await request.body() or b"{}", ForkBody)
            run_id = request.path_params["run_id"]
            new_id = await self.served.fork(wf, run_id, body.checkpoint, body.state)
            return json_response({"run_id": new_id, "forked_from": run_id}, 202)
        except Exception as exc:
            return _error(exc)

    async def approvals(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            return json_response({"approvals": [_plain(a) for a in await wf.approvals()]})
        except Exception as exc:
            return _error(exc)

    async def decide(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            body = decode_body(await request.body(), DecideBody)
            approval_id = request.path_params["approval_id"]
            run_id = await self.served.decide(
                wf, approval_id, body.approved, by=body.by, reason=body.reason, edits=body.edits
            )
            return json_response({"approval_id": approval_id, "run_id": run_id}, 202)
        except Exception as exc:
            return _error(exc)

    async def events(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            run_id = request.path_params["run_id"]
            await wf.status(run_id)  # 404 before the stream starts
            last = request.headers.get("last-event-id", "0")
            after = int(last) if last.isdigit() else 0
        except Exception as exc:
            return _error(exc)

        async def stream() -> AsyncIterator[bytes]:
            async for ident, kind, data in self.served.follow(
                wf, run_id, after, request.is_disconnected
            ):
                head = f"id: {ident}\n" if kind == "checkpoint" else ""
                yield f"{head}event: {kind}\ndata: ".encode() + data + b"\n\n"

        return event_stream(stream())


def routes_for(workflows: Mapping[str, Workflow] | ServedWorkflows) -> list[Route]:
    """The HTTP routes for ``workflows`` (name -> workflow, or the server's
    :class:`ServedWorkflows`; see the module docstring)."""
    if not isinstance(workflows, ServedWorkflows):
        for name, wf in workflows.items():
            if not wf.journal.durable:
                raise WorkflowError(
                    f"workflow {name!r} has no store; served workflows need one "
                    "(Workflow(..., store=...)) so that any process can answer for their runs"
                )
        workflows = ServedWorkflows(workflows)
    r = _Routes(workflows)
    base = "/v1/workflows/{name}"
    return [
        Route(f"{base}/runs", r.submit, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}", r.status, methods=["GET"]),
        Route(f"{base}/runs/{{run_id}}", r.delete, methods=["DELETE"]),
        Route(f"{base}/runs/{{run_id}}/events", r.events, methods=["GET"]),
        Route(f"{base}/runs/{{run_id}}/cancel", r.cancel, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}/resume", r.resume, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}/fork", r.fork, methods=["POST"]),
        Route(f"{base}/approvals", r.approvals, methods=["GET"]),
        Route(f"{base}/approvals/{{approval_id}}", r.decide, methods=["POST"]),
    ]
