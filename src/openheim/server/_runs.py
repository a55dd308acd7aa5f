"""Agent runs started over HTTP or gRPC: each in its own task, its events kept in the store.

A run executes detached from the connection that started it, under its
lease in the store (``lease/run/<id>``), and its events go to the store's
event log (``server/_runlog.py``); a client that lost its stream reconnects
with ``Last-Event-ID`` and is sent the events after that id, from memory or
from the store, also after the server was killed and restarted. At start-up
:meth:`RunRegistry.recover` resumes the runs a dead server left unfinished,
each under its lease, so two servers on one store never both resume one.

Bounds: ``[server] max_run_events`` events per run in the store (the oldest
dropped), :data:`~openheim.server._runlog.TAIL` in memory; finished runs are
forgotten ``run_retention`` seconds after they end (a timer, not the next
run), and beyond ``max_runs`` finished runs the oldest go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import OpenheimError
from openheim.server._runlog import RunRecord, follow_stored, stored_events
from openheim.server._wire import describe_error
from openheim.stores.events import RunEventLog
from openheim.stores.lease import Lease, default_holder

if TYPE_CHECKING:
    from openheim.agent import AgentEvent
    from openheim.server._state import ServerState

logger = logging.getLogger("openheim.server")


class StoredRun(msgspec.Struct, frozen=True):
    """What the store tells of a run this process does not execute."""

    run_id: str
    closed: bool
    last: dict[str, Any] | None  # the last event's data, if it is done or error
    kind: str | None


def run_body(
    run_id: str, finished: bool, kind: str | None, data: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON answer of ``GET /v1/runs/{id}``."""
    if kind == "done" and data is not None:
        body = {k: v for k, v in data.items() if k != "type"}
        return {"status": "finished", **body}
    if kind == "error" and finished:
        return {"status": "failed", "run_id": run_id, "error": (data or {}).get("error")}
    if finished:
        return {"status": "failed", "run_id": run_id, "error": None}
    return {"status": "running", "run_id": run_id}


