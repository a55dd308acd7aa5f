"""Workflows the wfops interface tests serve (``wfopsflows:...``), copied beside their config.

``slow``: ``nap`` sleeps ``state.nap`` seconds, an approval ``gate`` (when
``state.gate``), then ``finish`` writes ``VERSION``. Every step appends its
name to the file ``effects`` beside this module, so a test can count what ran.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec

from openheim.workflow import Decision

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "v1"


class Slow(msgspec.Struct):
    nap: float = 0.0
    gate: bool = False
    after: float = 0.0  # seconds `finish` sleeps
    decision: Decision | None = None
    version: str = ""


def effect(name: str) -> None:
    with open(os.path.join(HERE, "effects"), "a", encoding="utf-8") as f:
        f.write(name + "\n")


async def nap(s: Slow) -> dict[str, Any]:
    effect("nap")
    await asyncio.sleep(s.nap)
    return {}


def gated(s: Slow) -> str:
    return "gate" if s.gate else "finish"


async def finish(s: Slow) -> dict[str, Any]:
    await asyncio.sleep(s.after)
    effect("finish")
    return {"version": VERSION}


TABLE = """
[workflows.slow]
state = "wfopsflows:Slow"
edges = [["nap", "route"], ["gate", "finish"]]

[[workflows.slow.nodes]]
name = "nap"
step = "wfopsflows:nap"

[[workflows.slow.nodes]]
name = "route"
branch = "wfopsflows:gated"
targets = ["gate", "finish"]

[[workflows.slow.nodes]]
name = "gate"
approval = { output = "decision" }

[[workflows.slow.nodes]]
name = "finish"
step = "wfopsflows:finish"
"""

# `gate` first, with a deadline of 2 s (then rejected), then `finish`.
TIMED = """
[workflows.timed]
state = "wfopsflows:Slow"
edges = [["gate", "finish"]]

[[workflows.timed.nodes]]
name = "gate"
approval = { output = "decision", deadline = 2 }

[[workflows.timed.nodes]]
name = "finish"
step = "wfopsflows:finish"
"""


def begin(s: Slow) -> dict[str, Any]:
    effect("begin")
    return {}


# `begin`, then `gate` (an approval) and `nap` in parallel, joined by `finish`.
PARALLEL = """
[workflows.par]
state = "wfopsflows:Slow"
edges = [["begin", "gate"], ["begin", "nap"], [["gate", "nap"], "finish"]]

[[workflows.par.nodes]]
name = "begin"
step = "wfopsflows:begin"

[[workflows.par.nodes]]
name = "gate"
approval = { output = "decision" }

[[workflows.par.nodes]]
name = "nap"
step = "wfopsflows:nap"

[[workflows.par.nodes]]
name = "finish"
step = "wfopsflows:finish"
"""
