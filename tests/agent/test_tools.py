"""@tool: schemas from signatures and docstrings, validation, definition errors, Toolset."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Annotated, Any, Literal

import pydantic
import pytest

import openheim as oh
from openheim.errors import ConfigError, ToolDefinitionError
from openheim.tools import Toolset
from openheim.tools._docstring import parse_docstring


@oh.tool
def get_weather(city: str, days: int = 1, unit: Literal["C", "F"] = "C") -> str:
    """Current weather for a city.

    Looks it up in the weather service.

    Args:
        city: The city's name, e.g. "Paris".
        days (int): How many days to forecast,
            counting today.
        unit: Temperature unit.

    Returns:
        A short description.
    """
    return f"{city}: sunny for {days} day(s), 20 {unit}"


def test_schema_and_description_come_from_the_signature_and_google_docstring() -> None:
    d = get_weather.definition
    assert d.name == "get_weather"
    assert d.description == "Current weather for a city.\n\nLooks it up in the weather service."
    props = d.parameters["properties"]
    assert props["city"] == {"type": "string", "description": 'The city\'s name, e.g. "Paris".'}
    assert props["days"]["description"] == "How many days to forecast, counting today."
    assert props["days"]["default"] == 1
    assert props["unit"]["enum"] == ["C", "F"]
    assert d.parameters["required"] == ["city"]
    assert d.parameters["additionalProperties"] is False
    assert "title" not in d.parameters
    assert all("title" not in p for p in props.values())


def test_decorated_function_is_still_callable() -> None:
    assert get_weather("Oslo", days=2) == "Oslo: sunny for 2 day(s), 20 C"
    assert get_weather.__name__ == "get_weather"
    assert get_weather.__doc__ is not None


def test_validation_coerces_and_fills_defaults() -> None:
    assert get_weather.validate({"city": "Rome", "days": "3"}) == {
        "city": "Rome",
        "days": 3,
        "unit": "C",
    }
    with pytest.raises(pydantic.ValidationError) as info:
        get_weather.validate({"city": "Rome", "days": "many", "color": "red"})
    text = str(info.value)
    assert "days" in text
    assert "color" in text


def test_numpy_and_sphinx_docstrings() -> None:
    desc, params = parse_docstring(
        """Sum two numbers.

        Parameters
        ----------
        a : int
            The first one.
        b : int
            The second
            one.

        Returns
        -------
        int
        """
    )
    assert desc == "Sum two numbers."
    assert params == {"a": "The first one.", "b": "The second one."}

    desc, params = parse_docstring(
        """Sum two numbers.

        :param a: The first one.
        :param int b: The second
            one.
        :returns: the sum
        """
    )
    assert desc == "Sum two numbers."
    assert params == {"a": "The first one.", "b": "The second one."}


def test_options_name_description_and_annotated_descriptions() -> None:
    @oh.tool(name="lookup", description="Find a user.", requires_approval=True, timeout=3)
    def find(user_id: Annotated[int, pydantic.Field(description="Numeric id", ge=1)]) -> str:
        """Ignored summary.

        Args:
            user_id: ignored, the Field description wins.
        """
        return str(user_id)

    assert find.name == "lookup"
    assert find.description == "Find a user."
    assert find.requires_approval is True
    assert find.timeout == 3
    assert find.parameters["properties"]["user_id"]["description"] == "Numeric id"
    assert find.parameters["properties"]["user_id"]["minimum"] == 1


class Address(pydantic.BaseModel):
    street: str
    zip_code: str


@dataclasses.dataclass
class Window:
    start: int
    end: int


def test_nested_models_and_dataclasses_in_parameters() -> None:
    @oh.tool
    def ship(to: Address, window: Window, tags: list[str] | None = None) -> str:
        """Ship a parcel."""
        return f"{to.street} {window.start}-{window.end} {tags}"

    args = ship.validate(
        {"to": {"street": "Main", "zip_code": "1"}, "window": {"start": 1, "end": 2}}
    )
    assert isinstance(args["to"], Address)
    assert isinstance(args["window"], Window)
    assert "$defs" in ship.parameters
    assert set(ship.parameters["$defs"]) == {"Address", "Window"}


def test_parameter_names_that_clash_with_model_attributes() -> None:
    @oh.tool
    def weird(json: str, schema: int, model_config: bool = False) -> str:
        """Names a BaseModel would reserve."""
        return f"{json}{schema}{model_config}"

    assert weird.validate({"json": "x", "schema": 1}) == {
        "json": "x",
        "schema": 1,
        "model_config": False,
    }


def test_local_classes_resolve_in_annotations() -> None:
    class Point(pydantic.BaseModel):
        x: int
        y: int

    @oh.tool
    def move(p: Point) -> str:
        """Move."""
        return str(p)

    assert isinstance(move.validate({"p": {"x": 1, "y": 2}})["p"], Point)


def test_run_context_parameter_is_not_in_the_schema() -> None:
    @oh.tool
    def whoami(ctx: oh.RunContext[str], loud: bool = False) -> str:
        """Who is asking."""
        return ctx.deps.upper() if loud else ctx.deps

    assert whoami.takes_ctx
    assert list(whoami.parameters["properties"]) == ["loud"]


def test_unannotated_parameter_is_named_in_the_error() -> None:
    with pytest.raises(ToolDefinitionError, match=r"parameter 'b' has no type annotation"):

        @oh.tool
        def add(a: int, b) -> int:  # type: ignore[no-untyped-def]
            return a + int(b)


def test_var_args_and_misplaced_context_are_rejected() -> None:
    with pytest.raises(ToolDefinitionError, match=r"\*\*kwargs"):

        @oh.tool
        def f(**kwargs: int) -> None:
            pass

    with pytest.raises(ToolDefinitionError, match="must be the first parameter"):

        @oh.tool
        def g(a: int, ctx: oh.RunContext[None]) -> None:
            pass


def test_unresolvable_annotation_says_so() -> None:
    with pytest.raises(ToolDefinitionError, match="cannot resolve the type annotations"):

        @oh.tool
        def f(a: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass


def test_tool_errors_are_both_openheim_and_standard() -> None:
    assert issubclass(ToolDefinitionError, TypeError)
    assert issubclass(ToolDefinitionError, oh.errors.AgentError)


def test_toolset_rejects_duplicate_names_clearly() -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    ts = Toolset([get_weather, ping])
    assert ts.names == ["get_weather", "ping"]
    assert [d.name for d in ts.definitions] == ["get_weather", "ping"]

    def other() -> str:
        return "x"

    with pytest.raises(ConfigError, match=r"two tools are named 'ping'.*@tool\(name=\.\.\.\)"):
        ts.add(oh.tool(name="ping")(other))

    @ts.tool(name="pong")
    def pong_impl() -> str:
        return "pong"

    assert "pong" in ts
    assert len(ts) == 3


async def test_sync_tools_run_in_a_thread_and_async_tools_on_the_loop() -> None:
    main = threading.get_ident()

    @oh.tool
    def where() -> int:
        """Thread id."""
        return threading.get_ident()

    @oh.tool
    async def where_async() -> int:
        """Thread id."""
        await asyncio.sleep(0)
        return threading.get_ident()

    assert await where.invoke({}, None) != main
    assert await where_async.invoke({}, None) == main


def test_positional_only_parameters() -> None:
    @oh.tool
    def scale(x: float, /, factor: float = 2.0) -> float:
        """Scale."""
        return x * factor

    async def go() -> Any:
        return await scale.invoke(scale.validate({"x": 2, "factor": 3}), None)

    assert asyncio.run(go()) == 6.0


def test_partials_and_callable_objects() -> None:
    import functools

    def power(base: int, exp: int) -> int:
        """Raise base to exp."""
        return int(base**exp)

    square = oh.tool(name="square")(functools.partial(power, exp=2))
    assert square.description == "Raise base to exp."
    assert square.parameters["properties"]["exp"]["default"] == 2

    class Counter:
        """Counts."""

        def __call__(self, step: int = 1) -> int:
            """Count by step."""
            return step

    counter = oh.tool(name="count")(Counter())
    assert list(counter.parameters["properties"]) == ["step"]
