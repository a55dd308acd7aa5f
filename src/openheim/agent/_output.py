"""Structured output: ``output_type`` to a JSON schema, and the final text to a value.

The schema goes to the model as ``ModelRequest.output_schema`` (providers
turn it into their structured-output mode; the local decoder constrains
decoding with it), and the model's final assistant text is the JSON document.
Provider structured-output modes want an object at the root, so a non-object
type (``int``, ``list[str]``, ...) is wrapped as ``{"result": <value>}``; a bare
value is accepted too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from openheim.errors import ConfigError
from openheim.tools._schema import describe_validation_error, strip_titles

__all__ = ["InvalidOutput", "OutputSpec"]

_WRAP_KEY = "result"


class InvalidOutput(Exception):
    """The final text does not validate; the message is for the model."""


class OutputSpec:
    """How a run turns its final text into ``output``."""

    __slots__ = ("_adapter", "name", "schema", "wrapped")

    def __init__(self, output_type: Any) -> None:
        self._adapter: Any = None
        self.schema: dict[str, Any] | None = None
        self.name = "final_result"
        self.wrapped = False
        if output_type is None or output_type is str:
            return
        from pydantic import TypeAdapter

        try:
            self._adapter = TypeAdapter(output_type)
            schema = strip_titles(self._adapter.json_schema())
        except Exception as exc:
            raise ConfigError(
                f"output_type {output_type!r} cannot be used for structured output: {exc}. "
                "Use a pydantic model, a dataclass, a TypedDict or a JSON-compatible type."
            ) from exc
        name = getattr(output_type, "__name__", None)
        if isinstance(name, str) and name.isidentifier():
            self.name = name
        if schema.get("type") != "object":
            defs = schema.pop("$defs", None)
            schema = {
                "type": "object",
                "properties": {_WRAP_KEY: schema},
                "required": [_WRAP_KEY],
                "additionalProperties": False,
            }
            if defs is not None:
                schema["$defs"] = defs
            self.wrapped = True
        self.schema = schema

    def parse(self, text: str | None) -> Any:
        """The validated output, or InvalidOutput with a message for the model."""
        if self._adapter is None:
            return text or ""
        body = _strip_fences(text or "")
        if not body:
            raise InvalidOutput("the answer was empty; a JSON document was expected")
        from pydantic import ValidationError

        try:
            if not self.wrapped:
                return self._adapter.validate_json(body)
            try:
                value = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise InvalidOutput(f"the answer is not valid JSON: {exc}") from None
            if isinstance(value, dict) and set(value) == {_WRAP_KEY}:
                value = value[_WRAP_KEY]
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidOutput(describe_validation_error(exc)) from None


def _strip_fences(text: str) -> str:
    """The JSON inside a Markdown code fence, which models often add anyway."""
    body = text.strip()
    if body.startswith("```"):
        newline = body.find("\n")
        if newline > 0 and body.endswith("```"):
            body = body[newline + 1 : -3].strip()
    return body
