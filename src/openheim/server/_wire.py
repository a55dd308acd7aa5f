"""What the HTTP and gRPC surfaces share on the wire: JSON encoding and body decoding,
the error shape and the one mapping from an exception to it, and session id rules."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, TypeVar

import msgspec

from openheim.errors import (
    AgentError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    ModelError,
    OpenheimError,
    RateLimitError,
)

T = TypeVar("T")


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


json_encode = msgspec.json.Encoder(enc_hook=_jsonable).encode


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``, the shape of every error answer."""
    return json_encode({"error": {"message": message, "type": kind, "param": param, "code": code}})


def shown(value: str, limit: int = 64) -> str:
    """``value`` quoted for an error message: escaped (repr) and cut to ``limit`` characters."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


# ---- request bodies ---------------------------------------------------------------------


class BadRequest(Exception):
    """The client sent something unusable: a 400 (INVALID_ARGUMENT in gRPC)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def decode_body(body: bytes, kind: type[T]) -> T:
    """``body`` (JSON) decoded into ``kind``; every way it can fail is a :class:`BadRequest`."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("invalid request body: it is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("invalid request body: JSON nested too deeply") from None


# ---- session ids ------------------------------------------------------------------------

_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SESSION_ID_RULE = "a session id is 1 to 128 characters from A-Z a-z 0-9 . _ : -"


def check_session_id(session: str) -> None:
    """Raise :class:`BadRequest` (param ``session``) unless ``session`` is a valid id."""
    if _SESSION_ID.fullmatch(session) is None:
        raise BadRequest(f"invalid session id: {SESSION_ID_RULE}", "session")


# ---- exceptions to answers --------------------------------------------------------------


class WireError(NamedTuple):
    """How an exception is reported: HTTP status, OpenAI error ``type``, exception name,
    message, and a ``code`` when there is one."""

    status: int
    kind: str
    name: str
    message: str
    code: str | None = None

    def body(self) -> bytes:
        return error_body(self.message, self.kind, None, self.code)

    def event(self) -> dict[str, Any]:
        """The ``data`` of an ``error`` event in a run's stream."""
        return {"error": {"type": self.name, "message": self.message}}


def describe_error(exc: BaseException) -> WireError:
    """The one mapping from an exception to what the client is told.

    Errors that are the client's (a refused or too long request, a rate limit)
    are 4xx; a run the agent could not finish is 422; a failing upstream model is
    502; anything else, including exceptions that are not ``OpenheimError``
    (bugs), is a 500 whose message names only the exception type: the
    traceback goes to the server log, never to the client.
    """
    name = type(exc).__name__
    if isinstance(exc, BadRequest):
        return WireError(400, "invalid_request_error", name, str(exc))
    if not isinstance(exc, OpenheimError):
        return WireError(
            500, "server_error", name, f"internal error ({name}); the server log has the details"
        )
    message = str(exc)
    if isinstance(exc, ContextLengthError):
        return WireError(400, "invalid_request_error", name, message, "context_length_exceeded")
    if isinstance(exc, BadRequestError):
        return WireError(400, "invalid_request_error", name, message)
    if isinstance(exc, RateLimitError):
        return WireError(429, "rate_limit_error", name, message)
    if isinstance(exc, ModelError):
        return WireError(502, "model_error", name, message)
    if isinstance(exc, AgentError):
        return WireError(422, "agent_error", name, message)
    if isinstance(exc, ConfigError):
        return WireError(500, "server_error", name, message)
    return WireError(500, "server_error", name, message)
