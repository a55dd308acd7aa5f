"""Workflow state and steps that the workflow interface tests name as ``wfflows:...``.

Copied beside each test's openheim.toml (like ixtools.py).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

import msgspec

from openheim.workflow import Decision, Workflow, reducer


class Ticket(msgspec.Struct):
    text: str = ""
    kind: str = ""
    parts: list[str] = msgspec.field(default_factory=list)
    notes: Annotated[list[str], reducer(operator.add)] = msgspec.field(default_factory=list)
    decision: Decision | None = None
    reply: str = ""


def classify(t: Ticket) -> dict[str, Any]:
    return {"kind": "bug" if "crash" in t.text else "question", "parts": t.text.split(". ")}


def route(t: Ticket) -> str:
    return "check" if t.kind == "bug" else "answer"


def check(part: str) -> list[str]:
    return [f"checked: {part}"]


def join(values: list[list[str]]) -> list[str]:
    return [note for notes in values for note in notes]


def answer(t: Ticket) -> dict[str, Any]:
    return {"reply": "answered"}


def summary(t: Ticket) -> dict[str, Any]:
    return {"notes": t.notes}


def close(t: Ticket) -> dict[str, Any]:
    approved = t.decision is not None and t.decision.approved
    return {"reply": "fixed" if approved else "rejected"}


built = Workflow("built", state=Ticket)
built.step(answer)

TABLE = """
[workflows.triage]
state = "wfflows:Ticket"
edges = [["classify", "route"], ["check", "review"], ["review", "close"]]

[[workflows.triage.nodes]]
name = "classify"
step = "wfflows:classify"

[[workflows.triage.nodes]]
name = "route"
branch = "wfflows:route"
targets = ["check", "answer"]

[[workflows.triage.nodes]]
name = "check"
map = { over = "parts", do = "wfflows:check", output = "notes", reduce = "wfflows:join" }

[[workflows.triage.nodes]]
name = "answer"
step = "wfflows:answer"

[[workflows.triage.nodes]]
name = "review"
approval = { payload = "wfflows:summary", output = "decision" }

[[workflows.triage.nodes]]
name = "close"
step = "wfflows:close"
"""
