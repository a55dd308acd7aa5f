"""The tracing hooks the layers above call, and W3C trace-context propagation.

Each hook takes the awaitable (or async iterator) it observes and returns it
unchanged when there is nothing to do (no tracer provider, no metrics, no log
context): then the instrumented code pays one function call and a dictionary
look-up (``sys.modules``), nothing else. OpenTelemetry is never imported here;
it is used only once the application has imported it and set a tracer provider
(or passed one to :func:`configure`).

Spans are made current only while the observed code runs, never while a
generator is suspended at a ``yield``: the hook attaches the span's context
around each step of the inner iterator and detaches it before handing the
item on, so the consumer's context is never changed behind its back and a
detach always happens in the context of its attach.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from openheim._version import __version__
from openheim.telemetry import _logs, _metrics

__all__ = [
    "Carried",
    "agent_run",
    "attached",
    "batch_step",
    "carry",
    "chat",
    "chat_stream",
    "configure",
    "deliver",
    "execute_tool",
    "extract",
    "inject",
    "remote_parent",
    "tracing",
    "use_traceparent",
    "workflow_run",
    "workflow_step",
]

T = TypeVar("T")
_perf = time.perf_counter
_modules = sys.modules
_OTEL = "opentelemetry.trace"
_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_NO_PROVIDER = frozenset({"NoOpTracerProvider", "ProxyTracerProvider"})


class _Config:
    __slots__ = ("cache", "capture", "provider", "tracing")

    def __init__(self) -> None:
        self.provider: Any = None  # an explicit tracer provider (configure)
        self.tracing: bool | None = None  # False: never trace; None: when a provider is set
        self.capture: bool | None = None  # None: from the environment variable
        self.cache: tuple[Any, Any] = (None, None)  # (provider, its tracer)


_cfg = _Config()
_env_provider = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))


def configure(
    *,
    tracer_provider: Any = None,
    tracing: bool | None = None,
    capture_content: bool | None = None,
    metrics: bool | None = None,
) -> None:
    """Set how openheim reports itself; arguments left at None keep their setting.

    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` for openheim's
    spans instead of the global one. ``tracing=False`` turns spans off even
    with a provider set (``True`` restores the default: on when a provider is
    set). ``capture_content``: record message contents on spans (default: the
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` environment
    variable). ``metrics=True`` collects Prometheus metrics (also turned on by
    the server and :func:`serve_metrics`).
    """
    if tracer_provider is not None:
        if not hasattr(tracer_provider, "get_tracer"):
            from openheim.errors import ConfigError

            raise ConfigError(
                "tracer_provider must be an OpenTelemetry TracerProvider (it has no "
                f"get_tracer method): got {type(tracer_provider).__name__}"
            )
        _cfg.provider = tracer_provider
    if tracing is not None:
        _cfg.tracing = None if tracing else False
    if capture_content is not None:
        _cfg.capture = capture_content
    if metrics is not None:
        if metrics:
            _metrics.enable_metrics()
        else:
            _metrics.disable_metrics()


def _reset() -> None:
    """Back to the defaults (tests)."""
    _cfg.provider = None
    _cfg.tracing = None
    _cfg.capture = None
    _cfg.cache = (None, None)


def _tracer() -> Any:
    """openheim's tracer, or None when nothing would record its spans."""
    cfg = _cfg
    provider = cfg.provider
    if provider is None:
        trace = _modules.get("opentelemetry.trace")
        if trace is None:
            return None  # OpenTelemetry was never imported: nobody set a provider
        provider = getattr(trace, "_TRACER_PROVIDER", None)
        if provider is None:
            if not _env_provider:
                return None
            provider = trace.get_tracer_provider()
    if cfg.tracing is False:
        return None
    cached_provider, tracer = cfg.cache
    if provider is cached_provider:
        return tracer
    tracer = None
    if type(provider).__name__ not in _NO_PROVIDER:
        tracer = provider.get_tracer("openheim", __version__)
    cfg.cache = (provider, tracer)
    return tracer


def observed() -> bool:
    """Something may observe (a tracer provider, metrics or log context is on): code
    with a faster path that skips a hook takes it only when this is False."""
    return not _idle()


