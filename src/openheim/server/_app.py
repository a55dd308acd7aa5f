"""The ASGI application: the routes (``server/routes``) behind the Guard middleware."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from openheim import telemetry
from openheim.config import Config
from openheim.server._http import error_response, failure, log
from openheim.server._metrics import Metrics
from openheim.server._state import ServerState
from openheim.server._wire import shown
from openheim.server._workflows import ServedWorkflows, build_served
from openheim.server.routes import ROUTES
from openheim.server.routes.health import PUBLIC
from openheim.server.routes.workflows import routes_for

access = logging.getLogger("openheim.server.access")

Scope = MutableMapping[str, Any]
Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _remote_parent(scope: Scope) -> Any:
    """The trace context of the request's W3C ``traceparent`` / ``tracestate`` headers, when
    openheim traces and no instrumentation in front of it made a span current already."""
    if not telemetry.tracing():
        return None
    parent = state = None
    for key, value in scope["headers"]:
        name = key.lower()
        if name == b"traceparent":
            parent = value.decode("latin-1")
        elif name == b"tracestate":
            state = value.decode("latin-1")
    return telemetry.remote_parent(parent, state)


class Guard:
    """Body size limit, Bearer-key authentication (tenant into scope), request metrics, and
    the caller's trace context (``traceparent``) around the request."""

    def __init__(self, app: Starlette, state: ServerState, metrics: Metrics) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box = [0]
        run_box = [""]
        started = time.perf_counter()

        async def send_(message: Message_) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                for key, value in message.get("headers", ()):
                    if key.lower() == b"openheim-run-id":
                        run_box[0] = value.decode("latin-1")
            await send(message)

        try:
            # A run started here (and its invoke_agent / invoke_workflow span) continues the
            # caller's trace: its task copies this context when it is created.
            with telemetry.attached(_remote_parent(scope)):
                await self._guarded(scope, receive, send_)
        except Exception as exc:
            # A bug below (the routes answer every failure they expect): logged with its
            # traceback; the client gets the JSON error shape if nothing was sent yet.
            what = f"{scope['method']} {shown(scope['path'])}"
            if status_box[0]:
                log.error("%s failed after its answer started", what, exc_info=exc)
            else:
                await failure(exc, what)(scope, receive, send_)
        finally:
            endpoint = scope.get("endpoint")
            label = getattr(endpoint, "__name__", "unmatched")
            status = status_box[0] or 500
            self.metrics.requests.labels(scope["method"], label, str(status)).inc()
            if access.isEnabledFor(logging.INFO):
                self._log(scope, status, started, run_box[0])

    def _log(self, scope: Scope, status: int, started: float, run_id: str) -> None:
        # The raw path: still percent-encoded, so no control characters reach the log.
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else shown(scope["path"])
        path = path.partition("?")[0]
        if not run_id:
            run_id = scope.get("path_params", {}).get("run_id", "")
        tenant = scope.get("state", {}).get("tenant", "")
        duration = round((time.perf_counter() - started) * 1000, 3)
        access.info(
            "%s %s %d %.1f ms tenant=%s run=%s",
            scope["method"],
            path,
            status,
            duration,
            tenant or "-",
            run_id or "-",
            extra={
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": duration,
                "tenant": tenant or None,
                "run_id": run_id or None,
            },
        )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        limit = self.state.config.server.max_body_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(
                413, f"request body is larger than {limit} bytes", code="too_large"
            )(scope, receive, send)
            return
        if path not in PUBLIC:
            tenant = self._tenant(headers.get("authorization", ""))
            if tenant is None:
                await error_response(
                    401,
                    "missing or unknown API key: send Authorization: Bearer <key>",
                    "authentication_error",
                    headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
                return
            scope.setdefault("state", {})["tenant"] = tenant
        if scope["method"] in ("POST", "PUT", "PATCH"):
            # Read the body here (bounded) so chunked uploads meet the same limit.
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                size += len(body)
                if size > limit:
                    await error_response(
                        413, f"request body is larger than {limit} bytes", code="too_large"
                    )(scope, receive, send)
                    return
                chunks.append(body)
                more = message.get("more_body", False)
            whole = b"".join(chunks)
            replayed = False

            async def receive_() -> Message_:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": whole, "more_body": False}
                return await receive()

            await self.app(scope, receive_, send)
            return
        await self.app(scope, receive, send)

    def _tenant(self, header: str) -> str | None:
        if not self.state.auth_enabled:
            return "default"
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        return self.state.tenant_for(key.strip())


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own answers (unknown route, wrong method) in the JSON error shape."""
    if exc.status_code == 404:
        message = (
            f"no route {request.method} {shown(request.url.path)}; GET /openapi.json lists them"
        )
        return error_response(404, message, code="not_found")
    if exc.status_code == 405:
        return error_response(
            405,
            f"{request.method} is not allowed on {shown(request.url.path)}",
            code="method_not_allowed",
            headers=dict(exc.headers or {}),
        )
    return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def create_app(config: Config, state: ServerState | None = None) -> Guard:
    """The ASGI app serving ``config`` (``app.state`` is the ServerState)."""
    state = state or ServerState(config)
    metrics = Metrics(state)
    # [workflows.NAME] of the config, on its store: each tenant's runs in its own namespace.
    state.workflows = ServedWorkflows(build_served(config), lambda: state.accepting)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Resume the runs a killed server left unfinished (under their leases) before serving;
        # `openheim serve` does it once its agents are built (ServerState.load).
        if not state.loading:
            await state.runs.start_background()
        state.workflows.start_sweeping(state.tenants)
        yield
        await state.drain(state.config.server.shutdown_grace)
        await state.aclose()

    inner = Starlette(
        routes=[*ROUTES, *routes_for(state.workflows)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
    )
    inner.state.openheim = state
    inner.state.metrics = metrics
    return Guard(inner, state, metrics)
