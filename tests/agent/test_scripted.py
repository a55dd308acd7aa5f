"""ScriptedModel: replies, functions, streaming, usage, recorded requests, errors."""

from __future__ import annotations

import dataclasses
import json

import pydantic
import pytest

import openheim as oh
from openheim.errors import ModelError
from openheim.models import (
    Model,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    TextDelta,
    ToolCallDelta,
    infer_model,
)


def _request(text: str = "hi") -> ModelRequest:
    return ModelRequest([oh.Message.user(text)])


def test_it_is_a_model() -> None:
    model = ScriptedModel([], name="t", context_window=1000)
    assert isinstance(model, Model)
    assert model.name == "scripted:t"
    assert model.context_window == 1000
    assert infer_model(model) is model


async def test_reply_kinds() -> None:
    class Pt(pydantic.BaseModel):
        x: int

    @dataclasses.dataclass
    class Dc:
        y: int

    model = ScriptedModel(
        [
            "text",
            oh.ToolCall("f", {"a": 1}),
            [oh.ToolCall("f"), oh.ToolCall("g", id="mine")],
            {"k": [1, 2]},
            Pt(x=3),
            Dc(4),
            oh.Message.assistant("both", [oh.ToolCall("h")]),
            ModelResponse(oh.Message.assistant("raw"), finish_reason="length"),
            ValueError("provider exploded"),
        ]
    )
    r = await model.request(_request())
    assert (r.message.content, r.finish_reason) == ("text", "stop")
    r = await model.request(_request())
    assert r.finish_reason == "tool_calls"
    assert r.message.tool_calls == [oh.ToolCall("f", {"a": 1}, "call_1")]
    r = await model.request(_request())
    assert [c.id for c in r.message.tool_calls] == ["call_2", "mine"]
    assert json.loads((await model.request(_request())).message.content or "") == {"k": [1, 2]}
    assert json.loads((await model.request(_request())).message.content or "") == {"x": 3}
    assert json.loads((await model.request(_request())).message.content or "") == {"y": 4}
    r = await model.request(_request())
    assert r.message.content == "both"
    assert r.message.tool_calls[0].id == "call_3"
    assert (await model.request(_request())).finish_reason == "length"
    with pytest.raises(ValueError, match="provider exploded"):
        await model.request(_request())
    assert len(model.requests) == 9
    assert model.remaining == 0
    with pytest.raises(ModelError, match="ran out of replies: its script has 9 and request #10"):
        await model.request(_request("again"))


async def test_function_replies_sync_and_async() -> None:
    def sync(request: ModelRequest) -> str:
        return f"echo {request.messages[-1].content}"

    async def asynchronous(request: ModelRequest) -> oh.ToolCall:
        return oh.ToolCall("t", {"q": request.messages[-1].content})

    assert (await ScriptedModel(sync).request(_request("a"))).message.content == "echo a"
    r = await ScriptedModel(asynchronous).request(_request("b"))
    assert r.message.tool_calls[0].arguments == {"q": "b"}


async def test_usage_is_estimated() -> None:
    model = ScriptedModel(["x" * 400])
    r = await model.request(_request("y" * 400))
    assert r.usage.requests == 1
    assert 90 <= r.usage.input_tokens <= 130
    assert 90 <= r.usage.output_tokens <= 110


async def test_streaming_chunks_join_back() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    model = ScriptedModel(
        [oh.Message.assistant(text, [oh.ToolCall("f", {"a": 1, "b": "two"}, "x")])]
    )
    events = [ev async for ev in model.stream(_request())]
    assert isinstance(events[-1], ModelResponse)
    deltas = [ev.text for ev in events if isinstance(ev, TextDelta)]
    assert len(deltas) == 9
    assert "".join(deltas) == text
    calls = [ev for ev in events if isinstance(ev, ToolCallDelta)]
    assert (calls[0].id, calls[0].name, calls[0].arguments_delta) == ("x", "f", "")
    fragments = [ev.arguments_delta for ev in calls[1:]]
    assert len(fragments) == 3
    assert json.loads("".join(fragments)) == {"a": 1, "b": "two"}
    assert len(model.requests) == 1
