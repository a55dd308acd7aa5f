"""Server state: tenants' agents, runs and their buffered events, concurrency limits.

A run executes in its own task, detached from the HTTP connection that started
it, and appends its events to a buffer; a client that lost its stream
reconnects with ``Last-Event-ID`` and is replayed the events after that id.
Finished runs keep their buffer for ``run_retention`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from openheim.config import Config, open_history
from openheim.errors import OpenheimError
from openheim.messages import Message, Usage

_RUN_PREFIX = os.urandom(4).hex()
_numbers = itertools.count(1)


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


json_encode = msgspec.json.Encoder(enc_hook=_jsonable).encode


class EphemeralHistory:
    """A tenant's session store plus request-scoped conversations that are never saved.

    OpenAI-style requests carry the whole conversation; it is handed to the
    agent as the history of a throwaway session id.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._scratch: dict[str, list[Message]] = {}

    def scratch(self, session: str, messages: list[Message]) -> None:
        self._scratch[session] = messages

    def drop(self, session: str) -> None:
        self._scratch.pop(session, None)

    async def load(self, session: str) -> list[Message]:
        if session in self._scratch:
            return list(self._scratch[session])
        result: list[Message] = await self.store.load(session)
        return result

    async def append(
        self,
        session: str,
        messages: Sequence[Message],
        usage: Usage | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        if session in self._scratch:
            return
        await self.store.append(session, messages, usage, run_id=run_id)

    async def usage(self, session: str) -> Usage:
        result: Usage = await self.store.usage(session)
        return result

    async def clear(self, session: str) -> None:
        await self.store.clear(session)


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


class TooManyRuns(Exception):
    pass


class ServerState:
    """Everything the app shares across requests; ``reload`` swaps the config in place."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._keys: dict[bytes, str] = {}
        self._agents: dict[tuple[str, str], Any] = {}
        self._models: dict[str, Any] = {}
        self._histories: dict[str, EphemeralHistory] = {}
        self.runs: dict[str, RunRecord] = {}
        self.active: dict[str, int] = {}
        self.accepting = True
        self._load_keys()

    def _load_keys(self) -> None:
        self._keys = {bytes.fromhex(h): t for h, t in self.config.tenant_keys().items()}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.config.server.api_keys)

    def reload(self, config: Config) -> None:
        """Use a new config; running runs keep their agents, sessions stay in the store."""
        self.config = config
        self._load_keys()
        self._agents.clear()
        self._models.clear()

    def tenant_for(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        # Compare against every key so the time taken does not tell which matched.
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known, digest):
                found = tenant
        return found

    def history(self, tenant: str) -> EphemeralHistory:
        h = self._histories.get(tenant)
        if h is None:
            h = EphemeralHistory(open_history(self.config.store.url, tenant))
            self._histories[tenant] = h
        return h

    def provider_model(self, spec: str) -> Any:
        """The Model for ``"<provider>:<model>"`` of a configured provider (one per spec)."""
        model = self._models.get(spec)
        if model is None:
            model = self.config.resolve_model("(request)", spec)
            self._models[spec] = model
        return model

    def agent(self, tenant: str, name: str) -> Any:
        key = (tenant, name)
        agent = self._agents.get(key)
        if agent is None:
            agent = self.config.build_agent(name, history=self.history(tenant))
            self._agents[key] = agent
        return agent

    # ---- runs ------------------------------------------------------------------------

    def acquire(self, tenant: str) -> None:
        limit = self.config.server.max_concurrent_runs_per_tenant
        if self.active.get(tenant, 0) >= limit:
            raise TooManyRuns
        self.active[tenant] = self.active.get(tenant, 0) + 1

    def release(self, tenant: str) -> None:
        self.active[tenant] -= 1

    def start_run(self, tenant: str, name: str, prompt: str, session: str | None) -> RunRecord:
        agent = self.agent(tenant, name)
        self._expire()
        self.acquire(tenant)
        record = RunRecord(f"run_{_RUN_PREFIX}{next(_numbers)}", tenant, name)
        self.runs[record.id] = record
        record.push("run_started", {"run_id": record.id, "agent": name, "session": session})
        record.task = asyncio.get_running_loop().create_task(
            self._drive(record, agent, prompt, session)
        )
        return record

    async def _drive(self, record: RunRecord, agent: Any, prompt: str, session: str | None) -> None:
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
            self.release(record.tenant)

    def _expire(self) -> None:
        keep = self.config.server.run_retention
        now = time.monotonic()
        for rid in [r.id for r in self.runs.values() if r.finished and now - r.finished_at > keep]:
            del self.runs[rid]

    async def aclose(self) -> None:
        """Close the agents' and proxied models' connections."""
        for agent in list(self._agents.values()):
            with contextlib.suppress(Exception):
                await agent.aclose()
        for model in list(self._models.values()):
            with contextlib.suppress(Exception):
                await model.aclose()
        self._agents.clear()
        self._models.clear()

    def in_flight(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for in-flight runs, then cancel the rest."""
        self.accepting = False
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
