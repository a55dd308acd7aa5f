"""Traces, metrics and log context: what openheim tells an operator about itself.

**Traces.** OpenTelemetry spans per the GenAI semantic conventions:
``invoke_agent {agent}`` for an agent run, ``chat {model}`` for a model call,
``execute_tool {tool}`` for a tool call, ``invoke_workflow {workflow}`` for a
workflow run, ``step {node}`` for each of its steps and ``process {actor kind}``
for each actor message. Only ``opentelemetry-api`` is needed to emit (the
``otel`` extra); spans go wherever the application's tracer provider sends
them, and nowhere if it has none. Until the application has imported
OpenTelemetry *and* set a tracer provider, every hook returns at once (the
cost is measured by ``benches/bench_telemetry.py``). Message contents (the
prompt, the answer, tool arguments and results) are recorded only when the
application opts in: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``
or ``configure(capture_content=True)``.

**Trace context** crosses process and actor boundaries as a W3C ``traceparent``
string: :func:`inject` gives the current one (for a queue message), and
:func:`use_traceparent` makes one current while a worker handles it. Actor
messages carry theirs automatically when the runtime was started with tracing on.
The server continues a client's trace: the ``traceparent`` (and ``tracestate``)
header of an HTTP request or the gRPC metadata of a call makes the client's span
the parent of the run it starts (:func:`remote_parent`).

**Metrics** (Prometheus, ``prometheus-client``): off until something serves
them, the HTTP server's ``/metrics`` or :func:`serve_metrics` on a port of its
own (``openheim worker --metrics-port``), or ``configure(metrics=True)``. See
:mod:`openheim.telemetry._metrics` for the list.

**Logs**: :class:`LogContext` adds the current run, session, workflow step and
trace ids to every log record; :func:`redact` removes API keys and
``Authorization`` values from any text (the server's log formatters apply it
to every line).
"""

from __future__ import annotations

from openheim.telemetry._logs import FIELDS as LOG_FIELDS
from openheim.telemetry._logs import (
    LogContext,
    enable_log_context,
    log_fields,
    redact,
    register_secret,
)
from openheim.telemetry._metrics import (
    enable_metrics,
    metrics_enabled,
    record_checkpoint,
    record_queue,
    render_metrics,
    serve_metrics,
    watch_runtime,
)
from openheim.telemetry._trace import (
    Carried,
    agent_run,
    attached,
    batch_step,
    carry,
    chat,
    chat_stream,
    configure,
    deliver,
    execute_tool,
    extract,
    inject,
    observed,
    remote_parent,
    tracing,
    use_traceparent,
    workflow_run,
    workflow_step,
)

__all__ = [
    "LOG_FIELDS",
    "Carried",
    "LogContext",
    "agent_run",
    "attached",
    "batch_step",
    "carry",
    "chat",
    "chat_stream",
    "configure",
    "deliver",
    "enable_log_context",
    "enable_metrics",
    "execute_tool",
    "extract",
    "inject",
    "log_fields",
    "metrics_enabled",
    "observed",
    "record_checkpoint",
    "record_queue",
    "redact",
    "register_secret",
    "remote_parent",
    "render_metrics",
    "serve_metrics",
    "tracing",
    "use_traceparent",
    "watch_runtime",
    "workflow_run",
    "workflow_step",
]
