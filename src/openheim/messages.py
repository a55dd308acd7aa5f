"""Conversation data: messages, tool calls and usage.

These are msgspec Structs so that histories, checkpoints and wire payloads
encode fast and safely (no pickle) through the native state codec.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["Message", "Role", "ToolCall", "Usage"]

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(msgspec.Struct, frozen=True, kw_only=False):
    """A model's request to call a tool.

    ``ToolCall("get_weather", {"city": "Paris"})``; ``id`` is the provider's
    call id (generated when the provider gives none).
    """

    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    id: str = ""


class Message(msgspec.Struct, omit_defaults=True):
    """One message of a conversation.

    ``role="tool"`` messages carry a tool's result for ``tool_call_id``;
    ``is_error`` marks a result that reports a failure back to the model.
    """

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", text)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str | None, tool_calls: list[ToolCall] | None = None) -> Message:
        return cls("assistant", text, list(tool_calls or ()))

    @classmethod
    def tool(cls, call_id: str, name: str, content: str, *, is_error: bool = False) -> Message:
        return cls("tool", content, tool_call_id=call_id, name=name, is_error=is_error)


class Usage(msgspec.Struct, omit_defaults=True):
    """Token and request counts; ``a + b`` adds them up."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
        )
