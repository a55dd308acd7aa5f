"""The ASGI application: the routes (``server/routes``) behind the Guard middleware."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette

from openheim.config import Config
from openheim.server._http import error_response, failure, log
from openheim.server._metrics import Metrics
from openheim.server._state import ServerState
from openheim.server._wire import shown
from openheim.server.routes import ROUTES
from openheim.server.routes.health import PUBLIC

Scope = MutableMapping[str, Any]
Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Guard:
    """Body size limit, Bearer-key authentication (tenant into scope) and request metrics."""

    def __init__(self, app: Starlette, state: ServerState, metrics: Metrics) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box = [0]

        async def send_(message: Message_) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
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
            status = str(status_box[0] or 500)
            self.metrics.requests.labels(scope["method"], label, status).inc()

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


def create_app(config: Config, state: ServerState | None = None) -> Guard:
    """The ASGI app serving ``config`` (``app.state`` is the ServerState)."""
    state = state or ServerState(config)
    metrics = Metrics(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Resume the runs a killed server left unfinished (under their leases) before serving.
        await state.runs.start_background()
        yield
        await state.drain(state.config.server.shutdown_grace)
        await state.aclose()

    inner = Starlette(routes=ROUTES, lifespan=lifespan)
    inner.state.openheim = state
    inner.state.metrics = metrics
    return Guard(inner, state, metrics)
