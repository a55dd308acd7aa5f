"""Models and tools the interface tests configure (`model = "ixtools:echo_model"`).

Copied beside each test's openheim.toml, whose directory is on sys.path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openheim as oh
from openheim.errors import ModelError
from openheim.messages import ToolCall
from openheim.models import ModelRequest, ScriptedModel


def _last_user(request: ModelRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return m.content or ""
    return ""


def _echo(request: ModelRequest) -> Any:
    text = _last_user(request)
    if request.output_schema is not None:
        return {"answer": text, "length": len(text)}
    last = request.messages[-1].role
    if (
        request.tools
        and request.tool_choice != "none"
        and last == "user"
        and text.startswith("weather")
    ):
        return ToolCall(request.tools[0].name, {"city": text.split()[-1]})
    if request.messages[-1].role == "tool":
        return f"tool said: {request.messages[-1].content}"
    turns = sum(1 for m in request.messages if m.role == "user")
    return f"echo: {text} (turn {turns})"


def echo_model() -> ScriptedModel:
    """Answers 'echo: <prompt> (turn N)'; calls the first tool for 'weather <city>'."""
    return ScriptedModel(_echo, name="echo")


async def _slow(request: ModelRequest) -> Any:
    text = _last_user(request)
    if request.messages[-1].role == "tool":
        return f"done: {request.messages[-1].content}"
    if text.startswith("delete"):
        return ToolCall("delete_file", {"path": text.split()[-1]})
    delay = float(text.split()[1]) if text.startswith("sleep") else 0.3
    await asyncio.sleep(delay)
    return f"slow answer to {text} " + " ".join(f"word{i}" for i in range(20))


def slow_model() -> ScriptedModel:
    return ScriptedModel(_slow, name="slow")


def failing_model() -> ScriptedModel:
    return ScriptedModel(lambda request: ModelError("the model is down", provider="scripted"))


@oh.tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@oh.tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (needs approval)."""
    return f"deleted {path}"


def _crash(request: ModelRequest) -> Any:
    raise RuntimeError("a bug in the model code")


def crashing_model() -> ScriptedModel:
    """Raises a plain RuntimeError (not an OpenheimError), as a buggy model would."""
    return ScriptedModel(_crash, name="crash")
