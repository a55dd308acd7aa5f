"""Retries, backoff, error mapping and key secrecy, shared by both remote connectors."""

from __future__ import annotations

import email.utils
import json
import logging
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _connector_wire import (
    SECRET,
    FakeSleep,
    Provider,
    cut,
    drain,
    json_response,
    sse_response,
)

from openheim.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    ModelConnectionError,
    ModelError,
    ModelTimeout,
    RateLimitError,
    ServerError,
)
from openheim.messages import Message
from openheim.models import ModelRequest, TextDelta
from openheim.models._http import MAX_DELAY, Secret
from openheim.models.anthropic import AnthropicModel
from openheim.models.base import ModelResponse
from openheim.models.openai import OpenAIModel

REQUEST = ModelRequest([Message.user("Hello!")])

OPENAI_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
ANTHROPIC_OK = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 3},
}


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_error(message: str, type_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def make_openai(p: Provider, sleep: FakeSleep, **kw: Any) -> OpenAIModel:
    kw.setdefault("api_key", SECRET)
    return OpenAIModel("gpt-4o-mini", http_client=p.client(), sleep=sleep, **kw)


def make_anthropic(p: Provider, sleep: FakeSleep, **kw: Any) -> AnthropicModel:
    kw.setdefault("api_key", SECRET)
    return AnthropicModel("claude-sonnet-4-5", http_client=p.client(), sleep=sleep, **kw)


# Each provider: constructor, a success body, an error body builder.
PROVIDERS: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[[str, str], Any]]] = {
    "openai": (make_openai, OPENAI_OK, lambda msg, t: openai_error(msg, t)),
    "anthropic": (make_anthropic, ANTHROPIC_OK, anthropic_error),
}


@pytest.fixture(params=sorted(PROVIDERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def setup(kind: str, *replies: Any, **kw: Any) -> tuple[Any, Provider, FakeSleep]:
    make, _, _ = PROVIDERS[kind]
    p = Provider(*replies)
    sleep = FakeSleep()
    return make(p, sleep, **kw), p, sleep


def ok(kind: str) -> httpx.Response:
    return json_response(200, PROVIDERS[kind][1])


def err(
    kind: str, status: int, message: str, type_: str = "error", **headers: str
) -> httpx.Response:
    return json_response(status, PROVIDERS[kind][2](message, type_), headers=headers)


# ---- error mapping ------------------------------------------------------------


async def test_401_is_authentication_error_with_provider_message_and_no_retry(kind: str) -> None:
    m, p, sleep = setup(kind, err(kind, 401, "invalid x-api-key", "authentication_error"))
    with pytest.raises(AuthenticationError) as info:
        await m.request(REQUEST)
    exc = info.value
    assert exc.status_code == 401
    assert exc.provider == kind
    assert "invalid x-api-key" in str(exc)
    assert "invalid x-api-key" in exc.body
    assert ("OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY") in str(exc)
    assert len(p.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (404, BadRequestError),
        (422, BadRequestError),
        (403, AuthenticationError),
    ],
)
async def test_client_errors_are_not_retried(kind: str, status: int, cls: type[ModelError]) -> None:
    m, p, _ = setup(kind, err(kind, status, f"refused with {status}"))
    with pytest.raises(cls, match=f"refused with {status}") as info:
        await m.request(REQUEST)
    assert type(info.value) is cls
    assert len(p.requests) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            400,
            openai_error(
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130123 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
        ),
        (
            400,
            anthropic_error(
                "prompt is too long: 208310 tokens > 200000 maximum", "invalid_request_error"
            ),
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5000,
                    "n_ctx": 4096,
                }
            },
        ),
        (400, {"error": "Requested tokens (5000) exceed context window of 4096"}),
    ],
)
async def test_context_too_long_is_context_length_error(kind: str, status: int, body: Any) -> None:
    m, p, _ = setup(kind, json_response(status, body))
    with pytest.raises(ContextLengthError) as info:
        await m.request(REQUEST)
    assert isinstance(info.value, BadRequestError)
    assert info.value.status_code == 400
    assert len(p.requests) == 1


