"""What every route shares: the typed state of a request, JSON and error responses, SSE."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openheim.server._metrics import Metrics
from openheim.server._openai import DONE
from openheim.server._state import ServerState
from openheim.server._wire import describe_error, error_body, json_encode

log = logging.getLogger("openheim.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def state_of(request: Request) -> ServerState:
    """The app's :class:`ServerState`."""
    return cast(ServerState, request.app.state.openheim)


def metrics_of(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


def tenant_of(request: Request) -> str:
    """The tenant the Guard authenticated for this request."""
    tenant: str = request.scope["state"]["tenant"]
    return tenant


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_encode(body), status, headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, kind, param, code), status, headers, media_type="application/json"
    )


def failure(exc: BaseException, what: str) -> Response:
    """The JSON error answer for ``exc`` (:func:`describe_error`); server faults are logged
    with their traceback."""
    err = describe_error(exc)
    if err.status >= 500:
        log.error("%s failed", what, exc_info=exc)
    return Response(err.body(), err.status, media_type="application/json")


def too_many(state: ServerState) -> Response:
    limit = state.config.server.max_concurrent_runs_per_tenant
    return error_response(
        429,
        f"too many concurrent runs for this tenant (limit {limit}); retry shortly",
        "rate_limit_error",
        headers={"Retry-After": "1"},
    )


def shutting_down() -> Response:
    return error_response(503, "the server is shutting down", "unavailable")


def unavailable(state: ServerState) -> Response | None:
    """A 503 while the server is loading its agents or shutting down (else None)."""
    if not state.accepting:
        return shutting_down()
    if state.loading:
        return error_response(
            503,
            "the server is still building its agents and loading models; retry shortly",
            "unavailable",
            code="loading",
            headers={"Retry-After": "1"},
        )
    return None


def event_stream(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )


def chat_stream(
    body: AsyncIterator[bytes], what: str, done: Callable[[], Awaitable[None]]
) -> Response:
    """A chat completion's SSE stream; ``done`` runs when it ends (releasing what it held).

    Whatever ends it early, the client gets an error chunk and ``[DONE]``.
    """

    async def guarded() -> AsyncIterator[bytes]:
        try:
            async for piece in body:
                yield piece
        except Exception as exc:
            err = describe_error(exc)
            if err.status >= 500:
                log.error("%s failed", what, exc_info=exc)
            yield b"data: " + err.body() + b"\n\n"
            yield DONE
        finally:
            await done()

    return event_stream(guarded())
