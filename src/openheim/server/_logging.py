"""The server's log: lines on stderr, as text or as one JSON object per line.

Request records carry ``method``, ``path``, ``status``, ``duration_ms``,
``tenant`` and ``run_id`` as fields (top-level keys in JSON); records logged
while a run, workflow step or actor message is handled carry its ``run_id``,
``session``, ``agent``, ``workflow``, ``step``, ``actor`` and the OpenTelemetry
``trace_id`` / ``span_id`` (:class:`openheim.telemetry.LogContext`). Every
line, text or JSON, goes through :func:`openheim.telemetry.redact`: API keys
and ``Authorization`` values never reach the log.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from openheim import telemetry

# Request fields, then the run context (LogContext): run_id is in both.
_REQUEST = ("method", "path", "status", "duration_ms", "tenant", "run_id")
FIELDS = (*_REQUEST, *(f for f in telemetry.LOG_FIELDS if f not in _REQUEST))
LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return telemetry.redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    """The text format, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return telemetry.redact(super().format(record))


def setup(level: str = "info", fmt: str = "text") -> None:
    """Send the ``openheim`` loggers to stderr at ``level`` in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(telemetry.LogContext())
    telemetry.enable_log_context()
    logger = logging.getLogger("openheim")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