# ---- retries ------------------------------------------------------------------


async def test_429_with_retry_after_then_success(kind: str) -> None:
    m, p, sleep = setup(
        kind,
        err(kind, 429, "Rate limit reached", "rate_limit_error", **{"retry-after": "2"}),
        ok(kind),
    )
    res = await m.request(REQUEST)
    assert res.message.content == "Hi!"
    assert sleep.delays == [2.0]
    assert len(p.requests) == 2


async def test_retry_after_as_http_date_and_in_milliseconds(kind: str) -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    m, _, sleep = setup(
        kind,
        err(kind, 429, "slow down", **{"retry-after": date}),
        err(kind, 429, "slow down", **{"retry-after-ms": "1500", "retry-after": "9"}),
        ok(kind),
    )
    await m.request(REQUEST)
    assert 25 < sleep.delays[0] <= 30
    assert sleep.delays[1] == 1.5


async def test_429_forever_is_rate_limit_error_with_retry_after(kind: str) -> None:
    replies = [err(kind, 429, "Rate limit reached", **{"retry-after": "3"}) for _ in range(3)]
    m, p, sleep = setup(kind, *replies, max_retries=2)
    with pytest.raises(RateLimitError, match="Rate limit reached") as info:
        await m.request(REQUEST)
    assert info.value.retry_after == 3.0
    assert info.value.status_code == 429
    assert "3 attempts" in str(info.value)
    assert len(p.requests) == 3
    assert sleep.delays == [3.0, 3.0]


async def test_a_retry_after_too_long_to_wait_raises_at_once(kind: str) -> None:
    m, p, sleep = setup(kind, err(kind, 429, "quota", **{"retry-after": "3600"}))
    with pytest.raises(RateLimitError) as info:
        await m.request(REQUEST)
    assert info.value.retry_after == 3600.0
    assert len(p.requests) == 1
    assert sleep.delays == []


async def test_500_then_success(kind: str) -> None:
    m, p, sleep = setup(kind, err(kind, 500, "Internal server error", "api_error"), ok(kind))
    res = await m.request(REQUEST)
    assert res.message.content == "Hi!"
    assert len(p.requests) == 2
    assert len(sleep.delays) == 1


async def test_5xx_forever_is_server_error_after_jittered_exponential_backoff(kind: str) -> None:
    replies = [err(kind, s, "Overloaded", "overloaded_error") for s in (503, 529, 500, 502)]
    m, p, sleep = setup(kind, *replies, max_retries=3)
    with pytest.raises(ServerError, match="Overloaded") as info:
        await m.request(REQUEST)
    assert info.value.status_code == 502
    assert len(p.requests) == 4
    assert len(sleep.delays) == 3
    for i, delay in enumerate(sleep.delays):  # full jitter: anywhere in [0, cap]
        assert 0 <= delay <= min(MAX_DELAY, 0.5 * 2**i)


async def test_x_should_retry_false_is_honoured(kind: str) -> None:
    m, p, _ = setup(kind, err(kind, 503, "no", **{"x-should-retry": "false"}))
    with pytest.raises(ServerError):
        await m.request(REQUEST)
    assert len(p.requests) == 1


async def test_501_is_not_retried(kind: str) -> None:
    m, p, _ = setup(kind, err(kind, 501, "not implemented"))
    with pytest.raises(ServerError):
        await m.request(REQUEST)
    assert len(p.requests) == 1


async def test_max_retries_zero_means_one_attempt(kind: str) -> None:
    m, p, _ = setup(kind, err(kind, 500, "boom"), max_retries=0)
    with pytest.raises(ServerError):
        await m.request(REQUEST)
    assert len(p.requests) == 1


async def test_connection_error_then_success(kind: str) -> None:
    m, p, sleep = setup(kind, httpx.ConnectError("[Errno 111] Connection refused"), ok(kind))
    res = await m.request(REQUEST)
    assert res.message.content == "Hi!"
    assert len(p.requests) == 2
    assert len(sleep.delays) == 1


