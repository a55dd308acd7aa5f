"""The config's workflows as the server runs them, for the HTTP routes and gRPC alike.

Every run the server drives (started, resumed, forked, or continued after an
approval) is driven under the run's lease (``wfrun/<id>`` in the tenant's
namespace of the store), taken *before* the server answers: of two servers
asked to continue one run, one answers 202 and the other 409, and a run that
is driven somewhere is never driven twice. The runs are tracked here: on
shutdown the server waits ``[server] shutdown_grace`` seconds for them, then
cancels the rest (their last checkpoints stay in the store and their leases
are released, so a resume anywhere carries on from there).

Approval deadlines are applied by a sweep every ``SWEEP`` seconds, so they pass
even when the process that asked for the approval is gone: the approval is
rejected (or escalated) and its run continued here, under its lease.

SIGHUP rebuilds the ``[workflows.NAME]`` tables (:meth:`ServedWorkflows.replace`);
runs in flight finish on the definition they started with, and the old
workflows' stores are closed once those runs end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from openheim.errors import (
    OpenheimError,
    RunNotFoundError,
    WorkflowBusyError,
    WorkflowCancelled,
    WorkflowError,
)
from openheim.server._wire import json_encode, shown
from openheim.workflow.events import to_builtins

if TYPE_CHECKING:
    from openheim.config import Config
    from openheim.stores.lease import Lease
    from openheim.workflow import Workflow, WorkflowResult

__all__ = ["RunLeased", "ServedWorkflows", "ShuttingDown", "build_served"]

log = logging.getLogger("openheim.server")

POLL = 0.05  # seconds between looks at a running run's checkpoints
SWEEP = 1.0  # seconds between looks for approvals whose deadline passed


class ShuttingDown(OpenheimError):
    """The server drains its runs and takes no new ones (a 503 / UNAVAILABLE)."""


class RunLeased(WorkflowBusyError):
    """Another process holds the run's lease (a 409 with ``Retry-After``): it drives the
    run, or it died and its lease lapses at ``expires`` (wall clock)."""

    def __init__(self, run_id: str, holder: str | None, expires: float | None) -> None:
        self.run_id = run_id
        self.holder = holder
        self.expires = expires
        self.retry_after = max(1, math.ceil(expires - time.time())) if expires else 1
        if holder is None or expires is None:
            who = "another process held it a moment ago"
        else:
            until = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
            who = f"its lease is held by {holder!r} until {until:%Y-%m-%dT%H:%M:%S}Z"
        super().__init__(
            f"run {shown(run_id)} is being driven by another process ({who}); nothing was "
            f"resumed. Follow it with its status or events, or retry in {self.retry_after} s "
            "(if that process died, its lease lapses then: [server] run_lease_ttl)"
        )


def build_served(config: Config) -> dict[str, Workflow]:
    """The config's ``[workflows.NAME]``, built; each must have a store. Their runs'
    leases last ``[server] run_lease_ttl`` seconds unless renewed, like agent runs'."""
    workflows: dict[str, Workflow] = config.build_workflows()
    for name, wf in workflows.items():
        wf.lease_ttl = config.server.run_lease_ttl  # as the server's agent runs
        if not wf.journal.durable:
            raise config.error(
                ["workflows", name],
                f"workflow {wf.name!r} has no store; served workflows need one so that any "
                "process can answer for their runs (build it with store=..., or declare it "
                "in the file to use [store].url)",
            )
    return workflows


