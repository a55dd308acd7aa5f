"""``ScriptedModel``: a deterministic model for tests, examples and benchmarks.

It answers from a script, a list of replies consumed one per request, or from
a function of the request. A reply is:

- ``str``: the final assistant text;
- a :class:`~openheim.messages.ToolCall` or a list of them: a tool-call turn;
- a :class:`~openheim.messages.Message` or :class:`ModelResponse`: used as is;
- an exception instance: raised by the request;
- anything else (a dict, a list, a number, a pydantic model, a dataclass):
  structured output, sent as its JSON text.

Streaming splits text into word-sized :class:`TextDelta` chunks and each tool
call's JSON arguments into several :class:`ToolCallDelta` fragments, so
consumers see what a real provider stream looks like. Usage is estimated at
about four characters per token. ``requests`` records the requests received
(the newest ``keep_requests``, 1024 by default: a long-lived server answering
from a ScriptedModel must not keep every request it ever got).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec

from openheim.errors import ModelError
from openheim.messages import Message, ToolCall, Usage
from openheim.models.base import (
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["Reply", "ReplyFunction", "ScriptedModel"]

Reply = Any  # str | ToolCall | list[ToolCall] | Message | ModelResponse | BaseException | JSON-able
ReplyFunction = Callable[[ModelRequest], Any]  # returns a Reply, or an awaitable of one

_json_encode = msgspec.json.Encoder(enc_hook=lambda obj: _jsonable(obj)).encode


_PLAIN_REPLIES = frozenset({str, ToolCall, Message, list, dict})


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic models, without importing pydantic
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"ScriptedModel cannot encode a {type(obj).__name__} reply as JSON")


class ScriptedModel:
    """A model that plays back ``script`` (a list of replies) or calls a function.

    ``ScriptedModel(["Hello!"])`` answers once; ``ScriptedModel([ToolCall("add",
    {"a": 1, "b": 2}), "3"])`` calls a tool, then answers. A function receives
    each :class:`ModelRequest` and returns a reply (or an awaitable of one).
    Running past the end of a script raises :class:`~openheim.errors.ModelError`.
    """

    def __init__(
        self,
        script: Iterable[Reply] | ReplyFunction,
        *,
        name: str = "scripted",
        context_window: int | None = None,
        keep_requests: int | None = 1024,
    ) -> None:
        if keep_requests is not None and (type(keep_requests) is not int or keep_requests < 0):
            raise ValueError(
                f"keep_requests must be a whole number >= 0 or None (keep all), "
                f"got {keep_requests!r}"
            )
        self._function: ReplyFunction | None
        if callable(script) and not isinstance(script, (list, tuple)):
            self._function = script
            self._function_is_async = inspect.iscoroutinefunction(script)
            self._script: list[Reply] = []
        else:
            self._function = None
            self._function_is_async = False
            self._script = list(script)
        self._name = f"scripted:{name}"
        self._context_window = context_window
        self._position = 0
        self._call_counter = 0
        self._received = 0
        self._keep = keep_requests
        # The newest `keep_requests` requests (None: all of them), oldest first.
        self.requests: list[ModelRequest] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int | None:
        return self._context_window

    @property
    def remaining(self) -> int:
        """Replies of the script not yet used (0 for a function)."""
        return len(self._script) - self._position

    async def request(self, request: ModelRequest) -> ModelResponse:
        self._received += 1
        self.requests.append(request)
        if self._keep is not None and len(self.requests) > self._keep:
            del self.requests[: len(self.requests) - self._keep]
        if self._function is not None:
            reply = self._function(request)
            if self._function_is_async or (
                type(reply) not in _PLAIN_REPLIES and inspect.isawaitable(reply)
            ):
                reply = await reply
        else:
            position = self._position
            if position >= len(self._script):
                raise self._exhausted(request)
            self._position = position + 1
            reply = self._script[position]
        return self._response(reply, request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        response = await self.request(request)
        message = response.message
        if message.content:
            for chunk in _word_chunks(message.content):
                yield TextDelta(chunk)
        for index, call in enumerate(message.tool_calls):
            yield ToolCallDelta(index, id=call.id, name=call.name)
            for fragment in _fragments(_json_encode(call.arguments).decode()):
                yield ToolCallDelta(index, arguments_delta=fragment)
        yield response

    async def aclose(self) -> None:
        return None

    # ---- internals ------------------------------------------------------------

    def _response(self, reply: Reply, request: ModelRequest) -> ModelResponse:
        kind = type(reply)
        if kind is str:
            message = Message("assistant", reply)
            out_chars = len(reply)
        elif kind is ToolCall:
            message = Message("assistant", None, [self._with_id(reply)])
            out_chars = _call_chars(message.tool_calls)
        elif kind is ModelResponse:
            return reply  # type: ignore[no-any-return]
        elif kind is Message:
            if reply.role != "assistant":
                raise ModelError(
                    f"ScriptedModel replies must be assistant messages, got role {reply.role!r}",
                    provider="scripted",
                )
            message = reply
            if any(not c.id for c in message.tool_calls):
                message = msgspec.structs.replace(
                    message, tool_calls=[self._with_id(c) for c in message.tool_calls]
                )
            out_chars = len(message.content or "") + _call_chars(message.tool_calls)
        elif isinstance(reply, BaseException):
            raise reply
        elif kind in (list, tuple) and reply and all(type(c) is ToolCall for c in reply):
            message = Message("assistant", None, [self._with_id(c) for c in reply])
            out_chars = _call_chars(message.tool_calls)
        else:
            text = _json_encode(reply).decode()
            message = Message("assistant", text)
            out_chars = len(text)
        usage = Usage(_input_tokens(request), out_chars // 4 + 1, 1)
        if message.tool_calls:
            return ModelResponse(message, usage, "tool_calls", self._name)
        return ModelResponse(message, usage, "stop", self._name)

    def _with_id(self, call: ToolCall) -> ToolCall:
        if call.id:
            return call
        self._call_counter += 1
        return ToolCall(call.name, call.arguments, f"call_{self._call_counter}")

    def _exhausted(self, request: ModelRequest) -> ModelError:
        last = request.messages[-1] if request.messages else None
        seen = f"; the last message was {last.role}: {(last.content or '')[:80]!r}" if last else ""
        return ModelError(
            f"ScriptedModel ran out of replies: its script has {len(self._script)} and "
            f"request #{self._received} asked for another{seen}. Add replies to the "
            "script, or pass a function to answer any number of requests.",
            provider="scripted",
        )


def _input_tokens(request: ModelRequest) -> int:
    chars = 0
    for m in request.messages:
        chars += len(m.content or "") + 16  # role and framing, roughly
        for c in m.tool_calls:
            chars += len(c.name) + 16 * len(c.arguments)
    return chars // 4 + 1


def _call_chars(calls: list[ToolCall]) -> int:
    return sum(len(c.name) + 16 * len(c.arguments) for c in calls)


def _word_chunks(text: str) -> list[str]:
    """``text`` cut after each space, so the chunks join back to exactly ``text``."""
    chunks: list[str] = []
    start = 0
    while True:
        cut = text.find(" ", start)
        if cut < 0:
            if start < len(text):
                chunks.append(text[start:])
            return chunks
        chunks.append(text[start : cut + 1])
        start = cut + 1


def _fragments(text: str, parts: int = 3) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]
