"""Agent runs: ``POST /v1/agents/{name}/runs``, ``GET /v1/runs/{id}`` and its SSE events.

A run's lifecycle (its record, events, expiry) lives in ``server/_runs.py``;
this module only maps HTTP onto it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.errors import ConfigError
from openheim.server._http import (
    error_response,
    event_stream,
    json_response,
    state_of,
    tenant_of,
    too_many,
    unavailable,
)
from openheim.server._runs import RunRecord
from openheim.server._schemas import RunRequest
from openheim.server._state import TooManyRuns
from openheim.server._wire import BadRequest, check_session_id, decode_body, shown


async def start_run(request: Request) -> Response:
    state = state_of(request)
    tenant = tenant_of(request)
    name = request.path_params["name"]
    if name not in state.config.agents:
        return error_response(
            404, f"no agent {shown(name)}; GET /v1/models lists them", code="not_found"
        )
    try:
        body = decode_body(await request.body(), RunRequest)
        if body.session is not None:
            check_session_id(body.session)
    except BadRequest as exc:
        return error_response(400, str(exc), param=exc.param)
    busy = unavailable(state)
    if busy is not None:
        return busy
    try:
        record = state.runs.start(tenant, name, body.input, body.session)
    except TooManyRuns:
        return too_many(state)
    except ConfigError as exc:
        return error_response(500, str(exc), "server_error")
    headers = {"Openheim-Run-Id": record.id, "Location": f"/v1/runs/{record.id}"}
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        return _run_stream(record, -1, headers)
    assert record.task is not None
    await asyncio.shield(record.task)
    return _run_json(record, headers)


def _run_json(record: RunRecord, headers: dict[str, str] | None = None) -> Response:
    if record.result is not None:
        return json_response({"status": "finished", **record.result}, 200, headers)
    if not record.finished:
        return json_response({"status": "running", "run_id": record.id}, 200, headers)
    error = msgspec.json.decode(record.events[-1][1]).get("error") if record.events else None
    return json_response({"status": "failed", "run_id": record.id, "error": error}, 200, headers)


def _run_stream(record: RunRecord, after: int, headers: dict[str, str]) -> Response:
    async def events() -> AsyncIterator[bytes]:
        seen = after + 1
        while True:
            await record.wait(seen)
            while seen < len(record.events):
                kind, data = record.events[seen]
                yield f"id: {seen}\nevent: {kind}\n".encode() + b"data: " + data + b"\n\n"
                seen += 1
            if record.finished and seen >= len(record.events):
                return

    return event_stream(events(), headers)


def _own_run(request: Request) -> RunRecord | None:
    return state_of(request).runs.get(request.path_params["run_id"], tenant_of(request))


async def get_run(request: Request) -> Response:
    record = _own_run(request)
    if record is None:
        return error_response(404, "no such run", code="not_found")
    return _run_json(record)


async def run_events(request: Request) -> Response:
    record = _own_run(request)
    if record is None:
        return error_response(404, "no such run", code="not_found")
    last = request.headers.get("last-event-id", "-1").strip()
    try:
        after = int(last)
    except ValueError:
        return error_response(400, "Last-Event-ID must be an event id from this run's stream")
    return _run_stream(record, after, {"Openheim-Run-Id": record.id})


ROUTES = [
    Route("/v1/agents/{name}/runs", start_run, methods=["POST"]),
    Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/events", run_events, methods=["GET"]),
]
