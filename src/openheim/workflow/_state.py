"""A workflow's typed state: its fields, their reducers, and how updates are applied.

The state is a msgspec Struct or a pydantic model. A node returns the fields
it updates (a dict); a field annotated ``Annotated[T, reducer(fn)]`` (or
given in ``Workflow(reducers={...})``) combines the old value with the update
(``fn(old, update)``), every other field is replaced. Updates are validated
against the field's type when applied, and stored as plain data (msgpack),
never pickled.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from openheim.errors import WorkflowDefinitionError, WorkflowStateError

__all__ = ["Reducer", "StateSpec", "reducer"]


class Reducer:
    """Marks a state field's reducer in ``Annotated[T, reducer(fn)]``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        if not callable(fn):
            raise WorkflowDefinitionError(
                f"reducer() takes a function of (old, update), got {type(fn).__name__}"
            )
        self.fn = fn

    def __repr__(self) -> str:
        return f"reducer({getattr(self.fn, '__name__', self.fn)!r})"


def reducer(fn: Callable[[Any, Any], Any]) -> Any:
    """A field reducer for ``Annotated[list[str], oh.reducer(operator.add)]``.

    Updates to the field are combined with its current value as
    ``fn(current, update)``; parallel nodes may then write the field at once.
    """
    return Reducer(fn)


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields") and hasattr(tp, "model_copy")


def _strip(tp: Any) -> tuple[Any, Reducer | None]:
    if typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        found = next((a for a in args[1:] if isinstance(a, Reducer)), None)
        rest = [a for a in args[1:] if not isinstance(a, Reducer)]
        base = typing.Annotated.__class_getitem__((args[0], *rest)) if rest else args[0]
        return base, found
    return tp, None