async def test_connection_error_forever(kind: str) -> None:
    replies = [httpx.ConnectError("[Errno 111] Connection refused") for _ in range(3)]
    m, p, _ = setup(kind, *replies)
    with pytest.raises(ModelConnectionError, match="Connection refused") as info:
        await m.request(REQUEST)
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(p.requests) == 3


async def test_read_timeout_is_model_timeout_and_not_retried(kind: str) -> None:
    m, p, _ = setup(kind, httpx.ReadTimeout("timed out"), timeout=30)
    with pytest.raises(ModelTimeout, match="30s") as info:
        await m.request(REQUEST)
    assert isinstance(info.value, TimeoutError)
    assert len(p.requests) == 1


# ---- streams: retried only before the first event ---------------------------

OPENAI_STREAM_HEAD = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
)
OPENAI_STREAM_REST = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_STREAM_HEAD = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
)
ANTHROPIC_STREAM_REST = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
STREAMS = {
    "openai": (OPENAI_STREAM_HEAD, OPENAI_STREAM_REST),
    "anthropic": (ANTHROPIC_STREAM_HEAD, ANTHROPIC_STREAM_REST),
}


async def test_full_stream_in_one_attempt(kind: str) -> None:
    head, rest = STREAMS[kind]
    m, p, _ = setup(kind, sse_response(head + rest, split=5))
    events = [e async for e in m.stream(REQUEST)]
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo")]
    assert isinstance(events[-1], ModelResponse)
    assert events[-1].message.content == "Hello"
    assert len(p.requests) == 1


async def test_stream_cut_after_the_first_token_is_not_retried(kind: str) -> None:
    head, rest = STREAMS[kind]
    first_token_end = rest.index(b"\n\n") + 2
    m, p, sleep = setup(
        kind,
        sse_response(head + rest[: first_token_end + 10], error=cut()),
        sse_response(head + rest),  # must never be requested
    )
    received: list[Any] = []
    with pytest.raises(ModelConnectionError, match="interrupted after 1 events") as info:
        await drain(m.stream(REQUEST), received)
    assert received == [TextDelta("Hel")]
    assert "not retried" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert len(p.requests) == 1
    assert sleep.delays == []
    assert p.streams[0].closed


async def test_stream_cut_before_the_first_token_is_retried(kind: str) -> None:
    head, rest = STREAMS[kind]
    m, p, sleep = setup(
        kind, sse_response(head + rest[:20], split=7, error=cut()), sse_response(head + rest)
    )
    events = [e async for e in m.stream(REQUEST)]
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo")]
    assert len(p.requests) == 2
    assert len(sleep.delays) == 1
    assert all(s.closed for s in p.streams)


async def test_stream_that_ends_early_without_error_is_retried_then_fails(kind: str) -> None:
    head, _ = STREAMS[kind]
    m, p, _ = setup(kind, *(sse_response(head) for _ in range(3)))
    with pytest.raises(ModelConnectionError, match="ended before its final event"):
        [e async for e in m.stream(REQUEST)]
    assert len(p.requests) == 3


async def test_stream_status_errors_are_retried_like_requests(kind: str) -> None:
    head, rest = STREAMS[kind]
    m, p, sleep = setup(
        kind,
        err(kind, 429, "busy", **{"retry-after": "1"}),
        httpx.ConnectError("refused"),
        sse_response(head + rest),
    )
    events = [e async for e in m.stream(REQUEST)]
    assert isinstance(events[-1], ModelResponse)
    assert sleep.delays[0] == 1.0
    assert len(p.requests) == 3


async def test_stream_auth_error(kind: str) -> None:
    m, p, _ = setup(kind, err(kind, 401, "bad key"))
    with pytest.raises(AuthenticationError, match="bad key"):
        [e async for e in m.stream(REQUEST)]
    assert len(p.requests) == 1


async def test_abandoning_a_stream_closes_the_response(kind: str) -> None:
    head, rest = STREAMS[kind]
    m, p, _ = setup(kind, sse_response(head + rest, split=11))
    stream = m.stream(REQUEST)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert p.streams[0].closed


# ---- the API key never leaks --------------------------------------------------


