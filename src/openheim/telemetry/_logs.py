"""Log context (run, session, step, trace ids on every record) and secret redaction.

The hooks of :mod:`openheim.telemetry._trace` keep the fields of what is running
now (``run_id``, ``session``, ``agent``, ``workflow``, ``step``) in a context
variable while a run or step executes; :class:`LogContext`, a logging filter,
copies them onto each record, with the OpenTelemetry ``trace_id`` and
``span_id`` of the current span.

:func:`redact` takes API keys and credentials out of text: ``Authorization``
and ``Proxy-Authorization`` values, ``Bearer`` tokens, ``api_key=``-style
assignments (``x-api-key``, ``api_key``, ``access_token``, ``password``, ...,
quoted or not, JSON-escaped or not), well-known key shapes (``sk-...``,
``AKIA...``, ``ghp_...``, ``xox.-...``) and every value given to
:func:`register_secret` (the model connectors register their keys). It
replaces only the secret itself with ``***``, never a quote or a delimiter, so
a JSON line stays JSON.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from typing import Any

__all__ = [
    "FIELDS",
    "LogContext",
    "enable_log_context",
    "log_fields",
    "redact",
    "register_secret",
]

# The context fields a record may carry (top-level keys of a JSON log line).
FIELDS = ("run_id", "session", "agent", "workflow", "step", "actor", "trace_id", "span_id")

# Set by the log set-up of the server and the worker: runs keep their fields for the
# LogContext filter even when nothing traces or measures them.
context_on = False


def enable_log_context() -> None:
    """Keep run, session and step fields for :class:`LogContext` even when nothing traces."""
    global context_on
    context_on = True


_fields: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "openheim_log_fields", default=None
)


def log_fields() -> dict[str, str]:
    """The context fields of what is running now (a copy)."""
    current = _fields.get()
    return dict(current) if current else {}


def push(fields: dict[str, str]) -> contextvars.Token[dict[str, str] | None]:
    """Set ``fields`` over the current ones; give the token to :func:`pop`."""
    current = _fields.get()
    return _fields.set({**current, **fields} if current else fields)


def pop(token: contextvars.Token[dict[str, str] | None]) -> None:
    _fields.reset(token)


def current_session() -> str | None:
    current = _fields.get()
    return current.get("session") if current else None


class LogContext(logging.Filter):
    """Adds the context fields and the current trace and span ids to each record.

    A field the record already has (``logger.info(..., extra={"run_id": ...})``)
    is kept. Always returns True: it annotates, it does not filter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        d = record.__dict__
        current = _fields.get()
        if current:
            for k, v in current.items():
                if k not in d:
                    d[k] = v
        if "trace_id" not in d:
            trace = sys.modules.get("opentelemetry.trace")
            if trace is not None:
                sc = trace.get_current_span().get_span_context()
                if sc.is_valid:
                    d["trace_id"] = format(sc.trace_id, "032x")
                    d["span_id"] = format(sc.span_id, "016x")
        return True


# ---- redaction ------------------------------------------------------------------------

_Q = r"(?:\\?[\"'])?"  # an optional quote, JSON-escaped or not
_VALUE = r"[^\s\"'\\,;&}\]]+"
_AUTH = re.compile(
    r"(?i)\b((?:proxy-)?authorization" + _Q + r"\s*[:=]\s*" + _Q + r")"
    r"((?:bearer|basic|token|digest)\s+)?(" + _VALUE + r")"
)
_ASSIGN = re.compile(
    r"(?i)\b((?:x-api-key|x-goog-api-key|api[-_]?key|apikey|access[-_]?token|refresh[-_]?token|"
    r"id[-_]?token|auth[-_]?token|client[-_]?secret|secret[-_]?key|private[-_]?key|password|"
    r"passwd)" + _Q + r"\s*[:=]\s*" + _Q + r")(" + _VALUE + r")"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]{6,}=*)")
_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z\-_]{35})"
)
_secrets: set[str] = set()
_MIN_SECRET = 8  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears in a log line from now on (8+ characters)."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def _auth(m: re.Match[str]) -> str:
    return m.group(1) + (m.group(2) or "") + "***"


def redact(text: str) -> str:
    """``text`` without API keys, tokens and credentials (see the module docstring)."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _AUTH.sub(_auth, text)
    text = _ASSIGN.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    return _SHAPES.sub("***", text)


def redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value
