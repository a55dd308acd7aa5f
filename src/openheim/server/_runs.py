"""Agent runs started over HTTP or gRPC: each in its own task, its events buffered.

A run executes detached from the connection that started it and appends its
events to a buffer; a client that lost its stream reconnects with
``Last-Event-ID`` and is replayed the events after that id. Finished runs keep
their buffer for ``run_retention`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import OpenheimError
from openheim.server._wire import json_encode

if TYPE_CHECKING:
    from openheim.agent import Agent
    from openheim.server._state import ServerState

_RUN_PREFIX = os.urandom(4).hex()
_numbers = itertools.count(1)


class RunRecord:
    """One agent run: its tenant, its events (as JSON bytes) and whether it ended."""

    def __init__(self, run_id: str, tenant: str, agent: str) -> None:
        self.id = run_id
        self.tenant = tenant
        self.agent = agent
        self.events: list[tuple[str, bytes]] = []  # (event type, JSON data)
        self.finished = False
        self.finished_at = 0.0
        self.result: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def push(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, json_encode({"type": kind, **data})))
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self.finished_at = time.monotonic()
        self._changed.set()

    async def wait(self, seen: int) -> None:
        while len(self.events) <= seen and not self.finished:
            self._changed.clear()
            await self._changed.wait()


class RunRegistry:
    """The runs of every tenant, by id; starts, drives, expires and drains them."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self.records: dict[str, RunRecord] = {}

    def __len__(self) -> int:
        return len(self.records)

    def get(self, run_id: str, tenant: str) -> RunRecord | None:
        """The run ``run_id`` when ``tenant`` owns it."""
        record = self.records.get(run_id)
        if record is None or record.tenant != tenant:
            return None
        return record

    def start(self, tenant: str, name: str, prompt: str, session: str | None) -> RunRecord:
        """Start agent ``name`` on ``prompt`` (raises TooManyRuns, ConfigError)."""
        agent = self._state.agent(tenant, name)
        self._expire()
        self._state.acquire(tenant)
        record = RunRecord(f"run_{_RUN_PREFIX}{next(_numbers)}", tenant, name)
        self.records[record.id] = record
        record.push("run_started", {"run_id": record.id, "agent": name, "session": session})
        record.task = asyncio.get_running_loop().create_task(
            self._drive(record, agent, prompt, session)
        )
        return record

    async def _drive(
        self, record: RunRecord, agent: Agent, prompt: str, session: str | None
    ) -> None:
        from openheim.agent import Done

        try:
            async for event in agent.stream(prompt, session=session):
                if type(event) is Done:
                    res = event.result
                    record.result = {
                        "run_id": record.id,
                        "output": res.output,
                        "stop_reason": res.stop_reason,
                        "usage": res.usage,
                        "session": res.session,
                        "pending": res.pending,
                    }
                    record.push("done", record.result)
                else:
                    record.push(_event_name(event), msgspec.structs.asdict(event))
        except asyncio.CancelledError:
            record.push("error", {"error": {"type": "Cancelled", "message": "run cancelled"}})
            raise
        except (OpenheimError, ValueError, TypeError) as exc:
            record.push("error", {"error": {"type": type(exc).__name__, "message": str(exc)}})
        finally:
            record.finish()
            self._state.release(record.tenant)

    def _expire(self) -> None:
        keep = self._state.config.server.run_retention
        now = time.monotonic()
        old = [r.id for r in self.records.values() if r.finished and now - r.finished_at > keep]
        for rid in old:
            del self.records[rid]

    def in_flight(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self.records.values() if r.task is not None and not r.task.done()]

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for in-flight runs, then cancel the rest."""
        tasks = self.in_flight()
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await t


_NAMES = {
    "TextDelta": "text_delta",
    "ToolCallStarted": "tool_call_started",
    "ToolCallArgsDelta": "tool_call_args_delta",
    "ToolCalled": "tool_called",
    "ToolResult": "tool_result",
    "UsageEvent": "usage",
    "ApprovalRequired": "approval_required",
}


def _event_name(event: Any) -> str:
    return _NAMES.get(type(event).__name__, type(event).__name__.lower())
