"""OpenAIModel against a real OpenAI-compatible server on loopback.

``python -m llama_cpp.server`` serves the tiny random-weight GGUF that the
``tiny_gguf`` fixture writes. Its text is gibberish, so the tests check the
protocol (shapes, usage, streaming, tool calls, errors), not the words.
"""

from __future__ import annotations

import json

import pytest
from _llama_server import N_CTX, LlamaServer

from openheim.errors import ContextLengthError
from openheim.messages import Message
from openheim.models import ModelRequest, ModelSettings, TextDelta, ToolCallDelta, ToolDefinition
from openheim.models.base import ModelResponse
from openheim.models.openai import OpenAIModel

pytestmark = pytest.mark.llama

SETTINGS = ModelSettings(max_tokens=12, temperature=0.0, seed=1)
UNIT = ToolDefinition(
    "set_units",
    "Choose the temperature unit and whether to include wind.",
    {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "wind": {"type": "boolean"},
        },
        "required": ["unit", "wind"],
    },
)


def make(server: LlamaServer) -> OpenAIModel:
    # llama-cpp-python's server knows only the json_object form of response_format.
    return OpenAIModel(
        "tiny",
        base_url=server.base_url,
        timeout=120,
        max_retries=0,
        response_format="json_object",
    )


def prompt(*, tools: list[ToolDefinition] | None = None, choice: str = "auto") -> ModelRequest:
    # Grammar-constrained arguments take ~35 tokens with this vocabulary.
    settings = SETTINGS if not tools else ModelSettings(max_tokens=80, temperature=0.0, seed=1)
    return ModelRequest(
        [Message.system("You are terse."), Message.user("Say hello to the world.")],
        tools=list(tools or ()),
        settings=settings,
        tool_choice=choice,
    )


async def test_plain_completion(llama_server: LlamaServer) -> None:
    async with make(llama_server) as model:
        res = await model.request(prompt())
    assert res.message.role == "assistant"
    assert res.message.content, f"empty answer; server log:\n{llama_server.log_tail()}"
    assert res.usage.input_tokens > 0
    assert 0 < res.usage.output_tokens <= SETTINGS.max_tokens  # type: ignore[operator]
    assert res.usage.requests == 1
    assert res.finish_reason in ("stop", "length")
    assert res.message.tool_calls == []


async def test_streaming_deltas_join_to_the_full_text(llama_server: LlamaServer) -> None:
    async with make(llama_server) as model:
        events = [e async for e in model.stream(prompt())]
        again = await model.request(prompt())
    final = events[-1]
    assert isinstance(final, ModelResponse)
    deltas = events[:-1]
    assert deltas
    assert all(isinstance(e, TextDelta) for e in deltas)
    text = "".join(e.text for e in deltas if isinstance(e, TextDelta))
    assert text == final.message.content
    assert final.finish_reason in ("stop", "length")
    # Greedy decoding with a seed: the streamed and the whole answer agree.
    assert again.message.content == text


async def test_forced_tool_call_follows_the_schema(llama_server: LlamaServer) -> None:
    # llama-cpp-python turns tool_choice naming a function into a JSON-schema
    # grammar, so even random weights produce valid arguments.
    async with make(llama_server) as model:
        res = await model.request(prompt(tools=[UNIT], choice="set_units"))
    assert res.finish_reason == "tool_calls", res
    [call] = res.message.tool_calls
    assert call.name == "set_units"
    assert call.id
    assert call.arguments["unit"] in ("celsius", "fahrenheit")
    assert isinstance(call.arguments["wind"], bool)


async def test_forced_tool_call_streams_argument_deltas(llama_server: LlamaServer) -> None:
    async with make(llama_server) as model:
        events = [e async for e in model.stream(prompt(tools=[UNIT], choice="set_units"))]
    final = events[-1]
    assert isinstance(final, ModelResponse)
    deltas = [e for e in events[:-1] if isinstance(e, ToolCallDelta)]
    assert deltas, events
    assert deltas[0].name == "set_units"
    assert deltas[0].id
    [call] = final.message.tool_calls
    assert call.id == deltas[0].id
    assert json.loads("".join(d.arguments_delta for d in deltas)) == call.arguments
    assert call.arguments["unit"] in ("celsius", "fahrenheit")


async def test_structured_output_follows_the_schema(llama_server: LlamaServer) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["sunny", "rainy"]}},
        "required": ["ok", "mood"],
        "additionalProperties": False,
    }
    request = ModelRequest(
        [Message.user("Answer in JSON.")],
        settings=ModelSettings(max_tokens=40, temperature=0.0, seed=1),
        output_schema=schema,
    )
    async with make(llama_server) as model:
        res = await model.request(request)
    answer = json.loads(res.message.content or "")
    assert isinstance(answer["ok"], bool)
    assert answer["mood"] in ("sunny", "rainy")


async def test_prompt_longer_than_the_context_is_context_length_error(
    llama_server: LlamaServer,
) -> None:
    long = " ".join(["weather"] * (N_CTX * 2))
    async with make(llama_server) as model:
        with pytest.raises(ContextLengthError) as info:
            await model.request(ModelRequest([Message.user(long)], settings=SETTINGS))
    assert info.value.status_code == 400
    assert str(N_CTX) in str(info.value)


async def test_tool_choice_auto_gives_plain_text_on_this_server(llama_server: LlamaServer) -> None:
    # Observed behaviour of llama-cpp-python's server with a plain jinja chat
    # template: only a tool_choice naming a function is grammar-constrained; with
    # "auto" (and "required") the model just writes text and no tool call is parsed.
    async with make(llama_server) as model:
        for choice in ("auto", "required"):
            res = await model.request(prompt(tools=[UNIT], choice=choice))
            assert res.message.tool_calls == []
            assert res.finish_reason in ("stop", "length")
            assert res.message.content


async def test_a_conversation_with_tool_results_is_accepted(llama_server: LlamaServer) -> None:
    async with make(llama_server) as model:
        first = await model.request(prompt(tools=[UNIT], choice="set_units"))
        [call] = first.message.tool_calls
        history = [
            *prompt().messages,
            first.message,
            Message.tool(call.id, call.name, "units set"),
        ]
        res = await model.request(ModelRequest(history, [UNIT], settings=SETTINGS))
    assert res.message.content
    assert res.usage.input_tokens > first.usage.input_tokens