def _idle() -> bool:
    """Nothing can observe: no tracer provider (given, or set globally after importing
    OpenTelemetry), no metrics, no log context. The hooks' first check: in the common
    case it is all they cost."""
    if _cfg.provider is not None or _metrics.active is not None or _logs.context_on:
        return False
    trace = _modules.get(_OTEL)
    return trace is None or (getattr(trace, "_TRACER_PROVIDER", None) is None and not _env_provider)


def tracing() -> bool:
    """Whether openheim's spans are recorded now."""
    return _tracer() is not None


def _capture() -> bool:
    if _cfg.capture is not None:
        return _cfg.capture
    return os.environ.get(_CAPTURE_ENV, "").strip().lower() in ("true", "1", "yes")


def _otel() -> tuple[Any, Any]:
    from opentelemetry import context, trace

    return context, trace


# ---- propagation ----------------------------------------------------------------------


def inject() -> str | None:
    """The W3C ``traceparent`` of the current span, or None (no OpenTelemetry, no span)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def extract(traceparent: str | None, tracestate: str | None = None) -> Any:
    """An OpenTelemetry context whose parent is ``traceparent``, or None.

    None when ``traceparent`` is None, malformed (it is ignored, as the W3C
    spec asks) or OpenTelemetry is not installed. ``tracestate`` (the W3C
    header of that name) travels with it when given.
    """
    if not traceparent:
        return None
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = TraceContextTextMapPropagator().extract(carrier)
    _, trace = _otel()
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def remote_parent(traceparent: str | None, tracestate: str | None = None) -> Any:
    """The context that continues a caller's trace (W3C ``traceparent`` / ``tracestate``
    headers of a request), or None: when openheim is not tracing, the header is missing
    or malformed, or a span is current already (an instrumentation in front of the
    server, such as OpenTelemetry's ASGI or gRPC one, made the caller its parent)."""
    if not traceparent or _tracer() is None:
        return None
    trace = _modules.get(_OTEL)
    if trace is not None and trace.get_current_span().get_span_context().is_valid:
        return None
    return extract(traceparent, tracestate)


@contextlib.contextmanager
def attached(ctx: Any) -> Iterator[None]:
    """Make the OpenTelemetry context ``ctx`` current inside the block (a no-op if None)."""
    if ctx is None:
        yield
        return
    context, _ = _otel()
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def use_traceparent(traceparent: str | None, tracestate: str | None = None) -> Any:
    """Make ``traceparent`` the current trace context inside a ``with`` block (a no-op if
    None or malformed)."""
    return attached(extract(traceparent, tracestate))


# ---- spans ----------------------------------------------------------------------------


def _start(
    tracer: Any, name: str, kind: str, attributes: dict[str, Any], parent: Any = None
) -> Any:
    _, trace = _otel()
    return tracer.start_span(
        name, context=parent, kind=getattr(trace.SpanKind, kind), attributes=attributes
    )


def _fail(span: Any, exc: BaseException) -> str:
    """Mark ``span`` failed by ``exc``; returns the error type."""
    kind = type(exc).__name__
    if span is not None:
        _, trace = _otel()
        span.record_exception(exc)
        span.set_attribute("error.type", kind)
        span.set_status(trace.Status(trace.StatusCode.ERROR, _logs.redact(str(exc))[:500]))
    return kind


def _failed(exc: BaseException) -> bool:
    """An exception that is a failure (cancellation and generator exit are not)."""
    return isinstance(exc, Exception)


def _count_failure(exc: BaseException, span: Any, m: Any, where: str) -> bool:
    """If ``exc`` is a failure: mark ``span`` failed and count it in the error metric
    under ``where``, and return True; False for a cancellation (nothing recorded)."""
    if not _failed(exc):
        return False
    kind = _fail(span, exc)
    if m is not None:
        m.errors.labels(kind, where).inc()
    return True


class _Scope:
    """Makes ``span`` (and log ``fields``) current between ``enter`` and ``exit``."""

    __slots__ = ("ctx", "fields", "span", "tokens")

    def __init__(self, span: Any, fields: dict[str, str] | None) -> None:
        self.span = span
        self.fields = fields
        self.ctx = None
        if span is not None:
            _, trace = _otel()
            self.ctx = trace.set_span_in_context(span)
        self.tokens: tuple[Any, Any] = (None, None)

    def enter(self) -> None:
        t = None
        if self.ctx is not None:
            context, _ = _otel()
            t = context.attach(self.ctx)
        self.tokens = (t, _logs.push(self.fields) if self.fields else None)

    def exit(self) -> None:
        t, f = self.tokens
        if f is not None:
            _logs.pop(f)
        if t is not None:
            context, _ = _otel()
            context.detach(t)


async def _observe_iter(
    inner: AsyncIterator[T], scope: _Scope, seen: Callable[[T], None]
) -> AsyncGenerator[T, None]:
    """``inner``'s items, with ``scope`` current while ``inner`` runs; closes ``inner``."""
    try:
        while True:
            scope.enter()
            try:
                item = await inner.__anext__()
            except StopAsyncIteration:
                return
            finally:
                scope.exit()
            seen(item)
            yield item
    finally:
        close = getattr(inner, "aclose", None)
        if close is not None:
            scope.enter()
            try:
                await close()
            finally:
                scope.exit()


# ---- agent runs -----------------------------------------------------------------------


def _split(model: str) -> tuple[str, str]:
    provider, sep, name = model.partition(":")
    return (provider, name) if sep else ("", model)


def agent_run(
    events: AsyncGenerator[T, None], agent: str, state: Any, model: str
) -> AsyncGenerator[T, None]:
    """Observe one agent run: ``events`` is its event stream, ``state`` its RunState."""
    if _idle():
        return events
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None and not _logs.context_on:
        return events
    return _agent_run(events, tracer, m, agent, state, model)


async def _agent_run(
    events: AsyncGenerator[T, None], tracer: Any, m: Any, agent: str, state: Any, model: str
) -> AsyncGenerator[T, None]:
    run_id = state.run_id
    session = state.session
    fields = {"run_id": run_id, "agent": agent}
    if session is not None:
        fields["session"] = session
    span = None
    if tracer is not None:
        provider, name = _split(model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": name,
            "openheim.run.id": run_id,
        }
        if session is not None:
            attributes["gen_ai.conversation.id"] = session
        span = _start(tracer, f"invoke_agent {agent}", "INTERNAL", attributes)
    scope = _Scope(span, fields)
    status = ["error"]

    def seen(event: Any) -> None:
        result = getattr(event, "result", None)
        if result is not None:
            status[0] = getattr(result, "stop_reason", "final")

    error = None
    try:
        # aclosing: a consumer that stops early closes the inner run now, not at GC.
        async with contextlib.aclosing(_observe_iter(events, scope, seen)) as observed:
            async for event in observed:
                yield event
    except BaseException as exc:
        if _failed(exc):
            error = _fail(span, exc)
        else:
            status[0] = "cancelled"
        raise
    finally:
        if span is not None:
            usage = state.usage
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            span.set_attribute("openheim.run.status", status[0])
            span.end()
        if m is not None:
            m.agent_runs.labels(agent, status[0]).inc()
            if error is not None:
                m.errors.labels(error, "agent").inc()


# ---- model calls ----------------------------------------------------------------------


class _NotRecording:
    """Marks "inside a chat call" when only metrics are on."""

    def is_recording(self) -> bool:
        return False


_NOT_RECORDING = _NotRecording()
_chat_span: contextvars.ContextVar[Any] = contextvars.ContextVar("openheim_chat", default=None)


def _server_attributes(server: str | None) -> dict[str, Any]:
    if not server:
        return {}
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    out: dict[str, Any] = {}
    if parts.hostname:
        out["server.address"] = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else 0)
    if port:
        out["server.port"] = port
    return out