async def test_api_key_never_appears_in_errors_reprs_or_logs(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = "OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY"
    monkeypatch.setenv(env, SECRET)
    echo = f"Incorrect API key provided: {SECRET}. You can find your API key in the console."
    m, p, _ = setup(
        kind,
        err(kind, 401, echo),
        err(kind, 500, f"boom {SECRET}"),
        err(kind, 500, f"boom {SECRET}"),
        err(kind, 500, f"boom {SECRET}"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        api_key=None,
    )
    assert p.replies  # the key came from the environment
    errors: list[ModelError] = []
    for _ in range(3):
        with pytest.raises(ModelError) as info:
            await m.request(REQUEST)
        errors.append(info.value)
    # The key was really sent, so the test would catch a leak.
    sent = [r.headers.get("authorization", "") + r.headers.get("x-api-key", "") for r in p.requests]
    assert all(SECRET in s for s in sent)
    assert "Incorrect API key provided: ***" in str(errors[0])
    for exc in errors:
        texts = [str(exc), repr(exc), getattr(exc, "body", "")]
        texts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        for text in texts:
            assert SECRET not in text
    assert SECRET not in repr(m)
    assert SECRET not in str(vars(m))
    assert SECRET not in caplog.text
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_secret_hides_itself() -> None:
    s = Secret(SECRET)
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in f"{s}"
    assert s.redact(f"a {SECRET} b") == "a *** b"
    with pytest.raises(TypeError):
        pickle.dumps(s)


# ---- the pooled client --------------------------------------------------------


async def test_own_client_is_created_lazily_and_closed_by_aclose(kind: str) -> None:
    model = (OpenAIModel if kind == "openai" else AnthropicModel)("m", api_key=SECRET)
    assert model._http._client is None  # nothing opened until the first request
    client = model._http._http()
    assert model._http._http() is client  # one pooled client per connector
    await model.aclose()
    assert client.is_closed


async def test_injected_client_is_left_open(kind: str) -> None:
    m, _p, _ = setup(kind, ok(kind))
    async with m:
        await m.request(REQUEST)
    client = m._http._client
    assert client is not None
    assert not client.is_closed
    await client.aclose()


def test_request_body_is_json(kind: str) -> None:
    m, _, _ = setup(kind)
    body = m._body(REQUEST, stream=False)
    assert json.loads(json.dumps(body))["messages"]


async def test_connect_timeout_is_retried_then_model_timeout(kind: str) -> None:
    replies = [httpx.ConnectTimeout("timed out") for _ in range(3)]
    m, p, _ = setup(kind, *replies, timeout=40)
    with pytest.raises(ModelTimeout, match="15s"):  # connecting is capped at 15 s
        await m.request(REQUEST)
    assert len(p.requests) == 3


async def test_injected_client_keeps_its_timeout_unless_one_is_given(kind: str) -> None:
    seen: list[Any] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return ok(kind)

    make = PROVIDERS[kind][0]
    for timeout in (None, 42.0):
        p = Provider(record)
        client = httpx.AsyncClient(transport=httpx.MockTransport(p.handler), timeout=7.0)
        kw = {} if timeout is None else {"timeout": timeout}
        model = make(p, FakeSleep(), **kw)
        model._http._client = client
        await model.request(REQUEST)
        await client.aclose()
    assert seen[0]["read"] == 7.0
    assert seen[1]["read"] == 42.0
    assert seen[1]["connect"] == 15.0


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://x", "x"])
def test_base_url_needs_a_scheme(kind: str, url: str) -> None:
    cls = OpenAIModel if kind == "openai" else AnthropicModel
    with pytest.raises(ConfigError, match="base_url"):
        cls("m", base_url=url, api_key=SECRET)


@pytest.mark.parametrize(
    "error",
    [
        httpx.DecodingError("bad gzip"),
        httpx.LocalProtocolError("bad header"),
        httpx.UnsupportedProtocol("x"),
    ],
)
async def test_errors_of_our_own_request_are_not_retried(kind: str, error: Exception) -> None:
    m, p, _ = setup(kind, error, ok(kind))
    with pytest.raises(ModelConnectionError, match=r"request to .* failed"):
        await m.request(REQUEST)
    assert len(p.requests) == 1
