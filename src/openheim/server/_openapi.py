"""The OpenAPI 3.0 document served at ``/openapi.json`` (written by hand, checked by tests)."""

from __future__ import annotations

import copy
import functools
from typing import Any

from openheim._version import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Server-sent events: each event's data is JSON (an agent event or a completion chunk) or
# the literal [DONE], so its schema is left open.
_EVENTS: dict[str, Any] = {"schema": {}}


def _sse(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/event-stream": _EVENTS}}


_ERR = _ref("Error")
_AUTH_ERRORS = {
    "401": _json(_ERR, "missing or unknown API key"),
    "413": _json(_ERR, "request body too large"),
}
_NULL_STR = {"type": "string", "nullable": True}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _NULL_STR,
                    "code": _NULL_STR,
                },
            }
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {"type": "string", "nullable": True},
            "tool_calls": {"type": "array", "items": _ref("ToolCall")},
            "tool_call_id": {"type": "string"},
            "name": {"type": "string"},
        },
    },
    "ToolCall": {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            },
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {
                "type": "string",
                "description": "a configured agent's name, or <provider>:<model> for a [providers.NAME]",
            },
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "tools": {
                "type": "array",
                "description": "when given, tool calls are returned to the client to run",
                "items": {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"type": "string", "enum": ["function"]},
                        "function": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "description": {"type": "string"},
                                "parameters": {"type": "object"},
                            },
                        },
                    },
                },
            },
            "tool_choice": {"type": "string", "enum": ["auto", "none", "required"]},
            "response_format": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                    "json_schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "schema": {"type": "object"},
                            "strict": {"type": "boolean"},
                        },
                    },
                },
            },
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "max_tokens": {"type": "integer"},
            "seed": {"type": "integer"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": _ref("ChatMessage"),
                        "finish_reason": {"type": "string"},
                    },
                },
            },
            "usage": _ref("CompletionUsage"),
        },
    },
    "CompletionUsage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
    "RunRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"type": "string"},
            "session": {"type": "string", "nullable": True},
            "stream": {"type": "boolean", "description": "answer as SSE agent events"},
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
            "requests": {"type": "integer"},
        },
    },
    "Run": {
        "type": "object",
        "required": ["status", "run_id"],
        "properties": {
            "status": {"type": "string", "enum": ["running", "finished", "failed"]},
            "run_id": {"type": "string"},
            "output": {"nullable": True},
            "stop_reason": {"type": "string", "enum": ["final", "approval_required"]},
            "usage": _ref("Usage"),
            "session": _NULL_STR,
            "pending": {"type": "array", "items": {"type": "object"}},
            "error": {"type": "object", "nullable": True},
        },
    },
    "Session": {
        "type": "object",
        "required": ["id", "messages", "usage"],
        "properties": {
            "id": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "object"}},
            "usage": _ref("Usage"),
        },
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": {"type": "string"}}},
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if public:
        op["security"] = []
    else:
        op["responses"] = {**_AUTH_ERRORS, **responses}
    return op


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_NOT_FOUND = {"404": _json(_ERR, "not found, or owned by another tenant")}
_BUSY = {"429": _json(_ERR, "too many concurrent runs for the tenant (see Retry-After)")}


@functools.lru_cache(maxsize=4)
def openapi_document(agents: tuple[str, ...] = (), providers: bool = False) -> dict[str, Any]:
    """The document; ``agents`` (the configured names) become the enum of agent names.

    With ``providers`` configured, ``model`` may also be ``"<provider>:<model>"``, so
    it is left a free string there.
    """
    schemas = copy.deepcopy(_SCHEMAS)
    name_param = _path("name", "agent name")
    if agents:
        if not providers:
            schemas["ChatCompletionRequest"]["properties"]["model"]["enum"] = list(agents)
        name_param["schema"]["enum"] = list(agents)
    completion_ok = {
        "description": "the completion (JSON), or SSE chunks ending with `data: [DONE]` when stream=true",
        "content": {
            "application/json": {"schema": _ref("ChatCompletion")},
            "text/event-stream": _EVENTS,
        },
    }
    run_ok = {
        "description": "the finished run (JSON), or its events as SSE when stream=true",
        "content": {
            "application/json": {"schema": _ref("Run")},
            "text/event-stream": _EVENTS,
        },
    }
    paths = {
        "/healthz": {"get": _op("Liveness", {"200": _json(_ref("Status"), "alive")}, public=True)},
        "/readyz": {
            "get": _op(
                "Readiness",
                {
                    "200": _json(_ref("Status"), "ready"),
                    "503": _json(_ref("Status"), "shutting down"),
                },
                public=True,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                public=True,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document", {"200": _json({"type": "object"}, "OpenAPI 3.0")}, public=True
            )
        },
        "/v1/models": {
            "get": _op(
                "Configured agents, as OpenAI models", {"200": _json(_ref("ModelList"), "models")}
            )
        },
        "/v1/chat/completions": {
            "post": _op(
                "OpenAI-compatible chat completion",
                {
                    "200": completion_ok,
                    "400": _json(_ERR, "invalid request"),
                    **_NOT_FOUND,
                    **_BUSY,
                    "502": _json(_ERR, "the model or agent failed"),
                    "503": _json(_ERR, "shutting down"),
                },
                body="ChatCompletionRequest",
            )
        },
        "/v1/agents/{name}/runs": {
            "post": _op(
                "Run an agent",
                {
                    "200": run_ok,
                    "400": _json(_ERR, "invalid request"),
                    **_NOT_FOUND,
                    **_BUSY,
                    "503": _json(_ERR, "shutting down"),
                },
                body="RunRequest",
                params=[name_param],
            )
        },
        "/v1/runs/{run_id}": {
            "get": _op(
                "A run's status",
                {"200": _json(_ref("Run"), "the run"), **_NOT_FOUND},
                params=[_path("run_id", "run id")],
            )
        },
        "/v1/runs/{run_id}/events": {
            "get": _op(
                "A run's events as SSE, replayed after Last-Event-ID",
                {
                    "200": _sse("agent events"),
                    "400": _json(_ERR, "bad Last-Event-ID"),
                    **_NOT_FOUND,
                },
                params=[
                    _path("run_id", "run id"),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/v1/sessions": {
            "get": _op("The tenant's sessions", {"200": _json(_ref("SessionList"), "session ids")})
        },
        "/v1/sessions/{session_id}": {
            "get": _op(
                "A session's messages and usage",
                {"200": _json(_ref("Session"), "the session"), **_NOT_FOUND},
                params=[_path("session_id", "session id")],
            ),
            "delete": _op(
                "Delete a session",
                {"204": {"description": "deleted"}, **_NOT_FOUND},
                params=[_path("session_id", "session id")],
            ),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "openheim", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