def _inside_chat(server: str | None) -> bool:
    """True when a chat call is being observed already (the agent loop's): annotate it."""
    current = _chat_span.get()
    if current is None:
        return False
    if server and current.is_recording():
        current.set_attributes(_server_attributes(server))
    return True


class _Chat:
    """One observed model call: its span, timing and metrics."""

    __slots__ = ("m", "model", "provider", "response", "span", "t0")

    def __init__(self, tracer: Any, m: Any, model: str, request: Any, server: str | None) -> None:
        self.m = m
        self.provider, self.model = _split(model)
        self.response: Any = None
        self.span = None
        if tracer is not None:
            attributes = self._attributes(request, server)
            self.span = _start(tracer, f"chat {self.model}", "CLIENT", attributes)
        self.t0 = _perf()

    def _attributes(self, request: Any, server: str | None) -> dict[str, Any]:
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }
        session = _logs.current_session()
        if session is not None:
            a["gen_ai.conversation.id"] = session
        s = getattr(request, "settings", None)
        if s is not None:
            for attr, key in (
                ("max_tokens", "gen_ai.request.max_tokens"),
                ("temperature", "gen_ai.request.temperature"),
                ("top_p", "gen_ai.request.top_p"),
                ("seed", "gen_ai.request.seed"),
                ("stop", "gen_ai.request.stop_sequences"),
            ):
                v = getattr(s, attr, None)
                if v is not None:
                    a[key] = v
        a.update(_server_attributes(server))
        if _capture():
            system, messages = _input_messages(getattr(request, "messages", ()))
            a["gen_ai.input.messages"] = json.dumps(messages, ensure_ascii=False)
            if system:
                a["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
            tools = getattr(request, "tools", None)
            if tools:
                a["gen_ai.tool.definitions"] = json.dumps(
                    [
                        {"type": "function", "name": t.name, "description": t.description}
                        for t in tools
                    ],
                    ensure_ascii=False,
                )
        return a

    def enter(self) -> contextvars.Token[Any]:
        return _chat_span.set(self.span if self.span is not None else _NOT_RECORDING)

    def seen(self, item: Any) -> None:
        if getattr(item, "finish_reason", None) is not None and hasattr(item, "usage"):
            self.response = item

    def end(self, exc: BaseException | None) -> None:
        seconds = _perf() - self.t0
        span = self.span
        error = ""
        if exc is not None and _failed(exc):
            error = _fail(span, exc)
        response = self.response
        usage = getattr(response, "usage", None)
        if span is not None:
            if response is not None:
                span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
                if response.model_name:
                    span.set_attribute("gen_ai.response.model", response.model_name)
                if usage is not None:
                    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                if _capture():
                    span.set_attribute(
                        "gen_ai.output.messages",
                        json.dumps(
                            [_message(response.message, response.finish_reason)],
                            ensure_ascii=False,
                        ),
                    )
            span.end()
        m = self.m
        if m is not None:
            labels = ("chat", self.provider, self.model)
            m.duration.labels(*labels, error).observe(seconds)
            if usage is not None:
                m.tokens.labels(*labels, "input").observe(usage.input_tokens)
                m.tokens.labels(*labels, "output").observe(usage.output_tokens)
            if error:
                m.errors.labels(error, "model").inc()


def chat(
    call: Awaitable[T], model: str, request: Any, *, server: str | None = None
) -> Awaitable[T]:
    """Observe a model call (``call`` gives the ModelResponse) of ``model`` ("provider:name").

    Inside a call observed already (the agent loop observes every model it
    calls; a connector observes its own calls too, for direct use), only
    ``server`` (the endpoint's URL) is added to the span.
    """
    if _idle() or _inside_chat(server):
        return call
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None:
        return call
    return _chat(call, _Chat(tracer, m, model, request, server))


async def _chat(call: Awaitable[T], obs: _Chat) -> T:
    marker = obs.enter()
    scope = _Scope(obs.span, None)
    scope.enter()
    try:
        response = await call
    except BaseException as exc:
        obs.end(exc)
        raise
    finally:
        scope.exit()
        _chat_span.reset(marker)
    obs.response = response
    obs.end(None)
    return response


def chat_stream(
    stream: AsyncIterator[T], model: str, request: Any, *, server: str | None = None
) -> AsyncIterator[T]:
    """Observe a streamed model call: ``stream`` ends with the whole ModelResponse."""
    if _idle() or _inside_chat(server):
        return stream
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None:
        return stream
    return _chat_stream(stream, _Chat(tracer, m, model, request, server))


class _ChatScope(_Scope):
    __slots__ = ("marker", "obs")

    def __init__(self, obs: _Chat) -> None:
        super().__init__(obs.span, None)
        self.obs = obs
        self.marker: Any = None

    def enter(self) -> None:
        super().enter()
        self.marker = self.obs.enter()

    def exit(self) -> None:
        _chat_span.reset(self.marker)
        super().exit()


async def _chat_stream(stream: AsyncIterator[T], obs: _Chat) -> AsyncIterator[T]:
    error: BaseException | None = None
    try:
        async with contextlib.aclosing(_observe_iter(stream, _ChatScope(obs), obs.seen)) as items:
            async for item in items:
                yield item
    except BaseException as exc:
        error = exc
        raise
    finally:
        obs.end(error)


def _parts(message: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.content}
        )
        return parts
    if message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls:
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
    return parts


