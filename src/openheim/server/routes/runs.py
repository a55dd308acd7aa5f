"""Agent runs: ``POST /v1/agents/{name}/runs``, ``GET /v1/runs/{id}`` and its SSE events.

A run's lifecycle (its record, events in the store, recovery, expiry) lives in
``server/_runs.py``; this module only maps HTTP onto it. ``GET
/v1/runs/{id}/events`` answers from memory or from the store, so it works for
runs another server executes and after a restart; ``Last-Event-ID`` (or
``?after=``) is the id of the last event the client has, and anything that is
not an event id of that run is a 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

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
from openheim.server._runlog import RunRecord, parse_event_id, sse
from openheim.server._runs import run_body
from openheim.server._schemas import RunRequest
from openheim.server._state import ServerState, TooManyRuns
from openheim.server._wire import BadRequest, check_session_id, decode_body, shown


def run_response(record: RunRecord, headers: dict[str, str] | None = None) -> Response:
    return json_response(_record_body(record), 200, headers)


def _record_body(record: RunRecord) -> dict[str, Any]:
    if record.result is not None:
        return run_body(record.id, True, "done", record.result)
    if record.finished and not record.handed_off:
        return run_body(record.id, True, "error", {"error": record.error})
    return run_body(record.id, False, None, None)


async def run_status(state: ServerState, tenant: str, run_id: str) -> dict[str, Any] | None:
    """``GET /v1/runs/{id}``'s body, from memory or the store; None if there is no such run."""
    record = state.runs.get(run_id, tenant)
    if record is not None and not record.handed_off:
        return _record_body(record)
    stored = await state.runs.stored(run_id, tenant)
    if stored is None:
        return None
    return run_body(run_id, stored.closed, stored.kind, stored.last)


def run_stream(record: RunRecord, after: int, headers: dict[str, str]) -> Response:
    async def events() -> AsyncIterator[bytes]:
        async for event in record.follow(after):
            yield sse(event)

    return event_stream(events(), headers)


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
        return run_stream(record, -1, headers)
    assert record.task is not None
    await asyncio.shield(record.task)
    return run_response(record, headers)


async def get_run(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    body = await run_status(state_of(request), tenant_of(request), run_id)
    if body is None:
        return error_response(404, "no such run", code="not_found")
    return json_response(body)


def _after(request: Request) -> str | None:
    """The client's last event id: ``Last-Event-ID``, else ``?after=``; None for "from the start"."""
    header = request.headers.get("last-event-id")
    if header is not None:
        return header
    return request.query_params.get("after")


async def run_events(request: Request) -> Response:
    state = state_of(request)
    tenant = tenant_of(request)
    run_id = request.path_params["run_id"]
    last = await state.runs.last_id(run_id, tenant)
    if last is None:
        return error_response(404, "no such run", code="not_found")
    given = _after(request)
    after = -1
    if given is not None:
        try:
            after = parse_event_id(given)
        except ValueError:
            after = -2
        if not 0 <= after <= last:
            shown = given if len(given) <= 40 else given[:40] + "..."
            ids = f"0 to {last}" if last >= 0 else "none yet"
            return error_response(
                400,
                f"Last-Event-ID / after={shown!r} is not an event id of run {run_id!r} "
                f"(its ids so far: {ids}); send the id of the last event you received, "
                "or neither to read from the start",
                param="Last-Event-ID",
            )
    events = await state.runs.events(run_id, tenant, after)
    if events is None:
        return error_response(404, "no such run", code="not_found")

    async def body() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse(event)

    return event_stream(body(), {"Openheim-Run-Id": run_id})


ROUTES = [
    Route("/v1/agents/{name}/runs", start_run, methods=["POST"]),
    Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/events", run_events, methods=["GET"]),
]
