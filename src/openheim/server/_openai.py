"""``POST /v1/chat/completions``: the OpenAI Chat Completions API over configured agents.

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
from openheim.server._wire import json_encode

if TYPE_CHECKING:
    from openheim.models import Model


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None


def parse_request(body: bytes) -> ChatRequest:
    try:
        req = msgspec.json.decode(body, type=ChatRequest)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    if not req.messages:
        raise BadRequest("messages must not be empty", "messages")
    return req


def _text(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(f"{where}: only text content parts are supported", where)
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise BadRequest(f"{where}: content must be a string or a list of parts", where)


def to_messages(raw: list[dict[str, Any]]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        role = m.get("role")
        content = _text(m.get("content"), where)
        if role in ("system", "developer"):
            out.append(Message("system", content or ""))
        elif role == "user":
            out.append(Message("user", content or ""))
        elif role == "assistant":
            calls = []
            for c in m.get("tool_calls") or []:
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"{where}: tool_calls need function.name", where)
                try:
                    args = msgspec.json.decode(fn.get("arguments") or "{}")
                except msgspec.DecodeError:
                    args = {"__raw__": fn.get("arguments")}
                if not isinstance(args, dict):
                    args = {"__raw__": fn.get("arguments")}
                calls.append(ToolCall(fn["name"], args, str(c.get("id") or "")))
            out.append(Message("assistant", content, calls))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise BadRequest(f"{where}: tool messages need tool_call_id", where)
            out.append(Message("tool", content or "", tool_call_id=call_id, name=m.get("name")))
        else:
            raise BadRequest(f"{where}: unknown role {role!r}", where)
    return out


def to_model_request(req: ChatRequest) -> ModelRequest:
    tools = []
    for i, t in enumerate(req.tools or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"tools[{i}] needs function.name", f"tools[{i}]")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be an object", "tools")
        tools.append(ToolDefinition(fn["name"], str(fn.get("description") or ""), params))
    choice = "auto"
    if isinstance(req.tool_choice, str):
        if req.tool_choice not in ("auto", "none", "required"):
            raise BadRequest(
                "tool_choice must be auto, none, required or a function", "tool_choice"
            )
        choice = req.tool_choice
    elif isinstance(req.tool_choice, dict):
        fn = req.tool_choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest("tool_choice.function.name is required", "tool_choice")
        choice = fn["name"]
    schema = None
    name = "final_result"
    rf = req.response_format
    if rf is not None:
        kind = rf.get("type")
        if kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
                raise BadRequest(
                    "response_format.json_schema.schema is required", "response_format"
                )
            schema = js.get("schema") or {"type": "object"}
            name = str(js.get("name") or name)
        elif kind == "json_object":
            schema = {"type": "object"}
        elif kind != "text":
            raise BadRequest(f"unknown response_format type {kind!r}", "response_format")
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    settings = ModelSettings(
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=stop,
    )
    return ModelRequest(
        to_messages(req.messages),
        tools,
        settings,
        output_schema=schema,
        output_name=name,
        tool_choice=choice,
    )


def proxy_mode(req: ChatRequest) -> bool:
    rf = req.response_format
    return bool(req.tools) or (rf is not None and rf.get("type") != "text")


# ---- responses ----------------------------------------------------------------------


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _wire_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json_encode(c.arguments).decode()},
        }
        for c in calls
    ]


def completion(cid: str, model: str, message: Message, finish: str, usage: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        msg["tool_calls"] = _wire_calls(message.tool_calls)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
        "usage": wire_usage(usage),
    }


def wire_usage(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


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
