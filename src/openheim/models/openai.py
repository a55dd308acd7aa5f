"""OpenAI Chat Completions, and every server that speaks it (``base_url``).

``OpenAIModel("gpt-4o-mini")`` talks to api.openai.com with the key in
``OPENAI_API_KEY``; ``OpenAIModel("qwen2.5", base_url="http://127.0.0.1:8000/v1")``
talks to vLLM, Ollama, llama.cpp's server or llama-cpp-python's server, where
the key is optional.

Mapping:

- messages: ``system``/``user`` as is; ``assistant`` with ``tool_calls``
  (arguments re-encoded as JSON text; content ``""`` rather than null when
  the turn has no text, which every server accepts); ``tool`` results with ``tool_call_id``
  (the Chat Completions API has no error flag: ``is_error`` results are sent
  as their text).
- tools: ``{"type": "function", "function": {name, description, parameters}}``;
  ``tool_choice`` "auto" (the default, not sent), "required", "none" or a tool
  name (``{"type": "function", "function": {"name": ...}}``).
- structured output: ``response_format`` ``json_schema`` named
  ``output_name``, ``strict`` when the schema meets strict mode's rules (every
  object closed with ``additionalProperties: false`` and all properties
  required); the answer is the JSON text in the message content. Servers that
  only know the older ``{"type": "json_object", "schema": ...}`` form
  (llama-cpp-python's server) take ``response_format="json_object"``.
- settings: ``max_tokens`` is sent as ``max_completion_tokens`` to OpenAI
  itself (its reasoning models accept only that) and as ``max_tokens`` to
  other servers (``max_tokens_field=`` overrides); temperature, top_p, seed,
  stop as is.
- streaming: ``stream_options.include_usage`` for the usage (turn it off with
  ``stream_usage=False`` for servers that reject it); ``data: [DONE]`` ends
  the stream, and a server that closes the stream cleanly after the finish
  reason without ``[DONE]`` is accepted too.
- tool-call arguments that are not a JSON object are kept as
  ``{RAW_ARGUMENTS_KEY: text}`` (see :mod:`openheim.models.base`).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import httpx
import msgspec

from openheim.errors import ConfigError, ModelResponseError
from openheim.messages import Message, ToolCall, Usage
from openheim.models._http import (
    HTTPClient,
    HTTPModel,
    ProviderErrorEvent,
    SleepFn,
    encode_tool_arguments,
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

__all__ = ["OpenAIModel"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}


def _finish_reason(raw: object, has_calls: bool) -> FinishReason:
    reason = _FINISH.get(raw, "stop") if isinstance(raw, str) else "stop"
    # Some servers (Ollama, older vLLM) say "stop" although the turn ends in tool calls.
    return "tool_calls" if has_calls and reason == "stop" else reason


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict structured-output mode accepts this schema."""
    if isinstance(schema, list):
        return all(_strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", ())) != set(props):
            return False
    return all(_strict_compatible(v) for v in schema.values() if isinstance(v, (dict, list)))


def _usage(raw: object) -> Usage:
    if not isinstance(raw, dict):
        return Usage(requests=1)
    return Usage(
        int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), requests=1
    )


def _text(content: object) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, from some compatible servers
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    raise TypeError(f"unexpected content {content!r}")


