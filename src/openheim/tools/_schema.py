"""A function's signature to a JSON schema and an argument validator (pydantic).

The parameters become a ``TypedDict`` (a TypedDict, not a model, so parameter
names such as ``json`` or ``schema`` cannot clash with model attributes) with
``extra="forbid"``; pydantic's ``TypeAdapter`` gives the JSON schema and the
validator, built once per tool. Defaults are filled in by the validator, so
the function is called with exactly the validated dict. Plain JSON parameters
take the equivalent fast path of ``_fastargs`` (pydantic only on bad input).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

from openheim.errors import ToolDefinitionError
from openheim.tools._context import RunContext
from openheim.tools._fastargs import fast_arguments

__all__ = ["Arguments", "build_arguments", "describe_validation_error", "strip_titles"]


class Arguments:
    """A tool's parameters: JSON schema, validator and how to call the function."""

    __slots__ = ("positional", "schema", "takes_ctx", "validate")

    def __init__(
        self,
        schema: dict[str, Any],
        validate: Callable[[Any], dict[str, Any]],
        takes_ctx: bool,
        positional: tuple[str, ...],
    ) -> None:
        self.schema = schema
        self.validate = validate
        self.takes_ctx = takes_ctx
        # Positional-only parameters, passed positionally (rare; usually empty).
        self.positional = positional


def _is_run_context(annotation: Any) -> bool:
    return annotation is RunContext or get_origin(annotation) is RunContext


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(getattr(meta, "description", None) for meta in get_args(annotation)[1:])


def build_arguments(
    function: Callable[..., Any],
    tool_name: str,
    param_docs: dict[str, str],
    localns: dict[str, Any] | None = None,
) -> Arguments:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: cannot read the signature of {function!r}: {exc}"
        ) from exc
    annotated: Any = function
    while isinstance(annotated, functools.partial):
        annotated = annotated.func
    if not (inspect.isfunction(annotated) or inspect.ismethod(annotated)):
        annotated = getattr(annotated, "__call__", annotated)  # noqa: B004 - callable objects
    try:
        hints = typing.get_type_hints(annotated, localns=localns, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: cannot resolve the type annotations of "
            f"{getattr(function, '__qualname__', function)!r}: {exc}. Define the types it "
            "uses at module level (or import them there) so they can be looked up."
        ) from exc

    params = list(signature.parameters.values())
    takes_ctx = bool(params) and _is_run_context(hints.get(params[0].name))
    if takes_ctx:
        params = params[1:]
    fields: list[tuple[str, Any, Any, str | None]] = []
    positional: list[str] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameter {star}{p.name} cannot be described to a model; "
                "declare each argument as a named, annotated parameter"
            )
        if p.name not in hints:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameter {p.name!r} has no type annotation; annotate it "
                f"(for example `{p.name}: str`) so its JSON schema can be built"
            )
        annotation = hints[p.name]
        if _is_run_context(annotation):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: the RunContext parameter {p.name!r} must be the first "
                "parameter"
            )
        if p.kind is p.POSITIONAL_ONLY:
            positional.append(p.name)
        fields.append((p.name, annotation, p.default, param_docs.get(p.name)))

    def slow() -> Callable[[Any], dict[str, Any]]:
        return _pydantic_arguments(tool_name, fields)[1]

    fast = fast_arguments(fields, inspect.Parameter.empty, slow)
    schema, validate = fast if fast is not None else _pydantic_arguments(tool_name, fields)
    return Arguments(schema, validate, takes_ctx, tuple(positional))


def _pydantic_arguments(
    tool_name: str, fields: list[tuple[str, Any, Any, str | None]]
) -> tuple[dict[str, Any], Callable[[Any], dict[str, Any]]]:
    """Schema and validator through a TypedDict of the parameters and pydantic."""
    from pydantic import ConfigDict, Field, TypeAdapter
    from typing_extensions import NotRequired, TypedDict

    members: dict[str, Any] = {}
    for name, annotation, default, doc in fields:
        extra: dict[str, Any] = {}
        if doc and not _has_description(annotation):
            extra["description"] = doc
        if default is inspect.Parameter.empty:
            members[name] = Annotated[annotation, Field(**extra)] if extra else annotation
        else:
            members[name] = NotRequired[Annotated[annotation, Field(default=default, **extra)]]
    make_typed_dict: Any = TypedDict  # called with a runtime name: opaque to mypy
    arguments_type = make_typed_dict(tool_name, members)
    arguments_type.__pydantic_config__ = ConfigDict(extra="forbid")
    try:
        adapter = TypeAdapter(arguments_type)
        schema = strip_titles(adapter.json_schema())
    except Exception as exc:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: pydantic cannot build a schema for its parameters: {exc}"
        ) from exc
    validate: Callable[[Any], dict[str, Any]] = adapter.validator.validate_python
    return schema, validate


def strip_titles(schema: Any) -> Any:
    """``schema`` without pydantic's generated ``title`` keys (noise for a model).

    Property *names* called "title" are kept: only a schema object's own
    ``title`` string goes.
    """
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(
                value, dict
            ):
                out[key] = {name: strip_titles(sub) for name, sub in value.items()}
            else:
                out[key] = strip_titles(value)
        return out
    if isinstance(schema, list):
        return [strip_titles(item) for item in schema]
    return schema


def describe_validation_error(exc: Any, limit: int = 10) -> str:
    """A pydantic ``ValidationError`` as short text a model can act on."""
    parts: list[str] = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(x) for x in error["loc"]) or "(value)"
        text = f"{where}: {error['msg']}"
        if error["type"] != "missing":
            shown = repr(error["input"])
            text += f" (got {shown[:77] + '...' if len(shown) > 80 else shown})"
        parts.append(text)
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
