"""The OpenAI Chat Completions wire format: requests to messages and model requests, answers back.

``model`` names a configured agent. Two modes:

- the client sends ``tools`` or a ``response_format``: the server is a model
  proxy: the agent's model answers the conversation as given, and tool calls
  go back to the client to run;
- otherwise the agent runs, with its own instructions and tools on the
  server, on the last user message (earlier messages are its history).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.messages import Message, ToolCall
from openheim.models.base import (
    ModelRequest,
    ModelResponse,
    ModelSettings,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)
from openheim.server._schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ChatToolCall,
    Choice,
    CompletionMessage,
    CompletionUsage,
    ContentPart,
    FunctionCall,
)
from openheim.server._wire import BadRequest, decode_body, json_encode

if TYPE_CHECKING:
    from openheim.models import Model

ChatRequest = ChatCompletionRequest


def parse_request(body: bytes) -> ChatRequest:
    req = decode_body(body, ChatRequest)
    if not req.messages:
        raise BadRequest("messages must not be empty", "messages")
    return req


def _text(content: str | list[ContentPart] | None, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text":
            raise BadRequest(f"{where}: only text content parts are supported", where)
        parts.append(part.text)
    return "".join(parts)


def to_messages(raw: list[ChatMessage]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        content = _text(m.content, where)
        if m.role in ("system", "developer"):
            out.append(Message("system", content or ""))
        elif m.role == "user":
            out.append(Message("user", content or ""))
        elif m.role == "assistant":
            calls = []
            for c in m.tool_calls or []:
                try:
                    args = msgspec.json.decode(c.function.arguments or "{}")
                except msgspec.DecodeError:
                    args = {"__raw__": c.function.arguments}
                if not isinstance(args, dict):
                    args = {"__raw__": c.function.arguments}
                calls.append(ToolCall(c.function.name, args, c.id))
            out.append(Message("assistant", content, calls))
        else:
            if m.tool_call_id is None:
                raise BadRequest(f"{where}: tool messages need tool_call_id", where)
            out.append(Message("tool", content or "", tool_call_id=m.tool_call_id, name=m.name))
    return out


def settings(req: ChatRequest) -> ModelSettings:
    """The request's sampling settings (what it leaves out stays the agent's or the model's)."""
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    return ModelSettings(
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=stop,
    )


def to_model_request(req: ChatRequest) -> ModelRequest:
    tools = [
        ToolDefinition(
            t.function.name,
            t.function.description,
            t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in req.tools or []
    ]
    choice = "auto"
    if isinstance(req.tool_choice, str):
        choice = req.tool_choice
    elif req.tool_choice is not None:
        choice = req.tool_choice.function.name
    schema = None
    name = "final_result"
    rf = req.response_format
    if rf is not None:
        if rf.type == "json_schema":
            if rf.json_schema is None:
                raise BadRequest(
                    "response_format.json_schema is required for type json_schema",
                    "response_format",
                )
            schema = rf.json_schema.schema or {"type": "object"}
            name = rf.json_schema.name
        elif rf.type == "json_object":
            schema = {"type": "object"}
    return ModelRequest(
        to_messages(req.messages),
        tools,
        settings(req),
        output_schema=schema,
        output_name=name,
        tool_choice=choice,
    )


def proxy_mode(req: ChatRequest) -> bool:
    rf = req.response_format
    return bool(req.tools) or (rf is not None and rf.type != "text")


# ---- responses ----------------------------------------------------------------------


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _wire_calls(calls: list[ToolCall]) -> list[ChatToolCall]:
    return [
        ChatToolCall(c.id, FunctionCall(c.name, json_encode(c.arguments).decode())) for c in calls
    ]


def completion(cid: str, model: str, message: Message, finish: str, usage: Any) -> ChatCompletion:
    msg = CompletionMessage(message.content)
    if message.tool_calls:
        msg.tool_calls = _wire_calls(message.tool_calls)
    return ChatCompletion(
        id=cid,
        created=int(time.time()),
        model=model,
        choices=[Choice(0, msg, finish)],
        usage=wire_usage(usage),
    )


def wire_usage(usage: Any) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + json_encode(body) + b"\n\n"


def usage_chunk(cid: str, model: str, usage: Any) -> bytes:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": wire_usage(usage),
    }
    return b"data: " + json_encode(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def proxy_stream(
    model: Model, request: ModelRequest, cid: str, name: str, include_usage: bool
) -> AsyncIterator[bytes]:
    yield chunk(cid, name, {"role": "assistant", "content": ""})
    async for ev in model.stream(request):
        if isinstance(ev, TextDelta):
            yield chunk(cid, name, {"content": ev.text})
        elif isinstance(ev, ToolCallDelta):
            call: dict[str, Any] = {"index": ev.index}
            if ev.id is not None or ev.name is not None:
                call.update(id=ev.id, type="function")
                call["function"] = {"name": ev.name, "arguments": ev.arguments_delta}
            else:
                call["function"] = {"arguments": ev.arguments_delta}
            yield chunk(cid, name, {"tool_calls": [call]})
        elif isinstance(ev, ModelResponse):
            yield chunk(cid, name, {}, ev.finish_reason)
            if include_usage:
                yield usage_chunk(cid, name, ev.usage)
    yield DONE
