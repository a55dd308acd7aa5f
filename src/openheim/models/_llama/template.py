"""Turning a conversation into the prompt text a local model reads.

A chat model's template comes from its GGUF metadata (``tokenizer.chat_template``)
and is rendered with jinja2 in a sandbox; ``chat_template=`` overrides it. A base
model without a template gets a plain completion template. Either way, when the
turn has tools or an output schema, the instructions gain a description of the
JSON reply format with a worked example (few-shot), which is what lets even a
small base model call tools well under constrained decoding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from openheim.messages import Message
from openheim.models.base import ToolDefinition

__all__ = ["PromptRenderer", "tool_instructions"]

PLAIN_TEMPLATE = "plain"


def tool_instructions(tools: list[ToolDefinition], output_schema: dict[str, Any] | None) -> str:
    """How to reply in the constrained JSON format, with a worked example.

    The example uses a tool of its own, which the grammar never lets the model
    call, with concrete values: a small base model copies what it sees, and a
    placeholder such as "(the answer)" or an example with a real tool would be
    copied into its answers as if it had happened in this conversation.
    """
    lines: list[str] = []
    if tools:
        lines.append(
            "You can call tools. Reply with exactly one JSON object: "
            '{"tool": "<tool name>", "arguments": {...}} to call a tool, or '
            '{"answer": ...} with your final answer once you have what you need.'
        )
        lines.append("Tools:")
        for t in tools:
            props = t.parameters.get("properties", {})
            args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
            lines.append(f"- {t.name}({args}): {t.description}".rstrip(": "))
        names = {t.name for t in tools}
        other = next(
            n for n in ("weather", "weather_report", "oh_example_weather") if n not in names
        )
        first = tools[0]
        shape = {k: "..." for k in first.parameters.get("properties", {})}
        call = json.dumps({"tool": first.name, "arguments": shape})
        lines.append(f"A call of {first.name} reads: {call}")
        lines.append(
            "How a reply goes, shown with a tool of another conversation:\n"
            "  question: What is the weather in Oslo?\n"
            f'  reply: {{"tool": "{other}", "arguments": {{"city": "Oslo"}}}}\n'
            f"  then: Result of {other}: 12 C, light rain\n"
            '  reply: {"answer": "It is 12 C with light rain in Oslo."}'
        )
    else:
        lines.append('Reply with exactly one JSON object: {"answer": ...}.')
    if output_schema is not None:
        lines.append(f"The answer must follow this JSON schema: {json.dumps(output_schema)}")
    return "\n".join(lines)


def _as_reply(msg: Message) -> str:
    if msg.tool_calls:
        call = msg.tool_calls[0]
        return json.dumps({"tool": call.name, "arguments": call.arguments})
    return msg.content or ""


class PromptRenderer:
    """Renders messages with the model's chat template, or the plain template."""

    def __init__(self, chat_template: str | None, *, bos: str = "", eos: str = "") -> None:
        self.bos, self.eos = bos, eos
        self.is_plain = not chat_template or chat_template == PLAIN_TEMPLATE
        self._render: Callable[..., str] | None = None
        if not self.is_plain:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise ValueError(message)

            env.globals["raise_exception"] = raise_exception
            env.filters.setdefault("tojson", lambda v, **kw: json.dumps(v, **kw))
            self._render = env.from_string(str(chat_template)).render

    def chat(
        self,
        messages: list[Message],
        *,
        tools: list[ToolDefinition],
        output_schema: dict[str, Any] | None,
        constrained: bool,
    ) -> list[dict[str, str]]:
        """Messages as simple role/content dicts that any chat template accepts."""
        system = [m.content or "" for m in messages if m.role == "system"]
        if constrained:
            system.append(tool_instructions(tools, output_schema))
        out: list[dict[str, str]] = []
        for m in messages:
            if m.role == "system":
                continue
            if m.role == "tool":
                label = "Error from" if m.is_error else "Result of"
                role, text = "user", f"{label} {m.name}: {m.content}"
            elif m.role == "assistant":
                role, text = "assistant", _as_reply(m)
            else:
                role, text = "user", m.content or ""
            if out and out[-1]["role"] == role:  # templates want strict alternation
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": role, "content": text})
        sys_text = "\n\n".join(s for s in system if s)
        if sys_text:
            out.insert(0, {"role": "system", "content": sys_text})
        return out

    def render(
        self,
        messages: list[Message],
        *,
        tools: list[ToolDefinition] = (),  # type: ignore[assignment]
        output_schema: dict[str, Any] | None = None,
        constrained: bool = False,
    ) -> str:
        chat = self.chat(
            messages, tools=list(tools), output_schema=output_schema, constrained=constrained
        )
        if self._render is None:
            return self._plain(chat)
        try:
            return self._render(
                messages=chat, add_generation_prompt=True, bos_token=self.bos, eos_token=self.eos
            )
        except ValueError:
            # Some templates refuse a system role: fold it into the first user turn.
            if chat and chat[0]["role"] == "system" and len(chat) > 1:
                merged = [
                    {"role": "user", "content": chat[0]["content"] + "\n\n" + chat[1]["content"]},
                    *chat[2:],
                ]
                return self._render(
                    messages=merged,
                    add_generation_prompt=True,
                    bos_token=self.bos,
                    eos_token=self.eos,
                )
            raise

    def _plain(self, chat: list[dict[str, str]]) -> str:
        parts: list[str] = []
        for m in chat:
            if m["role"] == "system":
                parts.append(m["content"] + "\n")
            elif m["role"] == "user":
                parts.append(f"User: {m['content']}")
            else:
                parts.append(f"Assistant: {m['content']}")
        parts.append("Assistant:")
        return "\n".join(parts)
