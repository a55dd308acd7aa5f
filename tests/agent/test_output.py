"""Structured output: schemas on the request, validation, retries, OutputValidationError."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest
from typing_extensions import TypedDict

import openheim as oh
from openheim.errors import OutputValidationError
from openheim.models import ScriptedModel


class City(pydantic.BaseModel):
    name: str
    population: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Movie(TypedDict):
    title: str
    year: int


async def test_pydantic_model_output() -> None:
    model = ScriptedModel([City(name="Paris", population=2_100_000)])
    res = await oh.Agent(model, output_type=City).run("Biggest French city?")
    assert res.output == City(name="Paris", population=2_100_000)
    request = model.requests[0]
    assert request.output_name == "City"
    assert request.output_schema is not None
    assert set(request.output_schema["properties"]) == {"name", "population"}
    assert request.output_schema["required"] == ["name", "population"]


async def test_dataclass_output_from_fenced_json() -> None:
    model = ScriptedModel(['```json\n{"x": 1.5, "y": -2}\n```'])
    res = await oh.Agent(model, output_type=Point).run("A point")
    assert res.output == Point(1.5, -2.0)


async def test_typeddict_output() -> None:
    model = ScriptedModel([{"title": "Alien", "year": 1979}])
    res = await oh.Agent(model, output_type=Movie).run("A film")
    assert res.output == {"title": "Alien", "year": 1979}


async def test_scalar_output_is_wrapped_in_an_object_schema() -> None:
    model = ScriptedModel(['{"result": 42}', "42"])
    agent = oh.Agent(model, output_type=int)
    assert (await agent.run("6*7")).output == 42
    assert (await agent.run("6*7 again")).output == 42  # a bare value is accepted too
    schema = model.requests[0].output_schema
    assert schema == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
        "additionalProperties": False,
    }


async def test_list_output() -> None:
    model = ScriptedModel([{"result": ["a", "b"]}])
    res = await oh.Agent(model, output_type=list[str]).run("letters")
    assert res.output == ["a", "b"]


async def test_invalid_output_is_sent_back_then_fixed() -> None:
    model = ScriptedModel(['{"name": "Paris"}', '{"name": "Paris", "population": 2}'])
    res = await oh.Agent(model, output_type=City).run("city")
    assert res.output == City(name="Paris", population=2)
    retry = model.requests[1].messages[-1]
    assert retry.role == "user"
    assert "population: Field required" in (retry.content or "")
    assert res.usage.requests == 2


async def test_output_validation_error_after_the_retries() -> None:
    model = ScriptedModel(["not json", '{"name": 1}', '{"population": "many"}'])
    agent = oh.Agent(model, output_type=City, output_retries=2)
    with pytest.raises(OutputValidationError, match=r"3 time\(s\).*population") as info:
        await agent.run("city")
    assert isinstance(info.value, ValueError)
    assert len(model.requests) == 3


async def test_output_retries_zero_fails_at_once() -> None:
    model = ScriptedModel(["{}"])
    with pytest.raises(OutputValidationError, match="name: Field required"):
        await oh.Agent(model, output_type=City, output_retries=0).run("city")


async def test_structured_output_after_a_tool_call() -> None:
    @oh.tool
    def census(city: str) -> int:
        """Population of a city."""
        return 2_100_000

    model = ScriptedModel(
        [oh.ToolCall("census", {"city": "Paris"}), '{"name": "Paris", "population": 2100000}']
    )
    res = await oh.Agent(model, tools=[census], output_type=City).run("Paris?")
    assert res.output.population == 2_100_000


def test_unusable_output_type_is_a_config_error() -> None:
    class Opaque:
        pass

    with pytest.raises(oh.errors.ConfigError, match="cannot be used for structured output"):
        oh.Agent(ScriptedModel([]), output_type=Opaque)
