"""The one protocol every model connector implements.

A connector turns a :class:`ModelRequest` (messages, tool definitions,
settings, an optional output schema) into either a whole
:class:`ModelResponse` (``request``) or a stream of :class:`TextDelta` /
:class:`ToolCallDelta` events that ends with the whole :class:`ModelResponse`
(``stream``). Connectors live one per file beside this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from openheim.messages import Message, Usage

__all__ = [
    "RAW_ARGUMENTS_KEY",
    "FinishReason",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "ToolDefinition",
]

# A tool call whose arguments the model wrote as something other than a JSON
# object (malformed JSON, a list, ...) is not dropped and does not fail the
# turn: its ``arguments`` are ``{RAW_ARGUMENTS_KEY: "<the raw text>"}``, so the
# agent can report the problem back to the model, and connectors send the raw
# text back unchanged when the conversation is replayed.
RAW_ARGUMENTS_KEY = "__raw__"

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class ModelSettings(msgspec.Struct, omit_defaults=True, frozen=True):
    """Sampling settings; ``None`` means the model's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    def merged(self, override: ModelSettings | None) -> ModelSettings:
        """These settings with every non-None field of ``override`` applied."""
        if override is None:
            return self
        values = {f: getattr(self, f) for f in self.__struct_fields__}
        for f in override.__struct_fields__:
            v = getattr(override, f)
            if v is not None:
                values[f] = v
        return ModelSettings(**values)


class ToolDefinition(msgspec.Struct, frozen=True):
    """What the model is told about a tool: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelRequest(msgspec.Struct):
    """Everything a connector needs for one model call."""

    messages: list[Message]
    tools: list[ToolDefinition] = msgspec.field(default_factory=list)
    settings: ModelSettings = msgspec.field(default_factory=ModelSettings)
    # JSON schema the final answer must follow (structured output), and its name.
    output_schema: dict[str, Any] | None = None
    output_name: str = "final_result"
    # "auto", "required" (must call some tool), "none", or a tool name.
    tool_choice: str = "auto"


class ModelResponse(msgspec.Struct):
    """A finished model turn: the assistant message, usage and why it stopped."""

    message: Message
    usage: Usage = msgspec.field(default_factory=Usage)
    finish_reason: FinishReason = "stop"
    model_name: str = ""


class TextDelta(msgspec.Struct, frozen=True):
    """A piece of the assistant's text as it streams."""

    text: str


class ToolCallDelta(msgspec.Struct, frozen=True):
    """A piece of a streaming tool call.

    ``index`` identifies the call within the turn. The first delta of a call
    carries its ``id`` and ``name``; later ones carry ``arguments_delta``, a
    fragment of the JSON arguments text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


StreamEvent = TextDelta | ToolCallDelta | ModelResponse


@runtime_checkable
class Model(Protocol):
    """A language model connector."""

    @property
    def name(self) -> str:
        """``"provider:model"``, e.g. ``"openai:gpt-4o-mini"``."""
        ...

    @property
    def context_window(self) -> int | None:
        """Tokens the model accepts in one request, if known."""
        ...

    async def request(self, request: ModelRequest) -> ModelResponse:
        """One whole model turn."""
        ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """The same turn as events; the last event is the whole ModelResponse."""
        ...

    async def aclose(self) -> None:
        """Release connections, contexts and threads."""
        ...
