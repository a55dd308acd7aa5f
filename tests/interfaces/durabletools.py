"""Models and tools for the durable-server tests (copied beside their openheim.toml).

``block_model`` calls ``wait_for_file`` for ``block <path>``, whose call
blocks until ``<path>`` exists and counts each call in ``<path>.calls``: a
run can be caught mid-tool, the server killed, and the run resumed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openheim as oh
from openheim.messages import ToolCall
from openheim.models import ModelRequest, ScriptedModel


def _last_user(request: ModelRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return m.content or ""
    return ""


def _block(request: ModelRequest) -> Any:
    last = request.messages[-1]
    if last.role == "tool":
        return f"the file said: {last.content}"
    return ToolCall("wait_for_file", {"path": _last_user(request).split()[-1]})


def block_model() -> ScriptedModel:
    return ScriptedModel(_block, name="block")


@oh.tool
def wait_for_file(path: str) -> str:
    """Wait until the file at ``path`` exists and return its text (runs in a worker thread)."""
    target = Path(path)
    with open(f"{path}.calls", "a", encoding="utf-8") as calls:
        calls.write("call\n")
    while not target.exists():
        time.sleep(0.05)
    return target.read_text(encoding="utf-8")


def buggy_model() -> ScriptedModel:
    """A model with a bug: raises a plain RuntimeError (not an OpenheimError)."""

    def reply(request: ModelRequest) -> Any:
        raise RuntimeError("model bug: list index out of range")

    return ScriptedModel(reply, name="buggy")


def _chatty(request: ModelRequest) -> Any:
    words = int(_last_user(request).split()[-1])
    return " ".join(f"w{i}" for i in range(words))


def chatty_model() -> ScriptedModel:
    """Answers ``N`` with N words (N text deltas)."""
    return ScriptedModel(_chatty, name="chatty")
