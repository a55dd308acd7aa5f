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

A run's events are its checkpoints (``Workflow.history``): each SSE event's id
is the checkpoint id, so a client that reconnects with ``Last-Event-ID`` gets
exactly the checkpoints it has not seen, from any server process on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.errors import (
    OpenheimError,
    RunNotFoundError,
    WorkflowApprovalError,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowError,
    WorkflowStateError,
)
from openheim.server._http import error_response, event_stream, json_response
from openheim.server._wf_schemas import WorkflowDecision, WorkflowFork, WorkflowSubmit
from openheim.server._wire import BadRequest, decode_body, shown
from openheim.workflow import Workflow
from openheim.workflow.events import WorkflowResult, to_builtins

__all__ = ["routes_for"]

POLL = 0.05  # seconds between looks at a running run's checkpoints


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
    if isinstance(exc, RunNotFoundError):
        return error_response(404, str(exc), code="not_found")
    if isinstance(exc, (WorkflowApprovalError, WorkflowCancelled, _Conflict)):
        return error_response(409, str(exc), code="conflict")
    if isinstance(exc, (WorkflowStateError, WorkflowDefinitionError)):
        return error_response(400, str(exc))
    return error_response(500, f"the workflow failed: {exc}", "server_error")


class _Routes:
    """The handlers, over one mapping of workflows (and the runs this process drives)."""

    def __init__(self, workflows: Mapping[str, Workflow]) -> None:
        for name, wf in workflows.items():
            if not wf.journal.durable:
                raise WorkflowError(
                    f"workflow {name!r} has no store; served workflows need one "
                    "(Workflow(..., store=...)) so that any process can answer for their runs"
                )
        self.workflows = dict(workflows)
        self._scoped: dict[tuple[str, str], Workflow] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _wf(self, request: Request) -> Workflow:
        name = request.path_params["name"]
        base = self.workflows.get(name)
        if base is None:
            known = ", ".join(self.workflows) or "none"
            raise RunNotFoundError(f"no workflow {shown(name)} (workflows: {known})")
        tenant = str(request.scope.get("state", {}).get("tenant", "default"))
        key = (name, tenant)
        wf = self._scoped.get(key)
        if wf is None:
            wf = self._scoped[key] = base.scoped(f"tenant/{tenant}")
        return wf

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any) -> None:
        with contextlib.suppress(OpenheimError):  # recorded in the run; status shows it
            await coro

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
                try:
                    return json_response(_result(await wf.run(body.input, run_id=body.run_id)))
                except WorkflowError as exc:
                    run_id = getattr(exc, "run_id", None)
                    if not run_id:
                        raise
                    return json_response(_result(await wf.status(run_id)))
            run_id = await wf.launch(body.input, run_id=body.run_id)
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

    async def resume(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            run_id = request.path_params["run_id"]
            status = await wf.status(run_id)
            if status.status == "cancelled":
                raise WorkflowCancelled(f"run {run_id!r} was cancelled; fork it to run it again")
            self._background(wf.resume(run_id))
            return json_response({"run_id": run_id, "status": "running"}, 202)
        except Exception as exc:
            return _error(exc)

    async def fork(self, request: Request) -> Response:
        try:
            wf = self._wf(request)
            body = decode_body(await request.body() or b"{}", ForkBody)
            new_id = await wf.fork(request.path_params["run_id"], body.checkpoint, body.state)
            self._background(wf.resume(new_id))
            return json_response(
                {"run_id": new_id, "forked_from": request.path_params["run_id"]}, 202
            )
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
            got = await wf.journal.get_approval(approval_id)
            # The tenant's workflows share one journal: another workflow's approval is not ours.
            if got is None or got[0].workflow not in wf.definitions():
                raise RunNotFoundError(f"no approval {shown(approval_id)}")
            await wf.approve(
                approval_id,
                body.approved,
                by=body.by,
                reason=body.reason,
                edits=body.edits,
                resume=False,
            )
            self._background(wf.resume(got[0].root))
            return json_response({"approval_id": approval_id, "run_id": got[0].root}, 202)
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
            seen = after
            while True:
                for cp in await wf.history(run_id):
                    if cp.id > seen:
                        seen = cp.id
                        data = msgspec.json.encode(_plain(cp))
                        yield (
                            f"id: {cp.id}\nevent: checkpoint\n".encode()
                            + b"data: "
                            + data
                            + b"\n\n"
                        )
                status = await wf.status(run_id)
                if status.status != "running" or await request.is_disconnected():
                    data = msgspec.json.encode(_result(status))
                    yield b"event: " + status.status.encode() + b"\ndata: " + data + b"\n\n"
                    return
                await asyncio.sleep(POLL)

        return event_stream(stream())


def routes_for(workflows: Mapping[str, Workflow]) -> list[Route]:
    """The HTTP routes for ``workflows`` (name -> workflow; see the module docstring)."""
    r = _Routes(workflows)
    base = "/v1/workflows/{name}"
    return [
        Route(f"{base}/runs", r.submit, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}", r.status, methods=["GET"]),
        Route(f"{base}/runs/{{run_id}}/events", r.events, methods=["GET"]),
        Route(f"{base}/runs/{{run_id}}/cancel", r.cancel, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}/resume", r.resume, methods=["POST"]),
        Route(f"{base}/runs/{{run_id}}/fork", r.fork, methods=["POST"]),
        Route(f"{base}/approvals", r.approvals, methods=["GET"]),
        Route(f"{base}/approvals/{{approval_id}}", r.decide, methods=["POST"]),
    ]
