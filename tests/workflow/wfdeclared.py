"""State and node functions that test_wf_declare.py names as ``module:function``."""

from __future__ import annotations

from typing import Any

import msgspec

from openheim.workflow import Decision, Workflow


class Ticket(msgspec.Struct):
    text: str = ""
    kind: str = ""
    items: list[str] = msgspec.field(default_factory=list)
    lengths: int = 0
    decision: Decision | None = None
    reply: str = ""


def classify(t: Ticket) -> dict[str, Any]:
    return {"kind": "bug" if "crash" in t.text else "question", "items": t.text.split()}


def route(t: Ticket) -> str:
    return "fix" if t.kind == "bug" else "reply"


def fix(t: Ticket) -> dict[str, Any]:
    return {"reply": "fixed"}


def reply(t: Ticket) -> dict[str, Any]:
    return {"reply": "answered"}


def summary(t: Ticket) -> dict[str, Any]:
    return {"text": t.text}


def total(values: list[int]) -> int:
    return sum(values)


built = Workflow("built", state=Ticket)
built.step(classify)
