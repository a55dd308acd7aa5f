"""LlamaModel on a real llama.cpp context, with a tiny random-weight GGUF."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from openheim.errors import ConfigError, ContextLengthError
from openheim.messages import Message, ToolCall
from openheim.models.base import (
    ModelRequest,
    ModelResponse,
    ModelSettings,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)

pytestmark = pytest.mark.llama

CALC = ToolDefinition(
    "calculator",
    "Evaluate an arithmetic expression.",
    {
        "type": "object",
        # Bounded so that even random weights finish the call within max_tokens.
        "properties": {
            "expression": {"type": "string", "maxLength": 8},
            "precision": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["expression"],
    },
)
WEATHER = ToolDefinition(
    "weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["paris", "london"]}},
        "required": ["city"],
    },
)


def _req(text: str, **kw: Any) -> ModelRequest:
    settings = kw.pop("settings", ModelSettings(max_tokens=24))
    return ModelRequest([Message.system("Be brief."), Message.user(text)], settings=settings, **kw)


async def _collect(model: Any, request: ModelRequest) -> tuple[list[Any], ModelResponse]:
    events = [ev async for ev in model.stream(request)]
    final = events[-1]
    assert isinstance(final, ModelResponse)
    return events[:-1], final


async def test_plain_generation_streams_the_final_text(
    llama_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = llama_model.engine
    submitted: list[Any] = []
    real_submit = engine.submit

    def spy(req: Any) -> None:
        submitted.append(req)
        real_submit(req)

    monkeypatch.setattr(engine, "submit", spy)
    events, final = await _collect(llama_model, _req("hello world"))
    assert all(isinstance(e, TextDelta) for e in events)
    text = "".join(e.text for e in events)
    assert text == final.message.content
    assert final.usage.input_tokens > 5
    assert 0 <= final.usage.output_tokens <= 24
    assert final.finish_reason in ("stop", "length")
    # Random weights emit arbitrary byte tokens, so the text may hold U+FFFD:
    # it must be exactly the "replace" decoding of the generated tokens' bytes.
    (gen,) = submitted
    tokens = gen.buffer.tokens()
    assert len(tokens) == final.usage.output_tokens
    pieces = b"".join(engine.native.piece(t) for t in tokens)
    assert text == pieces.decode("utf-8", "replace")


async def test_chat_template_comes_from_the_gguf(llama_model: Any) -> None:
    prompt = llama_model.renderer.render([Message.user("hi")])
    assert prompt.startswith("<|im_start|>user\nhi<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_base_model_uses_the_plain_template(tiny_base_gguf: Path) -> None:
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_base_gguf), n_ctx=512, n_parallel=1, n_threads=1)
    try:
        assert model.renderer.is_plain
        prompt = model.renderer.render([Message.system("Sys."), Message.user("hi")])
        assert prompt == "Sys.\n\nUser: hi\nAssistant:"
    finally:
        model.close()


@pytest.mark.parametrize("seed", range(4))
async def test_constrained_tool_calls_always_validate(llama_model: Any, seed: int) -> None:
    """Random weights, sampling at temperature 1: every reply still parses and validates."""
    request = _req(
        "what is 2+2 and the weather?",
        tools=[CALC, WEATHER],
        tool_choice="required",
        settings=ModelSettings(max_tokens=200, temperature=1.0, seed=seed),
    )
    events, final = await _collect(llama_model, request)
    calls = final.message.tool_calls
    assert final.finish_reason == "tool_calls"
    assert len(calls) == 1
    call = calls[0]
    schema = {"calculator": CALC, "weather": WEATHER}[call.name].parameters
    jsonschema.validate(call.arguments, schema)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == call.name
    assert deltas[0].id == call.id
    assert json.loads("".join(d.arguments_delta for d in deltas)) == call.arguments


async def test_structured_output_validates(llama_model: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "rainy": {"type": "boolean"}},
        "required": ["city", "rainy"],
        "additionalProperties": False,
    }
    request = _req(
        "weather?",
        output_schema=schema,
        settings=ModelSettings(max_tokens=200, temperature=0.8, seed=3),
    )
    events, final = await _collect(llama_model, request)
    value = json.loads(final.message.content or "")
    jsonschema.validate(value, schema)
    assert json.loads("".join(e.text for e in events if isinstance(e, TextDelta))) == value


async def test_concurrent_requests_share_decode_steps(llama_model: Any) -> None:
    engine = llama_model.engine
    engine.reset_peak()
    requests = [
        _req(f"tell me about the city number {i}", settings=ModelSettings(max_tokens=40, seed=i))
        for i in range(4)
    ]
    finals = await asyncio.gather(*(llama_model.request(r) for r in requests))
    assert len(finals) == 4
    assert all(f.usage.output_tokens <= 40 for f in finals)
    assert engine.max_batch_seqs >= 2, "concurrent requests must decode in the same step"


async def test_next_turn_reuses_the_cached_prefix(llama_model: Any) -> None:
    engine = llama_model.engine
    history = [Message.system("You answer about weather."), Message.user("weather in paris?")]
    first = await llama_model.request(ModelRequest(history, settings=ModelSettings(max_tokens=8)))
    cached_before = engine.prompt_cached
    history += [first.message, Message.user("and in london?")]
    second = await llama_model.request(ModelRequest(history, settings=ModelSettings(max_tokens=8)))
    reused = engine.prompt_cached - cached_before
    assert reused >= first.usage.input_tokens - 1
    assert second.usage.input_tokens > first.usage.input_tokens


async def test_cancel_frees_the_slot_at_once(llama_model: Any) -> None:
    engine = llama_model.engine
    request = _req("go on forever", settings=ModelSettings(max_tokens=100000))
    received: list[Any] = []

    async def consume() -> None:
        async for event in llama_model.stream(request):
            received.append(event)

    task = asyncio.ensure_future(consume())
    while not task.done() and (engine.n_active == 0 or not received):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5000):
        if engine.n_active == 0:
            break
        await asyncio.sleep(0.002)
    assert engine.n_active == 0
    # and the model keeps serving
    final = await llama_model.request(_req("still there?"))
    assert final.finish_reason in ("stop", "length")


async def test_prompt_longer_than_the_context_is_refused(tiny_gguf: Path) -> None:
    from openheim.models.llama import LlamaModel

    model = LlamaModel(str(tiny_gguf), n_ctx=64, n_parallel=1, n_threads=1)
    try:
        with pytest.raises(ContextLengthError, match="context holds"):
            await model.request(_req("word " * 200))
    finally:
        model.close()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from openheim.models.llama import LlamaModel

    with pytest.raises(ConfigError, match="no GGUF model file"):
        LlamaModel(str(tmp_path / "nope.gguf"))


def test_infer_model_builds_llama_models(tiny_gguf: Path) -> None:
    from openheim.models import infer_model

    model = infer_model(f"llama:{tiny_gguf}", n_ctx=256, n_parallel=1, n_threads=1)
    try:
        assert model.name == "llama:tiny.gguf"
        assert model.context_window == 256
    finally:
        model.close()  # type: ignore[attr-defined]


def test_tool_history_renders_as_json_replies(llama_model: Any) -> None:
    msgs = [
        Message.user("2+2?"),
        Message.assistant(None, [ToolCall("calculator", {"expression": "2+2"}, "c1")]),
        Message.tool("c1", "calculator", "4"),
    ]
    prompt = llama_model.renderer.render(msgs, tools=[CALC], constrained=True)
    assert '{"tool": "calculator", "arguments": {"expression": "2+2"}}' in prompt
    assert "Result of calculator: 4" in prompt