class ServedWorkflows:
    """Name -> workflow, scoped per tenant; the runs this server drives, under their leases."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow] | None = None,
        accepting: Callable[[], bool] | None = None,
    ) -> None:
        self._server_accepting = accepting  # False from the server's first exit signal on
        self.workflows: dict[str, Workflow] = dict(workflows or {})
        self._scoped: dict[tuple[str, str], Workflow] = {}
        # task -> (namespace, run id, the workflow object driving it)
        self._tasks: dict[asyncio.Task[Any], tuple[str, str, Workflow]] = {}
        self._retired: list[Workflow] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.accepting = True
        self._sweeper: asyncio.Task[None] | None = None

    # ---- which workflow ---------------------------------------------------------------

    def get(self, name: str, tenant: str) -> Workflow:
        """Workflow ``name`` in ``tenant``'s namespace (RunNotFoundError if unknown)."""
        base = self.workflows.get(name)
        if base is None:
            known = ", ".join(self.workflows) or "none"
            raise RunNotFoundError(f"no workflow {shown(name)} (workflows: {known})")
        key = (name, tenant)
        wf = self._scoped.get(key)
        if wf is None:
            wf = self._scoped[key] = base.scoped(f"tenant/{tenant}")
        return wf

    def replace(self, workflows: Mapping[str, Workflow]) -> None:
        """Serve ``workflows`` from now on (SIGHUP). Runs in flight keep the definition
        they run on; the replaced workflows' stores are closed once those runs end."""
        old, self.workflows = list(self.workflows.values()), dict(workflows)
        self._scoped = {}
        self._retired.extend(old)
        running = list(self._tasks)
        task = asyncio.get_running_loop().create_task(self._close_after(running, old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_after(self, running: list[asyncio.Task[Any]], old: list[Workflow]) -> None:
        if running:
            await asyncio.wait(running)
        for wf in old:
            try:
                await wf.aclose()
            except Exception:
                log.warning("closing replaced workflow %r failed", wf.name, exc_info=True)
            with contextlib.suppress(ValueError):
                self._retired.remove(wf)

    def in_flight(self) -> list[tuple[str, str]]:
        """(namespace, run id) of the runs this server drives right now."""
        return [(ns, run_id) for t, (ns, run_id, _) in self._tasks.items() if not t.done()]

    # ---- driving runs under their leases ------------------------------------------------

    def _check_accepting(self) -> None:
        if not self.accepting or (
            self._server_accepting is not None and not self._server_accepting()
        ):
            raise ShuttingDown("the server is shutting down; retry on another")

    async def _claim(self, wf: Workflow, run_id: str) -> Lease:
        lease = wf.lease(run_id)
        if not await lease.acquire():
            info = await lease.info()
            raise RunLeased(
                run_id,
                info.holder if info is not None else None,
                info.expires if info is not None else None,
            )
        return lease

    def _track(self, wf: Workflow, run_id: str, lease: Lease, coro: Any) -> asyncio.Task[Any]:
        async def drive() -> Any:
            try:
                return await coro
            finally:
                await lease.release()  # no-op when the run released it already

        task = asyncio.get_running_loop().create_task(drive(), name=f"workflow run {run_id}")
        self._tasks[task] = (wf.journal.store.ns, run_id, wf)  # type: ignore[attr-defined]
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, OpenheimError):
                log.error("workflow run %s failed", task.get_name(), exc_info=exc)

    async def start(self, wf: Workflow, input: Any, run_id: str | None = None) -> str:
        """Start a run in the background; returns its id once its start is recorded."""
        self._check_accepting()
        run_id = run_id or wf.new_run_id()
        lease = await self._claim(wf, run_id)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                async for _ in wf.stream(input, run_id=run_id, lease=lease):
                    if not started.done():
                        started.set_result(None)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                raise

        task = self._track(wf, run_id, lease, run())
        await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            started.result()  # raises the error that kept it from starting
        else:
            task.result()
        return run_id

    async def run(self, wf: Workflow, input: Any, run_id: str | None = None) -> WorkflowResult:
        """Run until the run ends or waits (tracked like a background run: a client that
        goes away does not cancel it). A run that failed is answered with its status."""
        self._check_accepting()
        run_id = run_id or wf.new_run_id()
        lease = await self._claim(wf, run_id)
        task = self._track(wf, run_id, lease, wf.run(input, run_id=run_id, lease=lease))
        try:
            result: WorkflowResult = await asyncio.shield(task)
            return result
        except WorkflowError:
            if not await wf.journal.read(run_id):
                raise  # it never started (bad input, an existing run id)
            return await wf.status(run_id)  # failed, recorded: its status says how

    async def resume(self, wf: Workflow, run_id: str) -> None:
        """Continue run ``run_id`` in the background (WorkflowBusyError if driven elsewhere)."""
        self._check_accepting()
        status = await wf.status(run_id)
        if status.status == "cancelled":
            raise WorkflowCancelled(f"run {shown(run_id)} was cancelled; fork it to run it again")
        if await self._on_queue(wf, run_id):
            return
        lease = await self._claim(wf, run_id)
        self._track(wf, run_id, lease, wf.resume(run_id, lease=lease))

    async def fork(
        self,
        wf: Workflow,
        run_id: str,
        checkpoint: int | None,
        state: Mapping[str, Any] | None,
    ) -> str:
        """Fork run ``run_id`` and run the fork in the background; the new run's id."""
        self._check_accepting()
        new_id = await wf.fork(run_id, checkpoint, state)
        if not await self._on_queue(wf, new_id):
            lease = await self._claim(wf, new_id)
            self._track(wf, new_id, lease, wf.resume(new_id, lease=lease))
        return new_id

    @staticmethod
    async def _on_queue(wf: Workflow, run_id: str) -> bool:
        """If ``run_id`` is a batch run, put its ready tasks on its queue, for its workers
        (True); this server runs none of its steps."""
        if await wf.queue_of(run_id) is None:
            return False
        await wf.resume(run_id)
        return True

    def driver(self, wf: Workflow, run_id: str) -> Workflow | None:
        """The workflow object driving run ``run_id`` here right now (None: not driven here;
        after a SIGHUP it is the definition the run started on, not ``wf``)."""
        ns = wf.journal.store.ns  # type: ignore[attr-defined]
        for t, (t_ns, t_run, t_wf) in self._tasks.items():
            if t_ns == ns and t_run == run_id and not t.done():
                return t_wf
        return None

    def driving(self, wf: Workflow, run_id: str) -> bool:
        return self.driver(wf, run_id) is not None

    async def decide(
        self,
        wf: Workflow,
        approval_id: str,
        approved: bool,
        *,
        by: str | None = None,
        reason: str | None = None,
        edits: Mapping[str, Any] | None = None,
    ) -> str:
        """Decide an approval and continue its run in the background; the run's id.

        The run's lease is taken before the decision is recorded: when another
        process drives the run, nothing is decided (WorkflowBusyError). When this
        server drives it (other branches still running), the driver carries on. A
        batch run is continued by its workers (the decision puts its next tasks on its
        queue), not here."""
        self._check_accepting()
        got = await wf.journal.get_approval(approval_id)
        # The tenant's workflows share one journal: another workflow's approval is not ours.
        if got is None or got[0].workflow not in wf.definitions():
            raise RunNotFoundError(f"no approval {shown(approval_id)}")
        root = got[0].root
        driver = self.driver(wf, root)
        if driver is not None:  # its driver here applies the decision and carries on
            await driver.approve(
                approval_id, approved, by=by, reason=reason, edits=edits, resume=False
            )
            if self.driving(wf, root):
                return root
            # Its driver stopped meanwhile: the decision is recorded; continue the run.
            await self._after_decision(wf, root, await self._claim(wf, root))
            return root
        lease = await self._claim(wf, root)
        try:
            await wf.approve(approval_id, approved, by=by, reason=reason, edits=edits, resume=False)
        except BaseException:
            await lease.release()
            raise
        await self._after_decision(wf, root, lease)
        return root

    async def _after_decision(self, wf: Workflow, root: str, lease: Lease) -> None:
        """Continue run ``root`` here under ``lease`` once one of its approvals was
        decided; a batch run's decision put its next tasks on its queue, for its workers."""
        try:
            batch = await wf.queue_of(root) is not None
        except BaseException:
            await lease.release()
            raise
        if batch:
            await lease.release()
        else:
            self._track(wf, root, lease, wf.resume(root, lease=lease))

    # ---- approval deadlines -----------------------------------------------------------------

    def start_sweeping(self, tenants: Callable[[], list[str]]) -> None:
        """Every ``SWEEP`` seconds, apply the approval deadlines that passed (:meth:`sweep`)."""

        async def forever() -> None:
            while self.accepting:
                try:
                    await self.sweep(tenants())
                except Exception:
                    log.exception("applying workflow approval deadlines failed")
                await asyncio.sleep(SWEEP)

        self._sweeper = asyncio.get_running_loop().create_task(forever())

    async def sweep(self, tenants: list[str]) -> list[str]:
        """Reject (or escalate) every pending approval whose deadline passed, and continue
        its run here under its lease; the approval ids. A run another process drives is
        left for a later sweep (nothing is decided then); one this server drives has its
        deadline applied by the timer of the process that asked for the approval."""
        out: list[str] = []
        for name in list(self.workflows):
            for tenant in tenants:
                wf = self.get(name, tenant)
                now = time.time()
                for a in await wf.approvals():
                    if a.deadline is None or a.deadline > now or self.driving(wf, a.root):
                        continue
                    try:
                        lease = await self._claim(wf, a.root)
                    except WorkflowBusyError:
                        continue
                    try:
                        decided = await wf.expire(now, resume=False, only={a.id})
                    except BaseException:
                        await lease.release()
                        raise
                    if not decided:
                        await lease.release()
                        continue
                    await self._after_decision(wf, a.root, lease)
                    out.append(a.id)
        return out

    # ---- following a run -----------------------------------------------------------------

    @staticmethod
    async def follow(
        wf: Workflow, run_id: str, after: int, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[tuple[int, str, bytes]]:
        """Run ``run_id``'s checkpoints after id ``after`` as ``(id, "checkpoint", json)``,
        as they are written (by any process on the store), then ``(0, status, run json)``
        once it no longer runs (or ``gone()`` says the client left)."""
        seen = after
        while True:
            for cp in await wf.history(run_id):
                if cp.id > seen:
                    seen = cp.id
                    yield cp.id, "checkpoint", json_encode(to_builtins(cp))
            status = await wf.status(run_id)
            if status.status != "running" or (gone is not None and await gone()):
                yield 0, status.status, json_encode(status.to_builtins())
                return
            await asyncio.sleep(POLL)

    # ---- shutdown ------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Take no new runs; wait up to ``grace`` seconds for the runs in flight, then
        cancel the rest (they stay resumable from their last checkpoint)."""
        self.accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        tasks = list(self._tasks)
        if not tasks:
            return
        log.info("waiting up to %gs for %d workflow run(s)", grace, len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            log.warning("%s did not finish within the grace period; cancelled", task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def aclose(self) -> None:
        """Close every workflow's store (after :meth:`drain`)."""
        await asyncio.gather(*self._closing, return_exceptions=True)
        for wf in [*self.workflows.values(), *self._retired]:
            try:
                await wf.aclose()
            except Exception:
                log.warning("closing workflow %r failed", wf.name, exc_info=True)
        self._retired = []
