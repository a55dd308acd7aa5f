"""``/v1/sessions``: a tenant's stored conversations (list, read, delete)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openheim.server._http import error_response, json_response, state_of, tenant_of
from openheim.server._schemas import Session, SessionList
from openheim.server._wire import BadRequest, check_session_id
from openheim.stores.history import StoreHistory


def _store(request: Request) -> StoreHistory:
    return state_of(request).history(tenant_of(request))


def _session_id(request: Request) -> str:
    sid: str = request.path_params["session_id"]
    check_session_id(sid)
    return sid


async def list_sessions(request: Request) -> Response:
    return json_response(SessionList(await _store(request).list_sessions()))


async def get_session(request: Request) -> Response:
    store = _store(request)
    try:
        sid = _session_id(request)
    except BadRequest as exc:
        return error_response(400, str(exc), param=exc.param)
    messages = await store.load(sid)
    if not messages:
        return error_response(404, f"no session {sid!r}", code="not_found")
    usage = await store.usage(sid)
    return json_response(Session(sid, messages, usage))


async def delete_session(request: Request) -> Response:
    store = _store(request)
    try:
        sid = _session_id(request)
    except BadRequest as exc:
        return error_response(400, str(exc), param=exc.param)
    # Existence is checked by loading: stores' delete() need not report whether it deleted.
    if not await store.load(sid):
        return error_response(404, f"no session {sid!r}", code="not_found")
    await store.delete(sid)
    return Response(status_code=204)


ROUTES = [
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
]
