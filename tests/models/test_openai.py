"""OpenAIModel against Chat Completions wire payloads in OpenAI's documented format."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _connector_wire import SECRET, Provider, json_response, sse_response

from openheim.errors import ConfigError, ModelResponseError, ServerError
from openheim.messages import Message, ToolCall
from openheim.models import Model, ModelRequest, ModelSettings, TextDelta, ToolDefinition
from openheim.models.base import RAW_ARGUMENTS_KEY, ModelResponse, StreamEvent, ToolCallDelta
from openheim.models.openai import OpenAIModel

WEATHER = ToolDefinition(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def completion(message: dict[str, Any], finish: str = "stop", **usage: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": usage.get("prompt", 19),
            "completion_tokens": usage.get("completion", 10),
            "total_tokens": usage.get("prompt", 19) + usage.get("completion", 10),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE_CHUNK = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}


def sse(*payloads: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return out + (b"data: [DONE]\n\n" if done else b"")


TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Sunny"}),
    chunk({"content": " in Paris, "}),
    chunk({"content": "22 °C ☀️."}),
    chunk({}, "stop"),
    USAGE_CHUNK,
)

TOOL_STREAM = sse(
    chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
            "refusal": None,
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Par'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'is"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_ABCDEF",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"city": "Zürich"}'}}]}),
    chunk({}, "tool_calls"),
    USAGE_CHUNK,
)


def model(provider: Provider, **kw: Any) -> OpenAIModel:
    kw.setdefault("api_key", SECRET)
    return OpenAIModel("gpt-4o-mini", http_client=provider.client(), **kw)


async def collect(m: Model, request: ModelRequest) -> tuple[list[StreamEvent], ModelResponse]:
    events = [e async for e in m.stream(request)]
    last = events[-1]
    assert isinstance(last, ModelResponse)
    return events[:-1], last


def hello() -> ModelRequest:
    return ModelRequest([Message.system("Be brief."), Message.user("Hello!")])


async def test_plain_completion_request_and_response() -> None:
    p = Provider(json_response(200, completion({"content": "Hello! How can I help?"})))
    m = model(p)
    assert isinstance(m, Model)
    assert m.name == "openai:gpt-4o-mini"
    res = await m.request(hello())
    assert res.message == Message.assistant("Hello! How can I help?")
    assert res.finish_reason == "stop"
    assert (res.usage.input_tokens, res.usage.output_tokens, res.usage.requests) == (19, 10, 1)
    assert res.model_name == "gpt-4o-mini-2024-07-18"
    req = p.requests[0]
    assert req.method == "POST"
    assert str(req.url) == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["content-type"] == "application/json"
    assert p.body() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello!"},
        ],
    }


async def test_conversation_with_tool_calls_results_and_settings_body() -> None:
    p = Provider(json_response(200, completion({"content": "Sunny."})))
    m = model(p, organization="org-42", extra_headers={"x-trace": "t1"})
    request = ModelRequest(
        [
            Message.system("Be brief."),
            Message.user("Weather in Paris and Rome?"),
            Message.assistant(
                "Checking.",
                [
                    ToolCall("get_weather", {"city": "Paris"}, "call_1"),
                    ToolCall("get_weather", {"city": "Rome"}, "call_2"),
                ],
            ),
            Message.tool("call_1", "get_weather", "sunny"),
            Message.tool("call_2", "get_weather", "city not found", is_error=True),
        ],
        tools=[WEATHER],
        settings=ModelSettings(max_tokens=50, temperature=0.2, top_p=0.9, seed=7, stop=["\n\n"]),
        tool_choice="required",
    )
    await m.request(request)
    assert p.body() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "city not found"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
        "tool_choice": "required",
        "max_completion_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
    }
    headers = p.requests[0].headers
    assert headers["openai-organization"] == "org-42"
    assert headers["x-trace"] == "t1"


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", None),
        ("none", "none"),
        ("required", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
async def test_tool_choice_mapping(choice: str, sent: Any) -> None:
    p = Provider(json_response(200, completion({"content": "ok"})))
    await model(p).request(ModelRequest([Message.user("hi")], [WEATHER], tool_choice=choice))
    assert p.body().get("tool_choice") == sent


async def test_tool_choice_naming_an_unknown_tool_is_a_config_error() -> None:
    m = model(Provider())
    with pytest.raises(ConfigError, match="nope"):
        await m.request(ModelRequest([Message.user("hi")], [WEATHER], tool_choice="nope"))


async def test_compatible_server_gets_max_tokens_and_no_key_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = Provider(json_response(200, completion({"content": "ok"})))
    m = OpenAIModel("qwen", base_url="http://127.0.0.1:8000/v1/", http_client=p.client())
    await m.request(ModelRequest([Message.user("hi")], settings=ModelSettings(max_tokens=5)))
    assert str(p.requests[0].url) == "http://127.0.0.1:8000/v1/chat/completions"
    assert "authorization" not in p.requests[0].headers
    assert p.body()["max_tokens"] == 5
    assert "max_completion_tokens" not in p.body()


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4o-mini")
    monkeypatch.setenv("MY_OPENAI_KEY", SECRET)
    m = OpenAIModel("gpt-4o-mini", api_key_env="MY_OPENAI_KEY")
    assert SECRET not in repr(m)


async def test_structured_output_request_body() -> None:
    strict_schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"],
        "additionalProperties": False,
    }
    loose_schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    p = Provider(
        json_response(200, completion({"content": '{"city": "Paris", "temp": 22}'})),
        json_response(200, completion({"content": '{"city": "Paris"}'})),
    )
    m = model(p)
    res = await m.request(
        ModelRequest([Message.user("w?")], output_schema=strict_schema, output_name="Weather")
    )
    assert res.message.content == '{"city": "Paris", "temp": 22}'
    assert p.body()["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Weather", "schema": strict_schema, "strict": True},
    }
    await m.request(ModelRequest([Message.user("w?")], output_schema=loose_schema))
    assert p.body()["response_format"]["json_schema"] == {
        "name": "final_result",
        "schema": loose_schema,
        "strict": False,
    }


async def test_structured_output_in_the_json_object_form() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    p = Provider(json_response(200, completion({"content": '{"ok": true}'})))
    m = model(p, response_format="json_object")
    await m.request(ModelRequest([Message.user("w?")], output_schema=schema))
    assert p.body()["response_format"] == {"type": "json_object", "schema": schema}


async def test_tool_calls_response() -> None:
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{\n"city": "Boston, MA"\n}'},
            },
            {
                "id": "call_def456",
                "type": "function",
                "function": {"name": "get_time", "arguments": ""},
            },
        ],
    }
    p = Provider(json_response(200, completion(message, "tool_calls")))
    res = await model(p).request(ModelRequest([Message.user("w?")], [WEATHER]))
    assert res.finish_reason == "tool_calls"
    assert res.message.content is None
    assert res.message.tool_calls == [
        ToolCall("get_weather", {"city": "Boston, MA"}, "call_abc123"),
        ToolCall("get_time", {}, "call_def456"),
    ]


async def test_tool_calls_with_finish_reason_stop_still_end_in_tool_calls() -> None:
    # Ollama's compatible endpoint answers tool calls with finish_reason "stop".
    message = {
        "content": "",
        "tool_calls": [
            {"id": "call_x", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
        ],
    }
    p = Provider(json_response(200, completion(message, "stop")))
    res = await model(p).request(ModelRequest([Message.user("w?")], [WEATHER]))
    assert res.finish_reason == "tool_calls"
    assert res.message.tool_calls == [ToolCall("get_weather", {"city": "Oslo"}, "call_x")]


@pytest.mark.parametrize("raw", ['{"city": "Paris"', "[1, 2]", "not json at all"])
async def test_malformed_tool_arguments_are_kept_raw_and_replayed_unchanged(raw: str) -> None:
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "call_bad",
                "type": "function",
                "function": {"name": "get_weather", "arguments": raw},
            }
        ],
    }
    p = Provider(
        json_response(200, completion(message, "tool_calls")),
        json_response(200, completion({"content": "ok"})),
    )
    m = model(p)
    res = await m.request(ModelRequest([Message.user("w?")], [WEATHER]))
    call = res.message.tool_calls[0]
    assert call == ToolCall("get_weather", {RAW_ARGUMENTS_KEY: raw}, "call_bad")
    # The agent reports the error and replays the turn: the model sees its own text.
    history = [
        Message.user("w?"),
        res.message,
        Message.tool("call_bad", "get_weather", "arguments are not valid JSON", is_error=True),
    ]
    await m.request(ModelRequest(history, [WEATHER]))
    sent = p.body()["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == raw


async def test_unexpected_response_shape_is_a_model_response_error() -> None:
    p = Provider(json_response(200, {"object": "chat.completion", "choices": []}))
    with pytest.raises(ModelResponseError, match="unexpected response shape"):
        await model(p).request(hello())
    p = Provider(httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(ModelResponseError, match="not valid JSON"):
        await model(p).request(hello())


@pytest.mark.parametrize("split", [None, 1, 7, 64, [5, 6, 100, 101, 250]])
async def test_streamed_text(split: Any) -> None:
    p = Provider(sse_response(TEXT_STREAM, split=split))
    events, res = await collect(model(p), hello())
    assert all(isinstance(e, TextDelta) for e in events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Sunny in Paris, 22 °C ☀️."
    assert res.message == Message.assistant(text)
    assert res.finish_reason == "stop"
    assert (res.usage.input_tokens, res.usage.output_tokens, res.usage.requests) == (12, 7, 1)
    body = p.body()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert p.streams[0].closed


async def test_stream_usage_can_be_turned_off_for_servers_that_reject_it() -> None:
    p = Provider(sse_response(TEXT_STREAM))
    await collect(model(p, stream_usage=False), hello())
    assert "stream_options" not in p.body()


@pytest.mark.parametrize("split", [None, 1, 3, 17, 200])
async def test_streamed_tool_call_deltas(split: Any) -> None:
    p = Provider(sse_response(TOOL_STREAM, split=split))
    events, res = await collect(model(p), ModelRequest([Message.user("w?")], [WEATHER]))
    assert events == [
        ToolCallDelta(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", ""),
        ToolCallDelta(0, arguments_delta='{"ci'),
        ToolCallDelta(0, arguments_delta='ty": "Par'),
        ToolCallDelta(0, arguments_delta='is"}'),
        ToolCallDelta(1, "call_ABCDEF", "get_weather", ""),
        ToolCallDelta(1, arguments_delta='{"city": "Zürich"}'),
    ]
    assert res.finish_reason == "tool_calls"
    assert res.message.tool_calls == [
        ToolCall("get_weather", {"city": "Paris"}, "call_DdmO9pD3xa9XTPNJ32zg2hcA"),
        ToolCall("get_weather", {"city": "Zürich"}, "call_ABCDEF"),
    ]


async def test_streamed_malformed_tool_arguments_are_kept_raw() -> None:
    raw = sse(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": Par'}}]}),
        chunk({}, "tool_calls"),
    )
    p = Provider(sse_response(raw, split=9))
    _, res = await collect(model(p), ModelRequest([Message.user("w?")], [WEATHER]))
    assert res.message.tool_calls == [
        ToolCall("get_weather", {RAW_ARGUMENTS_KEY: '{"city": Par'}, "call_1")
    ]


async def test_stream_closed_after_finish_reason_without_done_is_complete() -> None:
    raw = sse(chunk({"content": "hi"}), chunk({}, "stop"), done=False)
    p = Provider(sse_response(raw))
    events, res = await collect(model(p), hello())
    assert events == [TextDelta("hi")]
    assert res.message.content == "hi"
    assert len(p.requests) == 1


async def test_error_chunk_inside_the_stream() -> None:
    error = {"error": {"message": "The server had an error while processing your request."}}
    raw = sse(chunk({"role": "assistant", "content": ""}), error, done=False)
    p = Provider(sse_response(raw), sse_response(raw), sse_response(raw))
    with pytest.raises(ServerError, match="The server had an error") as info:
        await collect(model(p, max_retries=2, sleep=_no_sleep), hello())
    assert info.value.status_code == 500
    assert len(p.requests) == 3  # nothing was delivered, so each attempt was retried


async def test_json_body_on_a_stream_request_is_a_response_error() -> None:
    p = Provider(json_response(200, completion({"content": "not streamed"})))
    with pytest.raises(ModelResponseError, match="expected an event stream"):
        await collect(model(p), hello())


async def _no_sleep(delay: float) -> None:
    return None


def test_model_string_gives_an_openai_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from openheim.models import infer_model

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    m = infer_model("openai:gpt-4o-mini", max_retries=5)
    assert isinstance(m, OpenAIModel)
    assert m.name == "openai:gpt-4o-mini"
    assert m.context_window is None
    assert repr(m) == "OpenAIModel('gpt-4o-mini', base_url='https://api.openai.com/v1')"


async def test_streamed_tool_calls_without_index() -> None:
    # Some compatible servers omit "index" and repeat the id on every fragment.
    def tc(id_: str, args: str, name: str = "get_weather") -> dict[str, Any]:
        return {"tool_calls": [{"id": id_, "function": {"name": name, "arguments": args}}]}

    raw = sse(
        chunk(tc("call_a", '{"city":')),
        chunk(tc("call_a", '"Oslo"}')),
        chunk(tc("call_b", '{"city":"Rome"}')),
        chunk({}, "tool_calls"),
    )
    p = Provider(sse_response(raw))
    events, res = await collect(model(p), ModelRequest([Message.user("w?")], [WEATHER]))
    assert [e.index for e in events if isinstance(e, ToolCallDelta)] == [0, 0, 1]
    assert res.message.tool_calls == [
        ToolCall("get_weather", {"city": "Oslo"}, "call_a"),
        ToolCall("get_weather", {"city": "Rome"}, "call_b"),
    ]
