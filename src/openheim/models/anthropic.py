"""Anthropic's Messages API.

``AnthropicModel("claude-sonnet-4-5")`` with the key in ``ANTHROPIC_API_KEY``.

Mapping:

- ``system`` messages are joined into the top-level ``system`` field.
- assistant tool calls become ``tool_use`` blocks; tool results become
  ``tool_result`` blocks (with ``is_error``) in a user message, and
  consecutive messages of one role are merged into one message (so several
  results of one turn travel together, as the API expects).
- tools carry ``input_schema``; ``tool_choice`` "auto" (not sent), "required"
  (``{"type": "any"}``), "none" and a tool name (``{"type": "tool"}``).
- settings: ``max_tokens`` (required by the API; ``max_tokens=`` of the
  connector is the default), temperature, top_p, ``stop`` as
  ``stop_sequences``. The API has no ``seed``; it is ignored.
- structured output: the Messages API has no response schema, so the schema
  becomes a tool named ``output_name`` that the model must call (forced when
  it is the only tool; ``{"type": "any"}`` when the agent's tools are offered
  too). Its input is returned as the final answer: the message content is its
  JSON text, the finish reason "stop", and when streaming its
  ``input_json_delta`` fragments arrive as TextDelta. If the model calls real
  tools in the same turn, those calls are returned and the output call is
  dropped (the model answers again after the tool results).
- streaming: message_start, content_block_start/delta/stop (text, tool_use),
  message_delta (stop reason, usage), message_stop; ping is ignored; an
  ``error`` event becomes the matching error (retried, like an HTTP status,
  when nothing was delivered yet).
- usage: input tokens include cache reads and writes.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from openheim.errors import ConfigError, ModelResponseError
from openheim.messages import Message, ToolCall, Usage
from openheim.models._http import (
    HTTPClient,
    HTTPModel,
    ProviderErrorEvent,
    SleepFn,
    parse_tool_arguments,
    resolve_api_key,
)
from openheim.models._sse import SSEEvent
from openheim.models.base import (
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["AnthropicModel"]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The HTTP status each documented error type is sent with (for errors inside a stream).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_OUTPUT_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool; its input is the answer, "
    "following the schema exactly."
)


def _stop_reason(raw: object) -> FinishReason:
    return _STOP.get(raw, "stop") if isinstance(raw, str) else "stop"


def _usage(raw: object, into: Usage | None = None) -> Usage:
    usage = into if into is not None else Usage(requests=1)
    if not isinstance(raw, dict):
        return usage
    if "input_tokens" in raw:
        usage.input_tokens = (
            int(raw.get("input_tokens") or 0)
            + int(raw.get("cache_creation_input_tokens") or 0)
            + int(raw.get("cache_read_input_tokens") or 0)
        )
    if "output_tokens" in raw:
        usage.output_tokens = int(raw.get("output_tokens") or 0)
    return usage


class AnthropicModel(HTTPModel):
    """A model behind Anthropic's Messages API.

    The API key comes from ``api_key=`` or the variable named by
    ``api_key_env`` (``ANTHROPIC_API_KEY``); it is optional only for a
    ``base_url`` other than api.anthropic.com. ``max_tokens`` is the
    per-request output cap used when the request's settings give none (the
    API requires one). ``http_client``, ``max_retries``, ``timeout`` and
    ``sleep`` work as in :class:`~openheim.models.openai.OpenAIModel`.
    """

    provider = "anthropic"
    _path = "/v1/messages"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        anthropic_version: str = "2023-06-01",
        max_tokens: int = 4096,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int = 2,
        timeout: float | None = None,
        context_window: int | None = None,
        extra_headers: dict[str, str] | None = None,
        sleep: SleepFn | None = None,
    ) -> None:
        if max_tokens <= 0:
            raise ConfigError(f"anthropic: max_tokens must be positive, got {max_tokens}")
        official = base_url is None or "api.anthropic.com" in base_url
        secret = resolve_api_key(self.provider, api_key, api_key_env, required=official)
        self._max_tokens = max_tokens
        fixed = {**(extra_headers or {}), "anthropic-version": anthropic_version}

        def headers() -> dict[str, str]:
            if secret is None:
                return fixed
            return {**fixed, "x-api-key": secret.reveal()}

        env_hint = f"the {api_key_env} environment variable or " if api_key_env else ""
        http = HTTPClient(
            provider=self.provider,
            base_url=base_url or ANTHROPIC_BASE_URL,
            headers=headers,
            secret=secret,
            key_hint=f"{env_hint}api_key=",
            http_client=http_client,
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
        )
        super().__init__(model, http, context_window)

    # ---- request body -----------------------------------------------------------

    def _body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        s = request.settings
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": s.max_tokens if s.max_tokens is not None else self._max_tokens,
            "messages": self._messages(request.messages),
        }
        system = "\n\n".join(
            m.content for m in request.messages if m.role == "system" and m.content
        )
        if system:
            body["system"] = system
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice not in ("auto", "required", "none") and all(
            t.name != choice for t in request.tools
        ):
            raise ConfigError(
                f"tool_choice {choice!r} names no tool of the request; "
                "use 'auto', 'required', 'none' or one of the tools' names"
            )
        tool_choice: dict[str, Any] | None = None
        if request.output_schema is not None:
            tools.append(
                {
                    "name": request.output_name,
                    "description": _OUTPUT_TOOL_DESCRIPTION,
                    "input_schema": request.output_schema,
                }
            )
            if choice == "none":
                tool_choice = {"type": "none"}
            elif choice not in ("auto", "required"):
                tool_choice = {"type": "tool", "name": choice}
            elif request.tools:
                tool_choice = {"type": "any"}  # a real tool, or the answer
            else:
                tool_choice = {"type": "tool", "name": request.output_name}
        elif tools:
            if choice == "required":
                tool_choice = {"type": "any"}
            elif choice == "none":
                tool_choice = {"type": "none"}
            elif choice != "auto":
                tool_choice = {"type": "tool", "name": choice}
        if tools:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.stop:
            body["stop_sequences"] = list(s.stop)
        if stream:
            body["stream"] = True
        return body

    @staticmethod
    def _messages(messages: list[Message]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in messages:
            blocks: list[dict[str, Any]] = []
            if m.role == "system":
                continue
            if m.role == "tool":
                role = "user"
                result: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id or "",
                    "content": m.content or "",
                }
                if m.is_error:
                    result["is_error"] = True
                blocks.append(result)
            else:
                role = m.role
                if m.content:  # the API refuses empty text blocks
                    blocks.append({"type": "text", "text": m.content})
                for c in m.tool_calls:
                    blocks.append(
                        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                    )
            if not blocks:
                continue
            if out and out[-1]["role"] == role:
                out[-1]["content"].extend(blocks)
            else:
                out.append({"role": role, "content": blocks})
        return out

    # ---- responses --------------------------------------------------------------

    def _parse(self, payload: Any, request: ModelRequest) -> ModelResponse:
        output_name = request.output_name if request.output_schema is not None else None
        try:
            texts: list[str] = []
            calls: list[ToolCall] = []
            answer: str | None = None
            for block in payload["content"]:
                kind = block.get("type")
                if kind == "text":
                    texts.append(block["text"])
                elif kind == "tool_use":
                    args = block.get("input")
                    if block["name"] == output_name:
                        answer = msgspec.json.encode(args).decode()
                        continue
                    arguments = args if isinstance(args, dict) else parse_tool_arguments(str(args))
                    calls.append(ToolCall(block["name"], arguments, block["id"]))
            finish = _stop_reason(payload.get("stop_reason"))
            usage = _usage(payload.get("usage"))
            model_name = str(payload.get("model") or self.model)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelResponseError(
                f"anthropic: unexpected response shape ({type(exc).__name__}: {exc}): "
                f"{msgspec.json.encode(payload)[:500].decode('utf-8', 'replace')}",
                provider=self.provider,
            ) from None
        text = "".join(texts) or None
        if answer is not None and not calls:
            return ModelResponse(Message.assistant(answer), usage, "stop", model_name)
        return ModelResponse(Message.assistant(text, calls), usage, finish, model_name)

    def _stream_parser(self, request: ModelRequest) -> _StreamParser:
        output_name = request.output_name if request.output_schema is not None else None
        return _StreamParser(self.model, output_name)


class _Block:
    __slots__ = ("id", "index", "kind", "name", "parts")

    def __init__(self, kind: str, index: int = -1, id: str = "", name: str = "") -> None:
        self.kind = kind  # "text", "tool", "output" or "other"
        self.index = index  # the tool call's index within the turn
        self.id = id
        self.name = name
        self.parts: list[str] = []


class _StreamParser:
    """Messages API stream events -> TextDelta / ToolCallDelta, then the whole response."""

    def __init__(self, model: str, output_name: str | None) -> None:
        self.done = False
        self._model = model
        self._output_name = output_name
        self._blocks: dict[int, _Block] = {}
        self._n_calls = 0
        self._stop: object = None
        self._usage = Usage(requests=1)

    def can_end(self) -> bool:
        return False  # message_stop is the only end

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        try:
            data = msgspec.json.decode(event.data)
        except msgspec.DecodeError:
            raise ModelResponseError(
                f"anthropic: stream event is not valid JSON: {event.data[:300]!r}",
                provider="anthropic",
            ) from None
        if not isinstance(data, dict):
            raise ModelResponseError(
                f"anthropic: unexpected stream event {event.data[:300]!r}", provider="anthropic"
            )
        kind = data.get("type") or event.event
        try:
            return self._on(kind, data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelResponseError(
                f"anthropic: unexpected {kind} event ({type(exc).__name__}: {exc}): "
                f"{event.data[:300]!r}",
                provider="anthropic",
            ) from None

    def _on(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "content_block_delta":
            block = self._blocks.get(data["index"])
            delta = data["delta"]
            if block is None:
                return []
            if delta.get("type") == "text_delta" and block.kind == "text":
                block.parts.append(delta["text"])
                return [TextDelta(delta["text"])] if delta["text"] else []
            if delta.get("type") == "input_json_delta":
                part = delta.get("partial_json") or ""
                block.parts.append(part)
                if not part:
                    return []
                if block.kind == "output":
                    return [TextDelta(part)]
                if block.kind == "tool":
                    return [ToolCallDelta(block.index, arguments_delta=part)]
            return []  # thinking, signatures, citations
        if kind == "content_block_start":
            cb = data["content_block"]
            if cb.get("type") == "text":
                block = self._blocks[data["index"]] = _Block("text")
                if cb.get("text"):
                    block.parts.append(cb["text"])
                    return [TextDelta(cb["text"])]
            elif cb.get("type") == "tool_use":
                if cb["name"] == self._output_name:
                    self._blocks[data["index"]] = _Block("output", name=cb["name"])
                    return []
                block = _Block("tool", self._n_calls, cb["id"], cb["name"])
                self._blocks[data["index"]] = block
                self._n_calls += 1
                return [ToolCallDelta(block.index, block.id, block.name)]
            else:
                self._blocks[data["index"]] = _Block("other")
            return []
        if kind == "message_start":
            message = data["message"]
            self._model = str(message.get("model") or self._model)
            _usage(message.get("usage"), self._usage)
        elif kind == "message_delta":
            self._stop = (data.get("delta") or {}).get("stop_reason") or self._stop
            _usage(data.get("usage"), self._usage)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            err = data.get("error") or {}
            raise ProviderErrorEvent(
                _ERROR_STATUS.get(err.get("type", ""), 500), msgspec.json.encode(data).decode()
            )
        return []  # ping, content_block_stop and event types added later

    def finish(self) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        answer: str | None = None
        for _, block in sorted(self._blocks.items()):
            if block.kind == "text":
                texts.extend(block.parts)
            elif block.kind == "tool":
                calls.append(
                    ToolCall(block.name, parse_tool_arguments("".join(block.parts)), block.id)
                )
            elif block.kind == "output":
                answer = "".join(block.parts) or "{}"
        if answer is not None and not calls:
            return ModelResponse(Message.assistant(answer), self._usage, "stop", self._model)
        return ModelResponse(
            Message.assistant("".join(texts) or None, calls),
            self._usage,
            _stop_reason(self._stop),
            self._model,
        )