def _message(message: Any, finish_reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "parts": _parts(message)}
    if finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out


def _input_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "system":
            if msg.content:
                system.append({"type": "text", "content": msg.content})
        else:
            out.append(_message(msg))
    return system, out


# ---- tool calls -----------------------------------------------------------------------


def execute_tool(
    call: Awaitable[T], tool: str, call_id: str, arguments: Any, description: str = ""
) -> Awaitable[T]:
    """Observe one tool call; ``call`` gives the tool's result: a Message (the agent loop),
    or the plain value a workflow's tool node or map item returned."""
    if _idle():
        return call
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None:
        return call
    return _execute_tool(call, tracer, m, tool, call_id, arguments, description)


async def _execute_tool(
    call: Awaitable[T],
    tracer: Any,
    m: Any,
    tool: str,
    call_id: str,
    arguments: Any,
    description: str,
) -> T:
    span = None
    if tracer is not None:
        a: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        if description:
            a["gen_ai.tool.description"] = description
        if _capture():
            a["gen_ai.tool.call.arguments"] = json.dumps(arguments, ensure_ascii=False, default=str)
        span = _start(tracer, f"execute_tool {tool}", "INTERNAL", a)
    scope = _Scope(span, None)
    scope.enter()
    outcome = "error"
    try:
        message = await call
    except BaseException as exc:
        if not _count_failure(exc, span, m, "tool"):
            outcome = "cancelled"
        raise
    else:
        is_error = bool(getattr(message, "is_error", False))
        outcome = "error" if is_error else "ok"
        if span is not None:
            if is_error:
                _, trace = _otel()
                span.set_attribute("error.type", "tool_error")
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            if _capture():
                span.set_attribute("gen_ai.tool.call.result", _result_text(message))
        if is_error and m is not None:
            m.errors.labels("tool_error", "tool").inc()
        return message
    finally:
        scope.exit()
        if span is not None:
            span.end()
        if m is not None:
            m.tool_calls.labels(tool, outcome).inc()