class RunRegistry:
    """The runs of every tenant, by id; starts, drives, recovers, expires and drains them."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self.records: dict[str, RunRecord] = {}
        self.holder = default_holder()
        self._holders = itertools.count(1)
        self._logs: dict[str, RunEventLog] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Runs seen paused (waiting for approval), not loaded again until this time.
        self._paused: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self.records)

    # ---- store -------------------------------------------------------------------------

    def log(self, tenant: str) -> RunEventLog:
        """The tenant's run event logs (bounded as configured)."""
        log = self._logs.get(tenant)
        server = self._state.config.server
        if log is None or log.store is not self._state.store(tenant):
            log = RunEventLog(
                self._state.store(tenant),
                max_events=server.max_run_events,
                retention=server.run_retention,
                max_runs=server.max_runs,
            )
            self._logs[tenant] = log
        return log

    def lease(self, tenant: str, run_id: str) -> Lease:
        """The lease whoever executes run ``run_id`` holds (``[server] run_lease_ttl``).

        Each handle is a holder of its own, so two requests in this process that
        race to continue one run are told apart like two processes.
        """
        ttl = self._state.config.server.run_lease_ttl
        holder = f"{self.holder}:{next(self._holders)}"
        return Lease(self._state.store(tenant), "run/" + run_id, holder=holder, ttl=ttl)

    # ---- lookup ------------------------------------------------------------------------

    def get(self, run_id: str, tenant: str) -> RunRecord | None:
        """The run ``run_id`` when this process executes it (or did) and ``tenant`` owns it."""
        record = self.records.get(run_id)
        if record is None or record.tenant != tenant:
            return None
        return record

    async def stored(self, run_id: str, tenant: str) -> StoredRun | None:
        """A run of ``tenant`` known only to the store (another process runs or ran it)."""
        log = self.log(tenant)
        try:
            info = await log.info(run_id)
        except OpenheimError:
            return None
        if info is None:
            return None
        last = await stored_events(log, run_id, info.last - 2, info.last)
        kind, data = (last[-1][1], msgspec.json.decode(last[-1][2])) if last else (None, None)
        return StoredRun(run_id, info.closed, data, kind)

    async def events(
        self, run_id: str, tenant: str, after: int
    ) -> AsyncIterator[tuple[int, str, bytes]] | None:
        """The events of the run after id ``after`` (None: no such run for this tenant)."""
        record = self.get(run_id, tenant)
        if record is not None:
            return record.follow(after)
        if await self.stored(run_id, tenant) is None:
            return None
        return follow_stored(self.log(tenant), run_id, after)

    async def last_id(self, run_id: str, tenant: str) -> int | None:
        """The id of the run's newest event so far (-1 if none), None if there is no run."""
        record = self.get(run_id, tenant)
        if record is not None:
            return record.next_id - 1
        info = await self.log(tenant).info(run_id)
        return None if info is None else info.last - 1

    # ---- starting and driving ------------------------------------------------------------

    def start(self, tenant: str, name: str, prompt: str, session: str | None) -> RunRecord:
        """Start agent ``name`` on ``prompt`` (raises TooManyRuns, ConfigError)."""
        from openheim.snapshot import new_run_id

        agent = self._state.agent(tenant, name)
        self._state.acquire(tenant)
        self._ensure_sweeper()
        run_id = new_run_id()
        record = RunRecord(run_id, tenant, name, self.log(tenant))
        self.records[run_id] = record
        record.push("run_started", {"run_id": run_id, "agent": name, "session": session})
        # One id: the server's run id is the agent's (its checkpoints, its lease, its events).
        events = agent.stream(prompt, session=session, run_id=run_id)
        record.task = asyncio.get_running_loop().create_task(
            self._drive(record, events, self.lease(tenant, run_id), fresh=True)
        )
        return record

    async def _drive(
        self,
        record: RunRecord,
        events: AsyncIterator[AgentEvent],
        lease: Lease,
        *,
        fresh: bool = False,
    ) -> None:
        """Run ``events`` into ``record`` under ``lease`` (acquired here when ``fresh``)."""
        from openheim.agent import Done

        task = asyncio.current_task()
        try:
            await record.open()
            if fresh and not await lease.acquire():
                raise OpenheimError(f"run {record.id!r} is held by another process")
            async with (
                lease.kept(on_lost=task.cancel if task is not None else None),
                contextlib.aclosing(events) as stream,  # type: ignore[type-var]
            ):
                async for event in stream:
                    if type(event) is Done:
                        res = event.result
                        record.push(
                            "done",
                            {
                                "run_id": record.id,
                                "output": res.output,
                                "stop_reason": res.stop_reason,
                                "usage": res.usage,
                                "session": res.session,
                                "pending": res.pending,
                            },
                        )
                    else:
                        record.push(_event_name(event), msgspec.structs.asdict(event))
        except asyncio.CancelledError:
            # Shutdown past its grace, or the lease was lost: the run's checkpoints and its
            # open event log stay, and the next server to start (or the new holder) goes on.
            record.hand_off()
            raise
        except Exception as exc:
            err = describe_error(exc)
            if err.status >= 500:  # a bug in a model or tool, or the server: log the traceback
                logger.error(
                    "run %r of agent %r (tenant %r) failed",
                    record.id,
                    record.agent,
                    record.tenant,
                    exc_info=exc,
                )
            record.push("error", err.event())
        finally:
            if not record.handed_off:
                with contextlib.suppress(Exception):
                    await asyncio.shield(record.close())
            self._state.release(record.tenant)

    # ---- recovery and approvals ----------------------------------------------------------

    def tenants(self) -> list[str]:
        """Every tenant the config knows (``default`` when there are no API keys)."""
        if not self._state.auth_enabled:
            return ["default"]
        return sorted(set(self._state.config.tenant_keys().values()))

    async def recover(self) -> list[str]:
        """Resume the runs a server left unfinished (each under its lease); their ids.

        Runs paused for approval stay paused; runs of agents no longer in the
        config are left alone (and logged).
        """
        resumed: list[str] = []
        for tenant in self.tenants():
            ckpt = self._state.checkpointer(tenant)
            now = time.monotonic()
            for run_id in await ckpt.runs():
                if run_id in self.records or self._paused.get((tenant, run_id), 0) > now:
                    continue
                if await self.lease(tenant, run_id).info() is not None:
                    continue  # alive in another process (a server, the CLI, the REPL)
                try:
                    cp = await ckpt.load(run_id)
                except OpenheimError as exc:
                    logger.warning("tenant %r: cannot recover run %r: %s", tenant, run_id, exc)
                    continue
                if cp is None:
                    continue
                if cp.status == "paused":
                    self._paused[(tenant, run_id)] = now + 60.0
                    continue
                if cp.agent not in self._state.config.agents:
                    logger.warning(
                        "tenant %r: run %r belongs to agent %r, which is not configured; "
                        "left unfinished",
                        tenant,
                        run_id,
                        cp.agent,
                    )
                    continue
                lease = self.lease(tenant, run_id)
                if not await lease.acquire():
                    continue  # alive in another process, or resumed by another server
                try:
                    agent = self._state.agent(tenant, cp.agent)
                    log = self.log(tenant)
                    first = await log.open(run_id)
                except BaseException:
                    await lease.release()
                    raise
                self._state.acquire(tenant, force=True)
                self._ensure_sweeper()
                record = RunRecord(run_id, tenant, cp.agent, log, first)
                self.records[run_id] = record
                events = agent.stream_resumed(run_id)
                record.task = asyncio.get_running_loop().create_task(
                    self._drive(record, events, lease)
                )
                resumed.append(run_id)
                logger.info("tenant %r: resuming run %r of agent %r", tenant, run_id, cp.agent)
        return resumed

    async def decide(self, tenant: str, run_id: str, approvals: dict[str, Any]) -> RunRecord:
        """Decide a paused run's pending calls and continue it (ApprovalError, TooManyRuns)."""
        from openheim.agent.approvals import check_decisions, paused_run, resume_paused
        from openheim.errors import ApprovalError

        paused = await paused_run(self._state.checkpointer(tenant), run_id)
        if paused is None:
            raise ApprovalError(
                f"run {run_id!r} is not waiting for approvals (it is running, finished, or "
                "was decided already)"
            )
        check_decisions(paused, approvals)
        if paused.agent not in self._state.config.agents:
            raise ApprovalError(f"run {run_id!r} belongs to agent {paused.agent!r}, which is gone")
        agent = self._state.agent(tenant, paused.agent)
        lease = self.lease(tenant, run_id)
        if not await lease.acquire():
            info = await lease.info()
            who = ""
            if info is not None:
                left = max(1, math.ceil(info.expires - time.time()))
                who = (
                    f" (its lease is held by {info.holder!r} for {left} s more; if that "
                    "process died, retry then)"
                )
            raise ApprovalError(
                f"run {run_id!r} is being continued already{who}; nothing was decided. "
                "Follow its events"
            )
        try:
            self._state.acquire(tenant)
        except BaseException:
            await lease.release()
            raise
        log = self.log(tenant)
        try:
            first = await log.open(run_id)
        except BaseException:
            await lease.release()
            self._state.release(tenant)
            raise
        self._ensure_sweeper()
        record = RunRecord(run_id, tenant, paused.agent, log, first)
        self.records[run_id] = record
        record.push(
            "run_resumed", {"run_id": run_id, "agent": paused.agent, "approvals": approvals}
        )
        events = resume_paused(agent, run_id, approvals, lease=lease)
        record.task = asyncio.get_running_loop().create_task(self._drive(record, events, lease))
        return record

    # ---- expiry and shutdown --------------------------------------------------------------

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            # In a context of its own, not the request's that may start it: the runs it
            # takes over must not join that request's trace (nor carry its log fields).
            loop = asyncio.get_running_loop()
            self._sweeper = contextvars.Context().run(loop.create_task, self._background())

    async def start_background(self) -> None:
        """At server start: resume what a dead server left, then keep expiring and recovering."""
        try:
            await self.recover()
        except Exception:
            logger.exception("recovering interrupted runs failed")
        self._ensure_sweeper()

    async def _background(self) -> None:
        """Every few seconds: expire finished runs, take over runs whose holder died."""
        while True:
            server = self._state.config.server
            await asyncio.sleep(
                min(max(server.run_retention / 4, 0.2), server.run_lease_ttl / 2, 30.0)
            )
            try:
                await self.sweep()
                await self.recover()
            except Exception:
                logger.exception("expiring or recovering runs failed")

    async def sweep(self) -> None:
        """Forget finished runs past ``run_retention`` (and the oldest beyond ``max_runs``),
        in memory and in every tenant's store."""
        server = self._state.config.server
        now = time.monotonic()
        finished = sorted((r.finished_at, r.id) for r in self.records.values() if r.finished)
        over = max(0, len(finished) - server.max_runs)
        for i, (at, rid) in enumerate(finished):
            if i < over or now - at > server.run_retention:
                del self.records[rid]
        for tenant in self.tenants():
            await self.log(tenant).expire()

    def in_flight(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self.records.values() if r.task is not None and not r.task.done()]

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for in-flight runs, then cancel the rest."""
        tasks = self.in_flight()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


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
