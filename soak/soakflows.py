"""The agents, tools and workflow steps the soak configures (``soakflows:...``).

Copied beside the soak's openheim.toml, whose directory is on ``sys.path``.

- ``latent_model``: a ScriptedModel with a simulated 50 ms latency that answers
  ``echo: <prompt> (turn N)``, N counting the session's user turns, so a client
  sees at once when a turn was lost or recorded twice.
- ``Chain`` / ``s1`` .. ``s6``: a six-step durable workflow (``bchain``: the same in
  batch mode, for ``openheim worker``); each step appends
  ``<tag> <step>`` to the fsynced file named by ``SOAK_EFFECTS`` when it starts
  (the side effect a crash may repeat) and sleeps a random 20-150 ms.
- ``inject_model`` / ``read_note``: the model turns the user text, parsed as
  JSON, into the tool call's arguments (hostile arguments reach the tool layer).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import msgspec

import openheim as oh
from openheim.messages import ToolCall
from openheim.models import ModelRequest, ScriptedModel
from openheim.workflow import Decision, Workflow

LATENCY = float(os.environ.get("SOAK_LATENCY", "0.05"))


def _last_user(request: ModelRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return m.content or ""
    return ""


async def _latent(request: ModelRequest) -> Any:
    await asyncio.sleep(LATENCY)
    turns = sum(1 for m in request.messages if m.role == "user")
    return f"echo: {_last_user(request)} (turn {turns})"


def latent_model() -> ScriptedModel:
    """Answers ``echo: <prompt> (turn N)`` after ``SOAK_LATENCY`` seconds (default 50 ms)."""
    return ScriptedModel(_latent, name="latent")


# ---- the durable chain -------------------------------------------------------------------

STEPS = ("s1", "s2", "s3", "s4", "s5", "s6")


class Chain(msgspec.Struct):
    tag: str = ""
    log: list[str] = msgspec.field(default_factory=list)


def _effect(tag: str, step: str) -> None:
    path = os.environ["SOAK_EFFECTS"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{tag} {step} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _make(step: str) -> Any:
    async def run(s: Chain) -> dict[str, Any]:
        _effect(s.tag, step)
        await asyncio.sleep(random.uniform(0.02, 0.15))
        return {"log": [*s.log, step]}

    run.__name__ = step
    return run


s1, s2, s3, s4, s5, s6 = (_make(s) for s in STEPS)

CHAIN_TABLE = (
    '\n[workflows.chain]\nstate = "soakflows:Chain"\nedges = ['
    + ", ".join(f'["{a}", "{b}"]' for a, b in itertools.pairwise(STEPS))
    + "]\n"
    + "".join(f'\n[[workflows.chain.nodes]]\nname = "{s}"\nstep = "soakflows:{s}"\n' for s in STEPS)
)


# The same six steps as a batch workflow (`openheim worker --workflows soakflows:bchain`).
bchain = Workflow("soak-bchain", state=Chain)
for _fn in (s1, s2, s3, s4, s5, s6):
    bchain.step(_fn)
for _a, _b in itertools.pairwise(STEPS):
    bchain.edge(_a, _b)


# ---- hostile tool arguments -------------------------------------------------------------

NOTES = Path(os.environ.get("SOAK_NOTES", "notes"))
VIOLATIONS: list[str] = []


def _inject(request: ModelRequest) -> Any:
    last = request.messages[-1]
    if last.role == "tool":
        return f"tool said: {last.content}"
    try:
        args = json.loads(_last_user(request))
    except ValueError:
        args = {"raw": _last_user(request)}
    if not isinstance(args, dict):
        args = {"value": args}
    return ToolCall("read_note", args)


def inject_model() -> ScriptedModel:
    """Calls ``read_note`` with the user text (a JSON object) as its arguments."""
    return ScriptedModel(_inject, name="inject")


@oh.tool
def read_note(name: str, lines: int = 1) -> str:
    """Read the first ``lines`` lines of the note called ``name`` (a plain file name)."""
    if not isinstance(name, str) or not isinstance(lines, int) or isinstance(lines, bool):
        # Reached only if argument validation let a wrong type through.
        with Path(os.environ.get("SOAK_VIOLATIONS", "violations")).open("a") as f:
            f.write(f"type {type(name).__name__} {type(lines).__name__}\n")
        return "VIOLATION"
    base = NOTES.resolve()
    target = (base / name).resolve()
    if base not in target.parents:
        return f"refused: {name!r} is not a note name"
    if not target.is_file():
        return f"no note {name!r}"
    return "\n".join(target.read_text(encoding="utf-8").splitlines()[: max(lines, 0)])


# ---- approvals (for the cross-tenant checks) ---------------------------------------------


def _guard(request: ModelRequest) -> Any:
    last = request.messages[-1]
    if last.role == "tool":
        return f"done: {last.content}"
    return ToolCall("wipe", {"target": _last_user(request)})


def guard_model() -> ScriptedModel:
    """Calls ``wipe`` (which needs approval) with the user text."""
    return ScriptedModel(_guard, name="guard")


@oh.tool(requires_approval=True)
def wipe(target: str) -> str:
    """Pretend to wipe ``target`` (needs a human's approval)."""
    return f"wiped {target}"


class Gate(msgspec.Struct):
    text: str = ""
    decision: Decision | None = None
    reply: str = ""


def gate_payload(g: Any) -> dict[str, Any]:
    return {"text": g.text}


def gate_close(g: Any) -> dict[str, Any]:
    return {"reply": "approved" if g.decision is not None and g.decision.approved else "no"}


GATE_TABLE = """
[workflows.gate]
state = "soakflows:Gate"
edges = [["review", "close"]]

[[workflows.gate.nodes]]
name = "review"
approval = { payload = "soakflows:gate_payload", output = "decision" }

[[workflows.gate.nodes]]
name = "close"
step = "soakflows:gate_close"
"""