def _result_text(value: Any) -> str:
    """A tool's result for the span: a Message's content (the agent loop's calls), else the
    value itself as text (a workflow's tool nodes and map items return plain values)."""
    if hasattr(value, "is_error") and hasattr(value, "tool_call_id"):
        return getattr(value, "content", "") or ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# ---- workflows ------------------------------------------------------------------------


def workflow_run(run: Coroutine[Any, Any, T], workflow: str, run_id: str) -> Coroutine[Any, Any, T]:
    """Observe one drive of a workflow run (``run`` returns its WorkflowResult)."""
    if _idle():
        return run
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None and not _logs.context_on:
        return run
    return _workflow_run(run, tracer, m, workflow, run_id)


async def _workflow_run(
    run: Coroutine[Any, Any, T], tracer: Any, m: Any, workflow: str, run_id: str
) -> T:
    span = None
    if tracer is not None:
        a = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": workflow,
            "openheim.run.id": run_id,
        }
        span = _start(tracer, f"invoke_workflow {workflow}", "INTERNAL", a)
    scope = _Scope(span, {"run_id": run_id, "workflow": workflow})
    scope.enter()
    status = "failed"
    try:
        result = await run
        status = str(getattr(result, "status", "done"))
        return result
    except BaseException as exc:
        if not _count_failure(exc, span, m, "workflow"):
            status = "cancelled"
        raise
    finally:
        scope.exit()
        if span is not None:
            span.set_attribute("openheim.run.status", status)
            span.end()
        if m is not None:
            m.workflow_runs.labels(workflow, status).inc()


def workflow_step(
    fn: Callable[[Any, str], Coroutine[Any, Any, None]],
) -> Callable[[Any, str], Awaitable[None]]:
    """Decorate the runner's ``_run_node(ctx, name)``: one span and count per step.

    ``ctx`` is the runner's Ctx (``ctx.graph.name``, ``ctx.graph.nodes``,
    ``ctx.view.run_id``, ``ctx.view.step``). Returns the undecorated coroutine
    when nothing observes.
    """

    def step(ctx: Any, name: str) -> Awaitable[None]:
        if _idle():
            return fn(ctx, name)
        coro = fn(ctx, name)
        tracer = _tracer()
        m = _metrics.active
        if tracer is None and m is None and not _logs.context_on:
            return coro
        return _step(coro, tracer, m, ctx.graph, ctx.view, name)

    step.__wrapped__ = fn  # type: ignore[attr-defined]
    step.__name__ = fn.__name__
    step.__doc__ = fn.__doc__
    return step


