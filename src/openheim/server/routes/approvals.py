"""Approvals: ``GET`` / ``POST /v1/runs/{id}/approvals`` (list, then approve or reject each call).

A run that calls a ``requires_approval`` tool ends its stream with
``stop_reason: "approval_required"`` and waits in the store, holding no
worker. ``GET`` lists its pending calls; ``POST`` decides every one of them
and the run goes on (streamed like a new run with ``"stream": true``). The
logic is the agent layer's (``openheim.agent.approvals``), shared with the
gRPC service and ``openheim approvals``.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.agent.approvals import check_decisions, paused_run
from openheim.errors import ApprovalError, ConfigError
from openheim.server import _schemas as s
from openheim.server._http import (
    error_response,
    json_response,
    shutting_down,
    state_of,
    tenant_of,
    too_many,
)
from openheim.server._state import TooManyRuns
from openheim.server._wire import BadRequest, decode_body
from openheim.snapshot import Approval


async def list_approvals(request: Request) -> Response:
    from openheim.server.routes.runs import run_status

    state = state_of(request)
    tenant = tenant_of(request)
    run_id = request.path_params["run_id"]
    paused = await paused_run(state.checkpointer(tenant), run_id)
    if paused is not None:
        pending = [s.PendingCall(p.id, p.tool, p.arguments) for p in paused.pending]
        body = s.Approvals(run_id, "paused", paused.agent, paused.session, pending)
        return json_response(body)
    status = await run_status(state, tenant, run_id)
    if status is None:
        return error_response(404, f"no run {run_id!r}", code="not_found")
    return json_response(s.Approvals(run_id, status["status"]))


async def decide_approvals(request: Request) -> Response:
    from openheim.server.routes.runs import run_response, run_status, run_stream

    state = state_of(request)
    tenant = tenant_of(request)
    run_id = request.path_params["run_id"]
    try:
        body = decode_body(await request.body(), s.ApprovalsRequest)
    except BadRequest as exc:
        return error_response(400, str(exc), param=exc.param)
    ids = [d.id for d in body.decisions]
    if len(set(ids)) != len(ids):
        return error_response(400, "each call id may be decided once", param="decisions")
    if not state.accepting:
        return shutting_down()
    paused = await paused_run(state.checkpointer(tenant), run_id)
    if paused is None:
        if await run_status(state, tenant, run_id) is None:
            return error_response(404, f"no run {run_id!r}", code="not_found")
        return error_response(
            409,
            f"run {run_id!r} is not waiting for approvals (it is running, finished, or was "
            "decided already)",
            code="not_paused",
        )
    decisions = {d.id: Approval(d.approved, d.reason) for d in body.decisions}
    try:
        check_decisions(paused, decisions)
    except (ApprovalError, ConfigError) as exc:
        return error_response(400, str(exc), param="decisions")
    try:
        record = await state.runs.decide(tenant, run_id, decisions)
    except TooManyRuns:
        return too_many(state)
    except ApprovalError as exc:
        return error_response(409, str(exc), code="not_paused")
    headers = {"Openheim-Run-Id": record.id, "Location": f"/v1/runs/{record.id}"}
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        return run_stream(record, record.first - 1, headers)
    assert record.task is not None
    await asyncio.shield(record.task)
    return run_response(record, headers)


ROUTES = [
    Route("/v1/runs/{run_id}/approvals", list_approvals, methods=["GET"]),
    Route("/v1/runs/{run_id}/approvals", decide_approvals, methods=["POST"]),
]
