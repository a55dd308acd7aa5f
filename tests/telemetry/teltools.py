"""The model and tools the served telemetry tests configure (``model = "teltools:model"``).

Copied beside the test's openheim.toml, whose directory is on sys.path.
"""

from __future__ import annotations

from typing import Any

import msgspec

import openheim as oh
from openheim.messages import ToolCall
from openheim.models import ModelRequest, ScriptedModel

# What a careless tool might put in an error: a credential that must never reach the log.
LEAKED = "sk-proj-TELEMETRYleak0123456789abcdef"


def _reply(request: ModelRequest) -> Any:
    last = request.messages[-1]
    if last.role == "tool":
        return f"tool said: {last.content}"
    text = last.content or ""
    if text.startswith("lookup"):
        return ToolCall("lookup", {"key": text.split()[-1]})
    if text.startswith("leak"):
        return ToolCall("leaky", {})
    return f"echo: {text}"


def model() -> ScriptedModel:
    return ScriptedModel(_reply, name="tel")


@oh.tool
def lookup(key: str) -> str:
    """Look a key up."""
    return key.upper()


@oh.tool
def leaky() -> str:
    """Fails with the request headers in its message."""
    raise RuntimeError(
        f"upstream said 401 to headers {{'Authorization': 'Bearer {LEAKED}', "
        f"'x-api-key': '{LEAKED}'}}"
    )


# ---- a workflow with a tool node and a map of tool calls (telemetry propagation tests) ----


class Order(msgspec.Struct):
    key: str = ""
    found: str = ""
    keys: list[str] = msgspec.field(default_factory=list)
    upper: list[str] = msgspec.field(default_factory=list)


def order_args(o: Order) -> dict[str, Any]:
    return {"key": o.key}


@oh.tool
async def shout(word: str) -> str:
    """Upper-case a word (async)."""
    if word == "boom":
        raise ValueError("will not shout boom")
    return word.upper() + "!"
