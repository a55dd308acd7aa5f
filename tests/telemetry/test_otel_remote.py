"""A remote OpenAI-compatible model over httpx MockTransport: one chat span per call."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from telhelpers import Spans

import openheim as oh
from openheim.errors import ServerError
from openheim.messages import Message
from openheim.models import ModelRequest, ModelSettings
from openheim.models.openai import OpenAIModel

KEY = "sk-otel-test-key-0123456789abcdef"


def completion(content: str, prompt: int = 19, completion_tokens: int = 10) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


def sse(*chunks: dict[str, Any]) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def model(handler: Any) -> OpenAIModel:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIModel(
        "gpt-4o-mini",
        base_url="https://llm.example.com:8443/v1",
        api_key=KEY,
        http_client=client,
        max_retries=0,
    )


async def test_direct_call(spans: Spans) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion("Paris."))

    m = model(handler)
    req = ModelRequest([Message.user("Capital of France?")], settings=ModelSettings(max_tokens=50))
    response = await m.request(req)
    assert response.message.content == "Paris."
    assert len(seen) == 1
    span = spans.one("chat gpt-4o-mini")
    assert span.kind.name == "CLIENT"
    a = dict(span.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.usage.input_tokens"] == 19
    assert a["gen_ai.usage.output_tokens"] == 10
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["server.address"] == "llm.example.com"
    assert a["server.port"] == 8443
    assert "gen_ai.input.messages" not in a
    for value in a.values():
        assert KEY not in str(value)


async def test_agent_streaming_over_the_wire_makes_one_chat_span(spans: Spans) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = sse(
            chunk({"role": "assistant", "content": "Par"}),
            chunk({"content": "is."}),
            chunk({}, "stop"),
            {
                "id": "chatcmpl-2",
                "object": "chat.completion.chunk",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            },
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    agent = oh.Agent(model(handler), name="geo")
    text = []
    async for event in agent.stream("Capital of France?", session="conv-1"):
        if isinstance(event, oh.TextDelta):
            text.append(event.text)
    assert "".join(text) == "Paris."
    # The loop observes the call; the connector only adds where it went: one span, not two.
    chat = spans.one("chat gpt-4o-mini")
    run = spans.one("invoke_agent geo")
    assert spans.is_child(chat, run)
    a = dict(chat.attributes or {})
    assert a["gen_ai.conversation.id"] == "conv-1"
    assert a["gen_ai.usage.input_tokens"] == 7
    assert a["gen_ai.usage.output_tokens"] == 2
    assert a["server.address"] == "llm.example.com"
    assert (run.attributes or {})["gen_ai.provider.name"] == "openai"


async def test_a_server_error_fails_the_span(spans: Spans) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "overloaded"}})

    with pytest.raises(ServerError):
        await model(handler).request(ModelRequest([Message.user("hi")]))
    span = spans.one("chat gpt-4o-mini")
    assert not span.status.is_ok
    assert (span.attributes or {})["error.type"] == "ServerError"
    assert KEY not in (span.status.description or "")


async def test_content_capture_on_a_remote_call(
    spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "True")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion("Paris."))

    await model(handler).request(
        ModelRequest([Message.system("Be brief."), Message.user("Capital of France?")])
    )
    a = dict(spans.one("chat gpt-4o-mini").attributes or {})
    assert json.loads(str(a["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}
    ]
    assert json.loads(str(a["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json.loads(str(a["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Paris."}],
            "finish_reason": "stop",
        }
    ]


class Body(httpx.AsyncByteStream):
    """A streamed body that records whether it was closed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    async def __aiter__(self) -> Any:
        for i in range(0, len(self.data), 16):
            yield self.data[i : i + 16]

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("observing", ["spans", "metrics"])
async def test_an_abandoned_stream_closes_its_response_at_once(
    observing: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(observing)
    body = Body(sse(chunk({"role": "assistant", "content": "Par"}), chunk({"content": "is."})))

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    stream = model(handler).stream(ModelRequest([Message.user("hi")]))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert body.closed  # now, not when the garbage collector gets to it


async def test_an_abandoned_agent_stream_closes_the_model_response(spans: Spans) -> None:
    body = Body(sse(chunk({"role": "assistant", "content": "Par"}), chunk({"content": "is."})))

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    events = oh.Agent(model(handler), name="geo").stream("hi")
    async for event in events:
        if isinstance(event, oh.TextDelta):
            break
    await events.aclose()
    assert body.closed
    run = spans.one("invoke_agent geo")
    assert (run.attributes or {})["openheim.run.status"] == "cancelled"
    assert spans.is_child(spans.one("chat gpt-4o-mini"), run)
