"""The gRPC service (``openheim.proto``): RunAgent streams a run's events, GetSession reads one,
ListApprovals and DecideApprovals list and decide a paused run's tool calls; SubmitWorkflow,
GetRun, StreamRunEvents and Approve do for workflow runs what the HTTP workflow routes do.

It shares the HTTP server's state: the same tenants (``authorization: Bearer
KEY`` metadata), agents, runs, limits and session stores.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import msgspec

from openheim import telemetry
from openheim.config import Config
from openheim.errors import (
    ApprovalError,
    ConfigError,
    RunNotFoundError,
    WorkflowApprovalError,
    WorkflowBusyError,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowStateError,
    WorkflowStepError,
)
from openheim.server import openheim_pb2 as pb
from openheim.server import openheim_pb2_grpc as pb_grpc
from openheim.server._runlog import RunRecord
from openheim.server._state import ServerState, TooManyRuns
from openheim.server._wire import BadRequest, check_session_id, json_encode, shown
from openheim.server._workflows import ShuttingDown

if TYPE_CHECKING:
    from openheim.workflow import Workflow, WorkflowResult


class _TraceContext(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call continues the caller's trace: its ``traceparent`` (and ``tracestate``)
    metadata is the current trace context while the handler runs (so the run it starts
    has the caller's span as its parent)."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not telemetry.tracing():
            return handler
        parent = state = None
        for key, value in details.invocation_metadata or ():
            if key == "traceparent":
                parent = value
            elif key == "tracestate":
                state = value
        if not isinstance(parent, str):
            return handler
        tracestate = state if isinstance(state, str) else None

        def ctx() -> Any:
            return telemetry.remote_parent(parent, tracestate)

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_unary(handler.unary_unary, ctx))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_streamed(handler.unary_stream, ctx))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_unary(handler.stream_unary, ctx))
        return handler._replace(stream_stream=_streamed(handler.stream_stream, ctx))


def _unary(behavior: Callable[[Any, Any], Any], ctx: Callable[[], Any]) -> Any:
    async def call(request: Any, context: Any) -> Any:
        with telemetry.attached(ctx()):
            return await behavior(request, context)

    return call


def _streamed(behavior: Callable[[Any, Any], Any], ctx: Callable[[], Any]) -> Any:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        parent = ctx()
        with telemetry.attached(parent):
            items = behavior(request, context)
        if not inspect.isasyncgen(items):  # a handler that writes with context.write
            with telemetry.attached(parent):
                await items
            return
        # Current only while the handler runs, never while this generator is suspended.
        try:
            while True:
                with telemetry.attached(parent):
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            with telemetry.attached(parent):
                await items.aclose()

    return call


class _Service(pb_grpc.OpenheimServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _tenant(self, context: Any) -> str:
        if not self.state.auth_enabled:
            return "default"
        header = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, key = str(header).partition(" ")
        tenant = self.state.tenant_for(key.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send metadata authorization: Bearer <key>",
            )
        assert tenant is not None
        return tenant

    async def _check_session(self, session: str, context: Any) -> None:
        try:
            check_session_id(session)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def RunAgent(self, request: Any, context: Any) -> AsyncIterator[Any]:
        tenant = await self._tenant(context)
        if not self.state.accepting:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another"
            )
        if self.state.loading:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the server is still loading its agents; retry"
            )
        if request.agent not in self.state.config.agents:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no agent {shown(request.agent)}")
        if request.session:
            await self._check_session(request.session, context)
        try:
            record = self.state.runs.start(
                tenant, request.agent, request.input, request.session or None
            )
        except TooManyRuns:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent runs for this tenant"
            )
            return
        except ConfigError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            return
        async for event in self._follow(record, -1):
            yield event

    async def _follow(self, record: RunRecord, after: int) -> AsyncIterator[Any]:
        async for ident, kind, data in record.follow(after):
            yield pb.AgentEvent(id=ident, type=kind, data=data.decode(), run_id=record.id)

    async def ListApprovals(self, request: Any, context: Any) -> Any:
        from openheim.agent.approvals import paused_run
        from openheim.server.routes.runs import run_status

        tenant = await self._tenant(context)
        paused = await paused_run(self.state.checkpointer(tenant), request.run_id)
        if paused is not None:
            return pb.Approvals(
                run_id=paused.run_id,
                status="paused",
                agent=paused.agent,
                session=paused.session or "",
                pending=[
                    pb.PendingCall(
                        id=p.id, tool=p.tool, arguments=json_encode(p.arguments).decode()
                    )
                    for p in paused.pending
                ],
            )
        status = await run_status(self.state, tenant, request.run_id)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r}")
        assert status is not None
        return pb.Approvals(run_id=request.run_id, status=str(status["status"]))

    async def DecideApprovals(self, request: Any, context: Any) -> AsyncIterator[Any]:
        from openheim.agent.approvals import check_decisions, paused_run
        from openheim.server.routes.runs import run_status
        from openheim.snapshot import Approval

        tenant = await self._tenant(context)
        run_id = request.run_id
        paused = await paused_run(self.state.checkpointer(tenant), run_id)
        if paused is None:
            if await run_status(self.state, tenant, run_id) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r}")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"run {run_id!r} is not waiting for approvals",
            )
        assert paused is not None
        decisions: dict[str, Approval] = {}
        for d in request.decisions:
            if d.id in decisions:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"call {d.id!r} is decided twice"
                )
            decisions[d.id] = Approval(d.approved, d.reason or None)
        try:
            check_decisions(paused, decisions)
        except (ApprovalError, ConfigError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            record = await self.state.runs.decide(tenant, run_id, decisions)
        except TooManyRuns:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent runs for this tenant"
            )
            return
        except ApprovalError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            return
        async for event in self._follow(record, record.first - 1):
            yield event

    async def GetSession(self, request: Any, context: Any) -> Any:
        tenant = await self._tenant(context)
        await self._check_session(request.id, context)
        store = self.state.history(tenant)
        messages = await store.load(request.id)
        if not messages:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.id!r}")
        usage = await store.usage(request.id)
        return pb.Session(
            id=request.id,
            messages=[
                pb.ChatMessage(role=m.role, content=m.content or "", data=json_encode(m).decode())
                for m in messages
            ],
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            requests=usage.requests,
        )

    # ---- workflows ([workflows.NAME]; server/_workflows.py, shared with the HTTP routes) ----

    async def _workflow(self, name: str, context: Any) -> tuple[str, Workflow]:
        tenant = await self._tenant(context)
        try:
            return tenant, self.state.workflows.get(name, tenant)
        except RunNotFoundError as exc:
            await self._fail(exc, context)

    async def _fail(self, exc: BaseException, context: Any) -> NoReturn:
        """Abort with the status code ``exc`` stands for (as the HTTP routes answer)."""
        if isinstance(exc, ShuttingDown):
            code = grpc.StatusCode.UNAVAILABLE
        elif isinstance(exc, RunNotFoundError):
            code = grpc.StatusCode.NOT_FOUND
        elif isinstance(exc, WorkflowBusyError):
            code = grpc.StatusCode.ABORTED
        elif isinstance(exc, _Exists):
            code = grpc.StatusCode.ALREADY_EXISTS
        elif isinstance(exc, (WorkflowApprovalError, WorkflowCancelled, WorkflowStepError)):
            code = grpc.StatusCode.FAILED_PRECONDITION
        elif isinstance(exc, (BadRequest, WorkflowStateError, WorkflowDefinitionError)):
            code = grpc.StatusCode.INVALID_ARGUMENT
        else:
            code = grpc.StatusCode.INTERNAL
        await context.abort(
            code, str(exc) if code != grpc.StatusCode.INTERNAL else f"the workflow failed: {exc}"
        )
        raise AssertionError("context.abort returned")

    async def SubmitWorkflow(self, request: Any, context: Any) -> Any:
        _, wf = await self._workflow(request.workflow, context)
        served = self.state.workflows
        try:
            data = _json_object(request.input, "input")
            run_id = request.run_id or None
            if run_id is not None:
                if not run_id.strip():
                    raise BadRequest("run_id must not be blank (leave it empty for a new id)")
                if await wf.journal.read(run_id):
                    raise _Exists(
                        f"run {shown(run_id)} already exists; resume it, or choose a new run_id"
                    )
            if request.wait:
                return _run_message(await served.run(wf, data, run_id))
            run_id = await served.start(wf, data, run_id)
            return _run_message(await wf.status(run_id))
        except Exception as exc:
            await self._fail(exc, context)

    async def GetRun(self, request: Any, context: Any) -> Any:
        _, wf = await self._workflow(request.workflow, context)
        try:
            return _run_message(await wf.status(request.run_id))
        except Exception as exc:
            await self._fail(exc, context)

    async def StreamRunEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        _, wf = await self._workflow(request.workflow, context)
        try:
            await wf.status(request.run_id)  # NOT_FOUND before the stream starts
        except Exception as exc:
            await self._fail(exc, context)
        # A client that goes away cancels this handler (and so the following).
        async for ident, kind, data in self.state.workflows.follow(
            wf, request.run_id, request.after
        ):
            yield pb.WorkflowEvent(id=ident, type=kind, data=data.decode(), run_id=request.run_id)

    async def Approve(self, request: Any, context: Any) -> Any:
        _, wf = await self._workflow(request.workflow, context)
        try:
            edits = _json_object(request.edits, "edits") if request.edits else None
            run_id = await self.state.workflows.decide(
                wf,
                request.approval_id,
                request.approved,
                by=request.by or None,
                reason=request.reason or None,
                edits=edits,
            )
        except Exception as exc:
            await self._fail(exc, context)
        return pb.ApproveResponse(approval_id=request.approval_id, run_id=run_id)


class _Exists(Exception):
    """A run id already in use (ALREADY_EXISTS)."""


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(
            f"{what} must be a JSON object of state fields, got {type(value).__name__}"
        )
    return value


def _run_message(res: WorkflowResult) -> Any:
    body = res.to_builtins()
    return pb.WorkflowRun(
        run_id=res.run_id,
        status=res.status,
        state=json_encode(body["state"]).decode(),
        pending=[
            pb.WorkflowApproval(
                id=a.id,
                run_id=a.run_id,
                node=a.node,
                payload=json_encode(p.get("payload")).decode(),
                requested_at=a.requested_at,
                deadline=a.deadline or 0.0,
                data=json_encode(p).decode(),
            )
            for a, p in zip(res.pending, body["pending"], strict=True)
        ],
        error=res.error or "",
        data=json_encode(body).decode(),
    )


def _read_pem(config: Config, key: str, value: str) -> bytes:
    path = Path(value).expanduser()
    if not path.is_absolute() and config.path is not None:
        path = config.path.resolve().parent / path
    try:
        return path.read_bytes()
    except OSError as exc:
        raise config.error(
            ["server", "grpc", key], f"cannot read {path}: {exc.strerror or exc}"
        ) from None


def credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials from ``[server.grpc]`` (None: plaintext)."""
    g = config.server.grpc
    if g.cert_file is None and g.key_file is None:
        return None
    if g.cert_file is None or g.key_file is None:
        missing = "cert_file" if g.cert_file is None else "key_file"
        raise config.error(
            ["server", "grpc"], f"TLS needs both cert_file and key_file; {missing} is missing"
        )
    cert = _read_pem(config, "cert_file", g.cert_file)
    key = _read_pem(config, "key_file", g.key_file)
    return grpc.ssl_server_credentials([(key, cert)])


async def start_grpc(state: ServerState, host: str, port: int) -> Any:
    """Start the gRPC server on ``host:port`` (in the running event loop), over TLS when
    ``[server.grpc]`` names a certificate and key."""
    creds = credentials(state.config)
    server = grpc.aio.server(interceptors=[_TraceContext()])
    pb_grpc.add_OpenheimServicer_to_server(_Service(state), server)  # type: ignore[no-untyped-call]
    address = f"{host}:{port}"
    try:
        if creds is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, creds)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server


def decode_event(event: Any) -> dict[str, Any]:
    """An AgentEvent's JSON data as a dict (for clients)."""
    result: dict[str, Any] = msgspec.json.decode(event.data)
    return result
