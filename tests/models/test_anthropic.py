"""AnthropicModel against Messages API wire payloads in Anthropic's documented format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _connector_wire import SECRET, FakeSleep, Provider, drain, json_response, sse_response

from openheim.errors import ConfigError, ContextLengthError, ServerError
from openheim.messages import Message, ToolCall
from openheim.models import Model, ModelRequest, ModelSettings, TextDelta, ToolDefinition
from openheim.models.anthropic import AnthropicModel
from openheim.models.base import RAW_ARGUMENTS_KEY, ModelResponse, StreamEvent, ToolCallDelta

WEATHER = ToolDefinition(
    "get_weather",
    "Get the current weather in a given location",
    {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
)
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
    "required": ["city", "temp_c"],
}


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("input", 2095),
            "output_tokens": usage.get("output", 503),
            "cache_creation_input_tokens": usage.get("cache_write", 0),
            "cache_read_input_tokens": usage.get("cache_read", 0),
        },
    }


def events(*pairs: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in pairs)


MESSAGE_START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
        },
    },
)
PING = ("ping", {"type": "ping"})
MESSAGE_STOP = ("message_stop", {"type": "message_stop"})


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def json_delta(index: int, part: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": part},
        },
    )


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop: str, output_tokens: int) -> tuple[str, dict[str, Any]]:
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


TEXT_STREAM = events(
    MESSAGE_START,
    block_start(0, {"type": "text", "text": ""}),
    PING,
    text_delta(0, "Hello"),
    text_delta(0, ", wörld ☃"),
    text_delta(0, "!"),
    block_stop(0),
    message_delta("end_turn", 15),
    MESSAGE_STOP,
)

TOOL_STREAM = events(
    MESSAGE_START,
    block_start(0, {"type": "text", "text": ""}),
    text_delta(0, "Let me check."),
    block_stop(0),
    block_start(
        1,
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    ),
    json_delta(1, ""),
    json_delta(1, '{"location": "San Fra'),
    json_delta(1, 'ncisco, CA"}'),
    block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {}}),
    json_delta(2, '{"location": "Paris"}'),
    block_stop(2),
    message_delta("tool_use", 89),
    MESSAGE_STOP,
)


def model(p: Provider, **kw: Any) -> AnthropicModel:
    kw.setdefault("api_key", SECRET)
    return AnthropicModel("claude-sonnet-4-5", http_client=p.client(), **kw)


async def collect(m: Model, request: ModelRequest) -> tuple[list[StreamEvent], ModelResponse]:
    got = [e async for e in m.stream(request)]
    assert isinstance(got[-1], ModelResponse)
    return got[:-1], got[-1]


async def test_plain_message_request_and_response() -> None:
    p = Provider(
        json_response(200, message([{"type": "text", "text": "Hi! I'm Claude."}], cache_read=100))
    )
    m = model(p)
    assert isinstance(m, Model)
    assert m.name == "anthropic:claude-sonnet-4-5"
    res = await m.request(
        ModelRequest(
            [Message.system("Be brief."), Message.system("Be kind."), Message.user("Hello")]
        )
    )
    assert res.message == Message.assistant("Hi! I'm Claude.")
    assert res.finish_reason == "stop"
    assert (res.usage.input_tokens, res.usage.output_tokens, res.usage.requests) == (2195, 503, 1)
    assert res.model_name == "claude-sonnet-4-5-20250929"
    req = p.requests[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == SECRET
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert p.body() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "Be brief.\n\nBe kind.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }


async def test_conversation_with_tool_use_and_merged_tool_results() -> None:
    p = Provider(json_response(200, message([{"type": "text", "text": "Sunny and cold."}])))
    request = ModelRequest(
        [
            Message.user("Weather in SF and Paris?"),
            Message.assistant(
                "I'll check both.",
                [
                    ToolCall("get_weather", {"location": "San Francisco, CA"}, "toolu_01"),
                    ToolCall("get_weather", {"location": "Paris"}, "toolu_02"),
                ],
            ),
            Message.tool("toolu_01", "get_weather", "15 degrees"),
            Message.tool("toolu_02", "get_weather", "ConnectionError: service down", is_error=True),
            Message.user("Also, be short."),
            Message.assistant(None, [ToolCall("get_weather", {"location": "Oslo"}, "toolu_03")]),
            Message.tool("toolu_03", "get_weather", "-2 degrees"),
        ],
        tools=[WEATHER],
        settings=ModelSettings(max_tokens=300, temperature=0.5, top_p=0.8, seed=3, stop=["END"]),
    )
    await model(p).request(request)
    assert p.body() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in SF and Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I'll check both."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"location": "San Francisco, CA"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_02",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "15 degrees"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_02",
                        "content": "ConnectionError: service down",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Also, be short."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_03",
                        "name": "get_weather",
                        "input": {"location": "Oslo"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_03", "content": "-2 degrees"}
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": WEATHER.description,
                "input_schema": WEATHER.parameters,
            }
        ],
        "temperature": 0.5,
        "top_p": 0.8,
        "stop_sequences": ["END"],
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", None),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_tool_choice_mapping(choice: str, sent: Any) -> None:
    p = Provider(json_response(200, message([{"type": "text", "text": "ok"}])))
    await model(p).request(ModelRequest([Message.user("hi")], [WEATHER], tool_choice=choice))
    assert p.body().get("tool_choice") == sent


async def test_tool_choice_naming_an_unknown_tool_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        await model(Provider()).request(
            ModelRequest([Message.user("hi")], [WEATHER], tool_choice="nope")
        )


async def test_tool_use_response() -> None:
    content = [
        {"type": "text", "text": "I'll check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ]
    p = Provider(json_response(200, message(content, "tool_use")))
    res = await model(p).request(ModelRequest([Message.user("w?")], [WEATHER]))
    assert res.finish_reason == "tool_calls"
    assert res.message == Message.assistant(
        "I'll check.",
        [
            ToolCall(
                "get_weather", {"location": "San Francisco, CA"}, "toolu_01A09q90qw90lq917835lq9"
            )
        ],
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
async def test_stop_reason_mapping(stop: str, finish: str) -> None:
    p = Provider(json_response(200, message([{"type": "text", "text": "x"}], stop)))
    res = await model(p).request(ModelRequest([Message.user("hi")]))
    assert res.finish_reason == finish


async def test_structured_output_is_a_forced_tool_whose_input_is_the_answer() -> None:
    content = [
        {
            "type": "tool_use",
            "id": "toolu_9",
            "name": "Weather",
            "input": {"city": "Paris", "temp_c": 21.5},
        }
    ]
    p = Provider(json_response(200, message(content, "tool_use")))
    res = await model(p).request(
        ModelRequest([Message.user("w?")], output_schema=ANSWER_SCHEMA, output_name="Weather")
    )
    assert json.loads(res.message.content or "") == {"city": "Paris", "temp_c": 21.5}
    assert res.message.tool_calls == []
    assert res.finish_reason == "stop"
    body = p.body()
    assert body["tools"] == [
        {
            "name": "Weather",
            "description": body["tools"][0]["description"],
            "input_schema": ANSWER_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Weather"}


async def test_structured_output_with_tools_lets_the_model_call_tools_first() -> None:
    content = [
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {
            "type": "tool_use",
            "id": "toolu_2",
            "name": "final_result",
            "input": {"city": "?", "temp_c": 0},
        },
    ]
    p = Provider(json_response(200, message(content, "tool_use")))
    res = await model(p).request(
        ModelRequest([Message.user("w?")], [WEATHER], output_schema=ANSWER_SCHEMA)
    )
    body = p.body()
    assert [t["name"] for t in body["tools"]] == ["get_weather", "final_result"]
    assert body["tool_choice"] == {"type": "any"}
    # A real tool call wins: the premature answer is dropped, the model answers again later.
    assert res.finish_reason == "tool_calls"
    assert res.message.tool_calls == [ToolCall("get_weather", {"location": "Paris"}, "toolu_1")]


@pytest.mark.parametrize("split", [None, 1, 5, 33, [10, 11, 12, 400]])
async def test_streamed_text(split: Any) -> None:
    p = Provider(sse_response(TEXT_STREAM, split=split))
    got, res = await collect(model(p), ModelRequest([Message.user("Hello")]))
    assert got == [TextDelta("Hello"), TextDelta(", wörld ☃"), TextDelta("!")]
    assert res.message == Message.assistant("Hello, wörld ☃!")
    assert res.finish_reason == "stop"
    assert (res.usage.input_tokens, res.usage.output_tokens) == (30, 15)
    assert p.body()["stream"] is True


@pytest.mark.parametrize("split", [None, 1, 4, 29])
async def test_streamed_tool_use(split: Any) -> None:
    p = Provider(sse_response(TOOL_STREAM, split=split))
    got, res = await collect(model(p), ModelRequest([Message.user("w?")], [WEATHER]))
    assert got == [
        TextDelta("Let me check."),
        ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", ""),
        ToolCallDelta(0, arguments_delta='{"location": "San Fra'),
        ToolCallDelta(0, arguments_delta='ncisco, CA"}'),
        ToolCallDelta(1, "toolu_02", "get_weather", ""),
        ToolCallDelta(1, arguments_delta='{"location": "Paris"}'),
    ]
    assert res.finish_reason == "tool_calls"
    assert res.message == Message.assistant(
        "Let me check.",
        [
            ToolCall(
                "get_weather", {"location": "San Francisco, CA"}, "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
            ),
            ToolCall("get_weather", {"location": "Paris"}, "toolu_02"),
        ],
    )
    assert res.usage.output_tokens == 89


async def test_streamed_structured_output_arrives_as_text() -> None:
    raw = events(
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "toolu_5", "name": "final_result", "input": {}}),
        json_delta(0, '{"city": "Pa'),
        json_delta(0, 'ris", "temp_c": 21}'),
        block_stop(0),
        message_delta("tool_use", 20),
        MESSAGE_STOP,
    )
    p = Provider(sse_response(raw, split=13))
    got, res = await collect(
        model(p), ModelRequest([Message.user("w?")], output_schema=ANSWER_SCHEMA)
    )
    assert all(isinstance(e, TextDelta) for e in got)
    text = "".join(e.text for e in got if isinstance(e, TextDelta))
    assert res.message.content == text
    assert json.loads(text) == {"city": "Paris", "temp_c": 21}
    assert res.finish_reason == "stop"
    assert res.message.tool_calls == []


async def test_streamed_malformed_tool_input_is_kept_raw() -> None:
    raw = events(
        MESSAGE_START,
        block_start(0, {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {}}),
        json_delta(0, '{"location": "Par'),
        block_stop(0),
        message_delta("max_tokens", 5),
        MESSAGE_STOP,
    )
    p = Provider(sse_response(raw))
    _, res = await collect(model(p), ModelRequest([Message.user("w?")], [WEATHER]))
    assert res.finish_reason == "length"
    assert res.message.tool_calls == [
        ToolCall("get_weather", {RAW_ARGUMENTS_KEY: '{"location": "Par'}, "toolu_7")
    ]


OVERLOADED = (
    "error",
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)


async def test_error_event_before_any_token_is_retried() -> None:
    sleep = FakeSleep()
    p = Provider(sse_response(events(MESSAGE_START, PING, OVERLOADED)), sse_response(TEXT_STREAM))
    _got, res = await collect(model(p, sleep=sleep), ModelRequest([Message.user("Hello")]))
    assert res.message.content == "Hello, wörld ☃!"
    assert len(p.requests) == 2
    assert len(sleep.delays) == 1


async def test_error_event_after_a_token_raises_the_mapped_error_without_retry() -> None:
    raw = events(
        MESSAGE_START,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        OVERLOADED,
    )
    p = Provider(sse_response(raw), sse_response(TEXT_STREAM))
    got: list[Any] = []
    with pytest.raises(ServerError, match="Overloaded") as info:
        await drain(model(p, sleep=FakeSleep()).stream(ModelRequest([Message.user("Hello")])), got)
    assert got == [TextDelta("Hel")]
    assert info.value.status_code == 529
    assert len(p.requests) == 1


async def test_prompt_too_long() -> None:
    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    p = Provider(json_response(400, body))
    with pytest.raises(ContextLengthError, match="prompt is too long"):
        await model(p).request(ModelRequest([Message.user("x")]))


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-sonnet-4-5")
    # A compatible proxy on another base_url may need no key.
    m = AnthropicModel("claude", base_url="http://127.0.0.1:9/")
    assert m.base_url == "http://127.0.0.1:9"


def test_model_string_gives_an_anthropic_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from openheim.models import infer_model

    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    m = infer_model("anthropic:claude-sonnet-4-5", context_window=200_000)
    assert isinstance(m, AnthropicModel)
    assert m.name == "anthropic:claude-sonnet-4-5"
    assert m.context_window == 200_000
    assert SECRET not in repr(m)