def batch_step(
    coro: Coroutine[Any, Any, None],
    graph: Any,
    view: Any,
    name: str,
    task: str,
    traceparent: str | None,
) -> Awaitable[None]:
    """Observe one task a batch worker runs (node ``name`` of ``graph``, task id ``task``
    of the run ``view``): a ``step {name}`` span whose parent is the trace context the
    task carried through the queue (``traceparent``, the submitter's span), and the
    step count. Returns ``coro`` itself when nothing observes."""
    if _idle():
        return coro
    tracer = _tracer()
    m = _metrics.active
    if tracer is None and m is None and not _logs.context_on:
        return coro
    parent = extract(traceparent) if tracer is not None else None
    fields = {"run_id": view.run_id, "workflow": graph.name}
    return _step(coro, tracer, m, graph, view, name, parent, fields, task)


async def _step(
    coro: Coroutine[Any, Any, None],
    tracer: Any,
    m: Any,
    graph: Any,
    view: Any,
    name: str,
    parent: Any = None,
    fields: dict[str, str] | None = None,
    task: str | None = None,
) -> None:
    workflow = graph.name
    span = None
    if tracer is not None:
        node = graph.nodes.get(name)
        a = {
            "openheim.workflow.name": workflow,
            "openheim.run.id": view.run_id,
            "openheim.step.name": name,
            "openheim.step.kind": getattr(node, "kind", ""),
            "openheim.step.superstep": view.step,
        }
        if task is not None:
            a["openheim.step.task"] = task  # a batch task (one item of a map: "<step>:<node>#i")
        span = _start(tracer, f"step {name}", "INTERNAL", a, parent)
    scope = _Scope(span, {**(fields or {}), "step": name})
    scope.enter()
    outcome = "error"
    try:
        await coro
        outcome = "ok"
    except BaseException as exc:
        if not _count_failure(exc, span, m, "step"):
            outcome = "cancelled"
        raise
    finally:
        scope.exit()
        if span is not None:
            span.end()
        if m is not None:
            m.steps.labels(workflow, outcome).inc()


# ---- actor messages -------------------------------------------------------------------


class Carried:
    """An actor message with the trace context it was sent in (``carry`` makes them)."""

    __slots__ = ("msg", "traceparent")

    def __init__(self, msg: Any, traceparent: str | None) -> None:
        self.msg = msg
        self.traceparent = traceparent

    def __repr__(self) -> str:
        return f"Carried({self.msg!r}, {self.traceparent!r})"


def carry(msg: Any) -> Carried:
    """``msg`` with the current trace context, for an actor's mailbox."""
    return Carried(msg, inject())


def deliver(handle: Callable[[Any], Any], actor_id: str, kind: str | None, m: Carried) -> Any:
    """Handle a carried message: ``handle(m.msg)`` inside a ``process {kind}`` span.

    ``handle`` is the actor's delivery function: it returns None (done) or an
    awaitable to await (the handler waits on something); so does this.
    """
    tracer = _tracer()
    if tracer is None:
        return handle(m.msg)
    inner = m.msg
    ask = hasattr(inner, "fut")  # the runtime's ask envelope (msg, fut)
    msg = inner.msg if ask else inner
    a: dict[str, Any] = {
        "messaging.system": "openheim",
        "messaging.operation.type": "process",
        "messaging.destination.name": kind or actor_id,
        "openheim.actor.id": actor_id,
        "openheim.message.type": type(msg).__name__,
        "openheim.actor.ask": ask,
    }
    span = _start(tracer, f"process {kind or 'actor'}", "CONSUMER", a, extract(m.traceparent))
    scope = _Scope(span, {"actor": actor_id})
    scope.enter()
    try:
        res = handle(inner)
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    finally:
        scope.exit()
    if res is None:
        span.end()
        return None
    return _deliver_rest(res, scope)


async def _deliver_rest(res: Awaitable[Any], scope: _Scope) -> Any:
    scope.enter()
    try:
        return await res
    except BaseException as exc:
        if _failed(exc):
            _fail(scope.span, exc)
        raise
    finally:
        scope.exit()
        scope.span.end()
