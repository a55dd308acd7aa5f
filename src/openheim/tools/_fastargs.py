"""A fast path for tools with plain JSON parameters (no pydantic import).

Most tools take strings, numbers, booleans, lists and dicts of those,
optionals and literals. For those, the JSON schema is written here (the same
document pydantic generates, which a test checks) and arguments are checked
with a msgspec Struct in *strict* mode. Anything strict mode refuses (a
``"3"`` for an int, a missing or unknown argument, ...) is handed to the
pydantic validator, built on first need, so the accepted values, the
coercions and the error messages are exactly pydantic's; strict msgspec only
accepts inputs that pydantic accepts with the same result (a test checks
that too). Importing pydantic costs more than the rest of a first run, which
is why this path exists.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

import msgspec

__all__ = ["fast_arguments", "fast_schema"]

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}
_UNION_TYPES: tuple[Any, ...] = (Union, types.UnionType)


def fast_schema(annotation: Any) -> dict[str, Any] | None:
    """pydantic's JSON schema for a plain JSON type; None if not plain."""
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        return dict(scalar)
    if annotation is Any:
        return {}
    if annotation is list:
        return {"items": {}, "type": "array"}
    if annotation is dict:
        return {"additionalProperties": True, "type": "object"}
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is list and len(args) == 1:
        items = fast_schema(args[0])
        return None if items is None else {"items": items, "type": "array"}
    if origin is dict and len(args) == 2 and args[0] is str:
        if args[1] is Any:
            return {"additionalProperties": True, "type": "object"}
        values = fast_schema(args[1])
        return None if values is None else {"additionalProperties": values, "type": "object"}
    if origin in _UNION_TYPES:
        options = [fast_schema(a) for a in args]
        if any(o is None for o in options):
            return None
        return {"anyOf": options}
    if origin is Literal:
        return _literal_schema(args)
    return None


def _literal_schema(values: tuple[Any, ...]) -> dict[str, Any] | None:
    kinds = {type(v) for v in values}
    if len(kinds) != 1 or not kinds <= {str, int, bool}:
        return None  # mixed or None-bearing literals: leave them to pydantic
    schema: dict[str, Any] = {"type": _SCALARS[kinds.pop()]["type"]}
    if len(values) == 1:
        schema["const"] = values[0]
    else:
        schema["enum"] = list(values)
    return schema


def fast_arguments(
    fields: list[tuple[str, Any, Any, str | None]],  # name, annotation, default, description
    empty: Any,  # the default of a required parameter
    slow: Callable[[], Callable[[Any], dict[str, Any]]],
) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]]] | None:
    """(schema, validate) for plain parameters, or None to use pydantic.

    ``slow()`` builds the pydantic validator; it is called the first time
    strict msgspec refuses some arguments.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    struct_fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, annotation, default, description in fields:
        schema = fast_schema(annotation)
        if schema is None:
            return None
        if default is empty:
            required.append(name)
            struct_fields.append((name, annotation))
        else:
            if default is not None and type(default) not in (str, int, float, bool):
                return None
            schema["default"] = default
            struct_fields.append((name, annotation, default))
        if description:
            schema["description"] = description
        properties[name] = schema
    try:
        struct = msgspec.defstruct("Args", struct_fields, kw_only=True, forbid_unknown_fields=True)
        # msgspec checks unions (e.g. int | float is ambiguous to it) on first use.
        msgspec.convert({}, struct)
    except TypeError:
        return None
    except msgspec.ValidationError:
        pass
    full: dict[str, Any] = {
        "additionalProperties": False,
        "properties": properties,
        "type": "object",
    }
    if required:
        full["required"] = required

    convert = msgspec.convert
    asdict = msgspec.structs.asdict
    invalid = msgspec.ValidationError
    fallback: list[Callable[[Any], dict[str, Any]]] = []

    def validate(arguments: Any) -> dict[str, Any]:
        try:
            return asdict(convert(arguments, struct))
        except invalid:
            if not fallback:
                fallback.append(slow())
            return fallback[0](arguments)

    return full, validate
