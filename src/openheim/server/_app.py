"""The ASGI application: routes, authentication, limits and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from openheim.config import Config
from openheim.errors import ConfigError, OpenheimError
from openheim.server import _openai as oa
from openheim.server._metrics import Metrics
from openheim.server._openapi import openapi_document
from openheim.server._state import RunRecord, ServerState, TooManyRuns, json_encode

Scope = MutableMapping[str, Any]
Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_encode(body), status, headers, media_type="application/json")


def _error(
    status: int, message: str, kind: str = "invalid_request_error", **extra: Any
) -> Response:
    headers = extra.pop("headers", None)
    return Response(
        oa.error_body(message, kind, extra.get("param"), extra.get("code")),
        status,
        headers,
        media_type="application/json",
    )


class Guard:
    """Body size limit, Bearer-key authentication (tenant into scope) and request metrics."""

    def __init__(self, app: ASGIApp, state: ServerState, metrics: Metrics) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box = [500]

        async def send_(message: Message_) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_)
        finally:
            endpoint = scope.get("endpoint")
            label = getattr(endpoint, "__name__", "unmatched")
            self.metrics.requests.labels(scope["method"], label, str(status_box[0])).inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        limit = self.state.config.server.max_body_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(413, f"request body is larger than {limit} bytes", code="too_large")(
                scope, receive, send
            )
            return
        if path not in PUBLIC:
            tenant = self._tenant(headers.get("authorization", ""))
            if tenant is None:
                await _error(
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
                    await _error(
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


def create_app(config: Config, state: ServerState | None = None) -> Any:
    """The ASGI app serving ``config`` (``app.state.openheim`` is the ServerState)."""
    state = state or ServerState(config)
    metrics = Metrics(state)

    def tenant_of(request: Request) -> str:
        tenant: str = request.scope["state"]["tenant"]
        return tenant

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state.accepting:
            return _json({"status": "shutting down"}, 503)
        return _json({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return _json(openapi_document(tuple(state.config.agents), bool(state.config.providers)))

    async def list_models(request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "openheim"}
            for name in state.config.agents
        ]
        return _json({"object": "list", "data": data})

    async def chat_completions(request: Request) -> Response:
        tenant = tenant_of(request)
        if not state.accepting:
            return _error(503, "the server is shutting down", "unavailable")
        try:
            req = oa.parse_request(await request.body())
            provider = req.model.partition(":")[0]
            if req.model not in state.config.agents and provider in state.config.providers:
                # "<provider>:<model>" for a [providers.NAME] entry: a plain model proxy.
                model = state.provider_model(req.model)
                return await _proxy(tenant, model, req, oa.to_model_request(req))
            if req.model not in state.config.agents:
                return _error(
                    404,
                    f"the model {req.model!r} does not exist; GET /v1/models lists them",
                    param="model",
                    code="model_not_found",
                )
            agent = state.agent(tenant, req.model)
            if oa.proxy_mode(req):
                mreq = oa.to_model_request(req)
                return await _proxy(tenant, agent.model, req, mreq)
            messages = oa.to_messages(req.messages)
        except oa.BadRequest as exc:
            return _error(400, str(exc), param=exc.param)
        except ConfigError as exc:
            return _error(500, str(exc), "server_error")
        if messages[-1].role != "user":
            return _error(400, "the last message must be from the user", param="messages")
        return await _agent_chat(tenant, agent, req, messages)

    async def _proxy(tenant: str, model: Any, req: oa.ChatRequest, mreq: Any) -> Response:
        try:
            state.acquire(tenant)
        except TooManyRuns:
            return _too_many()
        cid = oa.new_id()
        if req.stream:
            include = bool((req.stream_options or {}).get("include_usage"))
            return _sse(oa.proxy_stream(model, mreq, cid, req.model, include), tenant)
        try:
            res = await model.request(mreq)
        except OpenheimError as exc:
            return _error(502, str(exc), "model_error")
        finally:
            state.release(tenant)
        return _json(oa.completion(cid, req.model, res.message, res.finish_reason, res.usage))

    async def _agent_chat(
        tenant: str, agent: Any, req: oa.ChatRequest, messages: list[Any]
    ) -> Response:
        from openheim.agent import Done, TextDelta

        try:
            state.acquire(tenant)
        except TooManyRuns:
            return _too_many()
        history = state.history(tenant)
        session = "_chat/" + oa.new_id()
        history.scratch(session, messages[:-1])
        prompt = messages[-1].content or ""
        cid = oa.new_id()

        if req.stream:
            include = bool((req.stream_options or {}).get("include_usage"))

            async def events() -> AsyncIterator[bytes]:
                try:
                    yield oa.chunk(cid, req.model, {"role": "assistant", "content": ""})
                    async for ev in agent.stream(prompt, session=session):
                        if type(ev) is TextDelta:
                            yield oa.chunk(cid, req.model, {"content": ev.text})
                        elif type(ev) is Done:
                            out = ev.result.output
                            if not isinstance(out, str) and out is not None:
                                yield oa.chunk(
                                    cid, req.model, {"content": json_encode(out).decode()}
                                )
                            yield oa.chunk(cid, req.model, {}, "stop")
                            if include:
                                yield oa.usage_chunk(cid, req.model, ev.result.usage)
                    yield oa.DONE
                finally:
                    history.drop(session)

            return _sse(events(), tenant)
        try:
            result = await agent.run(prompt, session=session)
        except OpenheimError as exc:
            return _error(502, f"{type(exc).__name__}: {exc}", "agent_error")
        finally:
            history.drop(session)
            state.release(tenant)
        out = result.output
        text = out if isinstance(out, str) or out is None else json_encode(out).decode()
        from openheim.messages import Message

        return _json(
            oa.completion(cid, req.model, Message("assistant", text), "stop", result.usage)
        )

    def _sse(body: AsyncIterator[bytes], tenant: str) -> Response:
        async def guarded() -> AsyncIterator[bytes]:
            try:
                async for piece in body:
                    yield piece
            except OpenheimError as exc:
                yield b"data: " + oa.error_body(str(exc), "model_error") + b"\n\n"
                yield oa.DONE
            finally:
                state.release(tenant)

        return StreamingResponse(guarded(), media_type="text/event-stream", headers=SSE_HEADERS)

    def _too_many() -> Response:
        limit = state.config.server.max_concurrent_runs_per_tenant
        return _error(
            429,
            f"too many concurrent runs for this tenant (limit {limit}); retry shortly",
            "rate_limit_error",
            headers={"Retry-After": "1"},
        )

    class RunBody(msgspec.Struct):
        input: str
        session: str | None = None
        stream: bool = False

    async def start_run(request: Request) -> Response:
        tenant = tenant_of(request)
        name = request.path_params["name"]
        if name not in state.config.agents:
            return _error(404, f"no agent {name!r}; GET /v1/models lists them", code="not_found")
        try:
            body = msgspec.json.decode(await request.body(), type=RunBody)
        except msgspec.DecodeError as exc:
            return _error(400, f"invalid request body: {exc}")
        if body.session == "":
            return _error(400, "session must be a non-empty string (or left out)", param="session")
        if not state.accepting:
            return _error(503, "the server is shutting down", "unavailable")
        try:
            record = state.start_run(tenant, name, body.input, body.session)
        except TooManyRuns:
            return _too_many()
        except ConfigError as exc:
            return _error(500, str(exc), "server_error")
        headers = {"Openheim-Run-Id": record.id, "Location": f"/v1/runs/{record.id}"}
        if body.stream or "text/event-stream" in request.headers.get("accept", ""):
            return _run_stream(record, -1, headers)
        assert record.task is not None
        await asyncio.shield(record.task)
        return _run_json(record, headers)

    def _run_json(record: RunRecord, headers: dict[str, str] | None = None) -> Response:
        if record.result is not None:
            return _json({"status": "finished", **record.result}, 200, headers)
        if not record.finished:
            return _json({"status": "running", "run_id": record.id}, 200, headers)
        error = msgspec.json.decode(record.events[-1][1]).get("error") if record.events else None
        return _json({"status": "failed", "run_id": record.id, "error": error}, 200, headers)

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

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )

    def _own_run(request: Request) -> RunRecord | None:
        record = state.runs.get(request.path_params["run_id"])
        if record is None or record.tenant != tenant_of(request):
            return None
        return record

    async def get_run(request: Request) -> Response:
        record = _own_run(request)
        if record is None:
            return _error(404, "no such run", code="not_found")
        return _run_json(record)

    async def run_events(request: Request) -> Response:
        record = _own_run(request)
        if record is None:
            return _error(404, "no such run", code="not_found")
        last = request.headers.get("last-event-id", "-1").strip()
        try:
            after = int(last)
        except ValueError:
            return _error(400, "Last-Event-ID must be an event id from this run's stream")
        return _run_stream(record, after, {"Openheim-Run-Id": record.id})

    async def list_sessions(request: Request) -> Response:
        store = state.history(tenant_of(request)).store
        return _json({"sessions": await store.list_sessions()})

    async def get_session(request: Request) -> Response:
        store = state.history(tenant_of(request)).store
        sid = request.path_params["session_id"]
        messages = await store.load(sid)
        if not messages:
            return _error(404, f"no session {sid!r}", code="not_found")
        usage = await store.usage(sid)
        return _json({"id": sid, "messages": messages, "usage": usage})

    async def delete_session(request: Request) -> Response:
        store = state.history(tenant_of(request)).store
        sid = request.path_params["session_id"]
        # Existence is checked by loading: stores' delete() need not report whether it deleted.
        if not await store.load(sid):
            return _error(404, f"no session {sid!r}", code="not_found")
        await store.delete(sid)
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await state.drain(state.config.server.shutdown_grace)
        await state.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/agents/{name}/runs", start_run, methods=["POST"]),
        Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}/events", run_events, methods=["GET"]),
        Route("/v1/sessions", list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
    ]
    inner = Starlette(routes=routes, lifespan=lifespan)
    inner.state.openheim = state
    app = Guard(inner, state, metrics)
    return app