class OpenAIModel(HTTPModel):
    """A model behind the OpenAI Chat Completions API (or a compatible server).

    The API key comes from ``api_key=`` or the environment variable named by
    ``api_key_env`` (``OPENAI_API_KEY``); it is required for api.openai.com
    and optional for other ``base_url`` servers. ``http_client=`` injects an
    ``httpx.AsyncClient`` (its owner closes it); otherwise a pooled client is
    created on first use and closed by :meth:`aclose`. ``max_retries`` retries
    429, 5xx and connection failures with backoff; ``timeout`` is seconds per
    request (between stream chunks, when streaming); ``sleep`` replaces
    ``asyncio.sleep`` between retries (tests). ``stream_usage=False`` leaves
    out ``stream_options`` for servers that refuse it;
    ``response_format="json_object"`` sends structured-output schemas in the
    older ``json_object`` form.
    """

    provider = "openai"
    _path = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        http_client: httpx.AsyncClient | None = None,
        max_retries: int = 2,
        timeout: float | None = None,
        context_window: int | None = None,
        organization: str | None = None,
        extra_headers: dict[str, str] | None = None,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None,
        stream_usage: bool = True,
        response_format: Literal["json_schema", "json_object"] = "json_schema",
        sleep: SleepFn | None = None,
    ) -> None:
        if response_format not in ("json_schema", "json_object"):
            raise ConfigError(
                f"response_format must be 'json_schema' or 'json_object', got {response_format!r}"
            )
        self._response_format = response_format
        official = base_url is None or "api.openai.com" in base_url
        secret = resolve_api_key(self.provider, api_key, api_key_env, required=official)
        self._max_tokens_field = max_tokens_field or (
            "max_completion_tokens" if official else "max_tokens"
        )
        self._stream_usage = stream_usage
        fixed = dict(extra_headers or {})
        if organization:
            fixed["openai-organization"] = organization

        def headers() -> dict[str, str]:
            if secret is None:
                return fixed
            return {**fixed, "authorization": f"Bearer {secret.reveal()}"}

        env_hint = f"the {api_key_env} environment variable or " if api_key_env else ""
        http = HTTPClient(
            provider=self.provider,
            base_url=base_url or OPENAI_BASE_URL,
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
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [self._message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
            choice = request.tool_choice
            if choice in ("required", "none"):
                body["tool_choice"] = choice
            elif choice != "auto":
                if all(t.name != choice for t in request.tools):
                    raise ConfigError(
                        f"tool_choice {choice!r} names no tool of the request; "
                        "use 'auto', 'required', 'none' or one of the tools' names"
                    )
                body["tool_choice"] = {"type": "function", "function": {"name": choice}}
        if request.output_schema is not None and self._response_format == "json_object":
            body["response_format"] = {"type": "json_object", "schema": request.output_schema}
        elif request.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.output_name,
                    "schema": request.output_schema,
                    "strict": _strict_compatible(request.output_schema),
                },
            }
        s = request.settings
        if s.max_tokens is not None:
            body[self._max_tokens_field] = s.max_tokens
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if stream:
            body["stream"] = True
            if self._stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    @staticmethod
    def _message(m: Message) -> dict[str, Any]:
        if m.role == "tool":
            return {
                "role": "tool",
                "tool_call_id": m.tool_call_id or "",
                "content": m.content or "",
            }
        if m.role == "assistant":
            # "" rather than null when there is no text: OpenAI takes either, and some
            # compatible servers (llama-cpp-python's) refuse null next to tool_calls.
            out: dict[str, Any] = {"role": "assistant", "content": m.content or ""}
            if m.tool_calls:
                out["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "arguments": encode_tool_arguments(c.arguments),
                        },
                    }
                    for c in m.tool_calls
                ]
            return out
        out = {"role": m.role, "content": m.content or ""}
        if m.name and m.role == "user":
            out["name"] = m.name
        return out

    # ---- responses --------------------------------------------------------------

    def _parse(self, payload: Any, request: ModelRequest) -> ModelResponse:
        try:
            choice = payload["choices"][0]
            msg = choice["message"]
            calls = [
                ToolCall(
                    c["function"]["name"],
                    parse_tool_arguments(c["function"].get("arguments") or ""),
                    c.get("id") or _new_call_id(),
                )
                for c in msg.get("tool_calls") or ()
            ]
            text = _text(msg.get("content"))
            finish = _finish_reason(choice.get("finish_reason"), bool(calls))
            usage = _usage(payload.get("usage"))
            model_name = str(payload.get("model") or self.model)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelResponseError(
                f"openai: unexpected response shape ({type(exc).__name__}: {exc}): "
                f"{msgspec.json.encode(payload)[:500].decode('utf-8', 'replace')}",
                provider=self.provider,
            ) from None
        return ModelResponse(Message.assistant(text, calls), usage, finish, model_name)

    def _stream_parser(self, request: ModelRequest) -> _StreamParser:
        return _StreamParser(self.model)


class _Call:
    __slots__ = ("args", "id", "name")

    def __init__(self, id: str, name: str) -> None:
        self.id = id
        self.name = name
        self.args: list[str] = []


class _StreamParser:
    """Chat Completions chunks -> TextDelta / ToolCallDelta, then the whole response."""

    def __init__(self, model: str) -> None:
        self.done = False
        self._model = model
        self._text: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._finish: object = None
        self._usage = Usage(requests=1)

    def can_end(self) -> bool:
        return self._finish is not None

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.data
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise ModelResponseError(
                f"openai: stream chunk is not valid JSON: {data[:300]!r}", provider="openai"
            ) from None
        if not isinstance(chunk, dict):
            raise ModelResponseError(
                f"openai: unexpected stream chunk {data[:300]!r}", provider="openai"
            )
        if chunk.get("error") is not None:
            err = chunk["error"]
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            raise ProviderErrorEvent(status, data)
        out: list[StreamEvent] = []
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        if chunk.get("model"):
            self._model = str(chunk["model"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self._text.append(text)
                out.append(TextDelta(text))
            for tc in delta.get("tool_calls") or ():
                out.append(self._call_delta(tc))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _call_delta(self, tc: dict[str, Any]) -> ToolCallDelta:
        fn = tc.get("function") or {}
        index = tc.get("index")
        if not isinstance(index, int):  # servers that omit the index: a new id opens a call
            cid = tc.get("id")
            known = [i for i, c in self._calls.items() if cid and c.id == cid]
            if known:
                index = known[0]
            else:
                index = len(self._calls) if cid or not self._calls else max(self._calls)
        args = fn.get("arguments") or ""
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(tc.get("id") or _new_call_id(), fn.get("name") or "")
            call.args.append(args)
            return ToolCallDelta(index, call.id, call.name, args)
        if fn.get("name") and not call.name:
            call.name = fn["name"]
        call.args.append(args)
        return ToolCallDelta(index, arguments_delta=args)

    def finish(self) -> ModelResponse:
        calls = [
            ToolCall(c.name, parse_tool_arguments("".join(c.args)), c.id)
            for _, c in sorted(self._calls.items())
        ]
        text = "".join(self._text) or None
        return ModelResponse(
            Message.assistant(text, calls),
            self._usage,
            _finish_reason(self._finish, bool(calls)),
            self._model,
        )
