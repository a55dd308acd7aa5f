"""JSON on the wire: the encoder every route uses and the OpenAI-style error body."""

from __future__ import annotations

from typing import Any

import msgspec


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


json_encode = msgspec.json.Encoder(enc_hook=_jsonable).encode


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``, the shape of every error answer."""
    return json_encode({"error": {"message": message, "type": kind, "param": param, "code": code}})
