"""The msgspec fast path for plain tool parameters agrees with pydantic exactly."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from typing import Any, Literal, Optional, Union

import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openheim.tools._fastargs import fast_arguments, fast_schema
from openheim.tools._schema import _pydantic_arguments

EMPTY = inspect.Parameter.empty

PLAIN: list[Any] = [
    str,
    int,
    float,
    bool,
    type(None),
    Any,
    list,
    dict,
    list[int],
    list[str | None],
    list[list[float]],
    dict[str, int],
    dict[str, Any],
    dict[str, list[bool]],
    Optional[int],  # noqa: UP045 - the typing spelling must work too
    Union[int, str, None],  # noqa: UP007
    int | None,
    str | list[str],
    int | float,
    bool | int,
    float | None,
    str | int,
    Literal["a", "b"],
    Literal["only"],
    Literal[1, 2, 3],
    Literal[True],
]
NOT_PLAIN: list[Any] = [
    bytes,
    tuple[int, ...],
    set[int],
    Literal["a", 1],
    Literal["a", None],
    pydantic.BaseModel,
    dict[int, str],
]


def _fields(annotation: Any, default: Any = EMPTY, doc: str | None = None) -> list[Any]:
    return [("x", annotation, default, doc), ("y", int, 3, "why")]


@pytest.mark.parametrize("annotation", PLAIN, ids=repr)
def test_schema_matches_pydantic(annotation: Any) -> None:
    for default, doc in ((EMPTY, None), (EMPTY, "an x"), (None, "an x")):
        fields = _fields(annotation, default, doc)
        fast = fast_arguments(fields, EMPTY, lambda f=fields: _pydantic_arguments("t", f)[1])
        assert fast is not None
        assert fast[0] == _pydantic_arguments("t", fields)[0]


@pytest.mark.parametrize("annotation", NOT_PLAIN, ids=repr)
def test_other_types_are_left_to_pydantic(annotation: Any) -> None:
    assert fast_schema(annotation) is None


def test_mutable_and_unusual_defaults_are_left_to_pydantic() -> None:
    assert fast_arguments([("x", list[int], [1], None)], EMPTY, lambda: dict) is None
    assert fast_arguments([("x", Any, object(), None)], EMPTY, lambda: dict) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["a", "b", "only", "3", "1.5", "true"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _outcome(validate: Any, value: Any) -> tuple[str, bytes]:
    try:
        return "ok", msgspec.json.encode(validate(value))  # type-exact: 5 != 5.0 != True
    except pydantic.ValidationError as exc:
        return "error", str(exc).encode()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PLAIN), st.dictionaries(st.sampled_from(["x", "y", "z"]), json_values))
def test_validation_matches_pydantic(annotation: Any, arguments: dict[str, Any]) -> None:
    fields = _fields(annotation)
    slow = _pydantic_arguments("t", fields)[1]
    fast = fast_arguments(fields, EMPTY, lambda: slow)
    assert fast is not None
    assert _outcome(fast[1], arguments) == _outcome(slow, arguments)


def test_a_plain_tool_and_a_run_do_not_import_pydantic() -> None:
    code = textwrap.dedent(
        """
        import sys
        import openheim as oh
        from openheim.models import ScriptedModel

        @oh.tool
        def add(a: int, b: int = 2) -> int:
            '''Add.'''
            return a + b

        agent = oh.Agent(ScriptedModel([oh.ToolCall("add", {"a": 1}), "3"]), tools=[add])
        assert agent.run_sync("1+2?").output == "3"
        print("pydantic" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
