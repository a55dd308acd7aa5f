"""The child process of test_crash.py: agents with side-effecting tools on a SQLite store.

    python _crash_child.py DB EFFECTS ACKS SESSIONS MESSAGES

It first recovers interrupted runs, prints READY, then sends each session its
prompts one by one (``s<i>-m<j>``; the next j is the number of prompts the
session holds). Each run calls ``effect`` twice, then answers. ``effect``
appends ``<call id> <token>`` to EFFECTS and fsyncs before returning the
token; after a run returns, its prompt is appended to ACKS (fsynced): an
acknowledged message. The parent kills this process with SIGKILL at random.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from typing import Any

import openheim as oh
from openheim.messages import ToolCall
from openheim.models import ModelRequest, ScriptedModel
from openheim.stores import Checkpointer, StoreHistory, open_store

_tokens = itertools.count()


def _append_durably(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _reply(request: ModelRequest) -> Any:
    prompt = next(m.content for m in reversed(request.messages) if m.role == "user")
    last = request.messages[-1]
    if last.role == "user":
        return ToolCall("effect", {"key": f"{prompt}-1"}, f"{prompt}-1")
    if last.tool_call_id == f"{prompt}-1":
        return ToolCall("effect", {"key": f"{prompt}-2"}, f"{prompt}-2")
    return f"done {prompt}"


async def main(db: str, effects: str, acks: str, sessions: int, messages: int) -> None:
    @oh.tool
    def effect(key: str) -> str:
        """A side effect that counts itself."""
        token = f"{os.getpid()}.{next(_tokens)}"
        _append_durably(effects, f"{key} {token}")
        return token

    store = open_store(f"sqlite://{db}")
    history = StoreHistory(store)
    agent = oh.Agent(
        ScriptedModel(_reply),
        name="crash",
        tools=[effect],
        history=history,
        checkpointer=Checkpointer(store, snapshot_every=3, keep=2),
    )
    await agent.recover()
    print("READY", flush=True)

    async def worker(i: int) -> None:
        sid = f"s{i}"
        while True:
            held = [m for m in await history.load(sid) if m.role == "user"]
            if len(held) >= messages:
                return
            prompt = f"{sid}-m{len(held)}"
            await agent.run(prompt, session=sid)
            _append_durably(acks, prompt)

    await asyncio.gather(*(worker(i) for i in range(sessions)))
    await store.aclose()
    print("COMPLETE", flush=True)


if __name__ == "__main__":
    db, effects, acks, n_sessions, n_messages = sys.argv[1:6]
    asyncio.run(main(db, effects, acks, int(n_sessions), int(n_messages)))