class StateSpec:
    """What the engine knows of a state type (see the module docstring)."""

    __slots__ = ("_adapters", "fields", "is_pydantic", "reducers", "type")

    def __init__(self, tp: Any, reducers: Mapping[str, Callable[[Any, Any], Any]] | None) -> None:
        self.type = tp
        self.is_pydantic = _is_pydantic(tp)
        if not self.is_pydantic and not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
            raise WorkflowDefinitionError(
                f"a workflow state must be a msgspec.Struct or a pydantic model class, got {tp!r}; "
                "declare one with a field per piece of state, e.g. "
                "`class Ticket(msgspec.Struct): text: str = ''`"
            )
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception as exc:
            raise WorkflowDefinitionError(
                f"the annotations of state {tp.__name__} cannot be resolved ({exc}); define the "
                "class at module level, with every name its annotations use imported there"
            ) from None
        names = list(tp.model_fields) if self.is_pydantic else list(tp.__struct_fields__)
        self.fields: dict[str, Any] = {}
        self.reducers: dict[str, Callable[[Any, Any], Any]] = {}
        for name in names:
            base, red = _strip(hints.get(name, Any))
            self.fields[name] = base
            if red is not None:
                self.reducers[name] = red.fn
        for name, fn in (reducers or {}).items():
            if name not in self.fields:
                raise WorkflowDefinitionError(
                    f"reducers= names {name!r}, which is not a field of {tp.__name__} "
                    f"(fields: {', '.join(self.fields)})"
                )
            if not callable(fn):
                raise WorkflowDefinitionError(f"the reducer of {name!r} is not callable: {fn!r}")
            self.reducers[name] = fn
        self._adapters: dict[str, Any] = {}
        self._check_serializable()

    @property
    def name(self) -> str:
        return str(getattr(self.type, "__name__", self.type))

    def _check_serializable(self) -> None:
        if self.is_pydantic:
            try:
                self.type.model_json_schema()
            except Exception as exc:
                raise WorkflowDefinitionError(
                    f"state {self.name} cannot be serialized ({exc}); every field must be "
                    "plain data (str, numbers, lists, dicts, models, dataclasses, datetimes) "
                    "so that checkpoints can be stored"
                ) from None
            return
        for name, tp in self.fields.items():
            bad = _unserializable(msgspec.inspect.type_info(tp))
            if bad is not None:
                raise WorkflowDefinitionError(
                    f"state field {self.name}.{name} has type {bad!r}, which cannot be "
                    "serialized into a checkpoint; use plain data (str, numbers, lists, "
                    "dicts, Structs, dataclasses, datetimes) instead"
                )

    # -- values ------------------------------------------------------------------------

    def new(self, value: Any) -> Any:
        """The initial state from an instance of the state type or a dict of fields."""
        if isinstance(value, self.type):
            return value
        if value is None:
            if not self.is_pydantic:
                try:
                    return self.type()  # every field has a default: the common case, fast
                except TypeError:
                    pass
            value = {}
        if not isinstance(value, Mapping):
            raise WorkflowStateError(
                f"a workflow input is a {self.name} or a dict of its fields, "
                f"got {type(value).__name__}"
            )
        unknown = set(value) - set(self.fields)
        if unknown:
            raise WorkflowStateError(
                f"unknown fields {sorted(unknown)} for state {self.name} "
                f"(fields: {', '.join(self.fields)})"
            )
        try:
            if self.is_pydantic:
                return self.type.model_validate(dict(value))
            return msgspec.convert(dict(value), self.type)
        except Exception as exc:
            raise WorkflowStateError(f"invalid input for state {self.name}: {exc}") from None

    def get(self, state: Any, name: str) -> Any:
        return getattr(state, name)

    def check(self, updates: Any, where: str) -> dict[str, Any]:
        """``updates`` validated: a dict of known fields, each value of its field's type."""
        if updates is None:
            return {}
        if not isinstance(updates, dict):
            if isinstance(updates, Mapping):
                updates = dict(updates)
            else:
                raise WorkflowStateError(
                    f"{where} returned {type(updates).__name__}; a node returns a dict of the "
                    f"state fields it updates (fields of {self.name}: {', '.join(self.fields)}) "
                    "or None"
                )
        out: dict[str, Any] = {}
        for name, value in updates.items():
            tp = self.fields.get(name)
            if tp is None:
                raise WorkflowStateError(
                    f"{where} updated {name!r}, which is not a field of {self.name} "
                    f"(fields: {', '.join(self.fields)})"
                )
            out[name] = self._validate(name, tp, value, where)
        return out

    def _validate(self, name: str, tp: Any, value: Any, where: str) -> Any:
        if tp is Any:
            return value
        try:
            if self.is_pydantic:
                adapter = self._adapters.get(name)
                if adapter is None:
                    from pydantic import TypeAdapter

                    adapter = self._adapters[name] = TypeAdapter(tp)
                return adapter.validate_python(value)
            return msgspec.convert(value, tp, from_attributes=True)
        except Exception as exc:
            raise WorkflowStateError(
                f"{where} set {self.name}.{name} to {value!r:.80}, which is not a valid {tp!r}: "
                f"{exc}"
            ) from None

    def apply(self, state: Any, updates: dict[str, Any]) -> Any:
        """A new state: ``updates`` (already checked) applied, through reducers where set."""
        if not updates:
            return state
        reducers = self.reducers
        if reducers:
            updates = {
                k: (reducers[k](getattr(state, k), v) if k in reducers else v)
                for k, v in updates.items()
            }
        if self.is_pydantic:
            return state.model_copy(update=updates)
        return msgspec.structs.replace(state, **updates)

    def replace(self, state: Any, values: Mapping[str, Any]) -> Any:
        """A new state with ``values`` set as they are (no reducers): edits and patches."""
        checked = self.check(dict(values), "a state patch")
        if self.is_pydantic:
            return state.model_copy(update=checked)
        return msgspec.structs.replace(state, **checked)

    # -- plain data (what records hold) ------------------------------------------------

    def dump(self, state: Any) -> dict[str, Any]:
        if self.is_pydantic:
            data: dict[str, Any] = state.model_dump(mode="json")
            return data
        return {f: getattr(state, f) for f in self.fields}

    def load(self, data: Mapping[str, Any]) -> Any:
        if self.is_pydantic:
            return self.type.model_validate(dict(data))
        return msgspec.convert(dict(data), self.type, from_attributes=True)

    def dump_updates(self, updates: dict[str, Any]) -> dict[str, Any]:
        if not self.is_pydantic or not updates:
            return updates
        out = {}
        for name, value in updates.items():
            adapter = self._adapters.get(name)
            if adapter is None:
                from pydantic import TypeAdapter

                adapter = self._adapters[name] = TypeAdapter(self.fields[name])
            out[name] = adapter.dump_python(value, mode="json")
        return out

    def load_updates(self, data: dict[str, Any]) -> dict[str, Any]:
        return {
            k: self._validate(k, self.fields[k], v, "a stored checkpoint")
            for k, v in data.items()
            if k in self.fields
        }


def _unserializable(info: Any, seen: set[int] | None = None) -> Any:
    """The first type inside ``info`` msgspec cannot encode, or None."""
    from msgspec import inspect as mi

    seen = set() if seen is None else seen
    if id(info) in seen:
        return None
    seen.add(id(info))
    if isinstance(info, mi.CustomType):
        return info.cls
    children: list[Any] = []
    if isinstance(info, mi.UnionType):
        children = list(info.types)
    elif isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        children = [info.item_type]
    elif isinstance(info, mi.TupleType):
        children = list(info.item_types)
    elif isinstance(info, mi.DictType):
        children = [info.key_type, info.value_type]
    elif isinstance(info, (mi.StructType, mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)):
        children = [f.type for f in info.fields]
    elif isinstance(info, mi.Metadata):
        children = [info.type]
    for child in children:
        bad = _unserializable(child, seen)
        if bad is not None:
            return bad
    return None
