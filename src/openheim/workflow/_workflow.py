"""``Workflow``: define a graph once, then run, stream, resume, fork, approve and cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import (
    ConfigError,
    RunNotFoundError,
    WorkflowApprovalError,
    WorkflowBusyError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowStateError,
)
from openheim.workflow._graph import Graph
from openheim.workflow._journal import Journal, cancel_approvals, open_journal
from openheim.workflow._records import (
    ApprovalRecord,
    Budget,
    Decided,
    Decision,
    Ended,
    ItemDone,
    Lineage,
    Record,
    Retried,
    Started,
    StepDone,
    Usage,
    Waiting,
)
from openheim.workflow._runner import Ctx, execute, result_of
from openheim.workflow._view import RunView
from openheim.workflow.events import Checkpoint, RunFinished, RunStarted, WorkflowResult

if TYPE_CHECKING:
    from openheim.stores.lease import Lease

__all__ = ["Workflow"]

_RUN_PREFIX = "wf-" + os.urandom(5).hex()
_run_numbers = itertools.count(1)


def new_run_id() -> str:
    return f"{_RUN_PREFIX}-{next(_run_numbers)}"


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Workflow(Graph):
    """A typed graph of nodes run as a workflow, in this process (real-time mode).

    ``state`` is a msgspec Struct or pydantic model class; nodes read it and
    return the fields they update. ``store`` (a URL such as
    ``"sqlite:///state.db"``, or a :class:`~openheim.stores.Store`) makes every
    run durable: a checkpoint after every node, ``resume`` after a crash,
    ``fork``, ``history``, approvals that survive restarts. Without a store,
    runs live in this process only. ``budget`` limits every run (``run``
    may give another), ``timeout`` bounds one call of ``run``/``resume`` in
    seconds, and ``max_steps`` bounds the supersteps of a run (cycles).
    """

    def __init__(
        self,
        name: str,
        state: Any,
        *,
        store: Any = None,
        namespace: str | None = None,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        max_steps: int = 1000,
        budget: Budget | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(
            name, state, reducers=reducers, max_steps=max_steps, budget=budget, timeout=timeout
        )
        self.journal: Journal = open_journal(store, namespace)
        self._store_args = (store, namespace)
        self.lease_ttl = 30.0  # seconds a resuming process's lease lasts unless renewed
        self._live: dict[str, Ctx] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._firing: set[asyncio.Task[Any]] = set()  # deadline timers, background runs
        self._batches: dict[tuple[str, str, str], Any] = {}  # batch mode: (queue, store, name)

    new_run_id = staticmethod(new_run_id)  # the run id a run gets unless it is given one

    def scoped(self, namespace: str) -> Workflow:
        """This workflow (the same definition) with its runs kept in the store's
        ``namespace``: one per tenant, so tenants never see each other's runs."""
        from openheim.workflow._journal import StoreJournal

        if not isinstance(self.journal, StoreJournal):
            raise WorkflowError(
                f"workflow {self.name!r} has no store, so it has no namespaces to scope to"
            )
        other = self._journaled(StoreJournal(self.journal.store.namespace(namespace), owned=False))
        other._store_args = (other.journal.store, None)  # type: ignore[attr-defined]
        return other  # (batch queues stay shared with this workflow, which closes them)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, state={self.spec.name}, nodes={list(self.nodes)})"

    # -- starting and loading runs -----------------------------------------------------

    async def _start(self, graph: Graph, run_id: str, input: Any, budget: Budget | None) -> RunView:
        view = self._new_view(graph, run_id, input, budget)
        if self.journal.durable:
            await self._record_start(view)
        return view

    def _new_view(self, graph: Graph, run_id: str, input: Any, budget: Budget | None) -> RunView:
        if not graph._validated:
            graph.validate()
        state = graph.spec.new(input)
        start = graph.start
        assert start is not None
        return RunView(graph, run_id, state, [start], budget=budget)

    async def _record_start(self, view: RunView) -> None:
        graph = view.graph
        view.seq = await self.journal.append(
            view.run_id,
            Started(
                run_id=view.run_id,
                workflow=graph.name,
                state=graph.spec.dump(view.state),
                frontier=view.frontier,
                budget=view.budget,
                at=time.time(),
            ),
        )

    async def _load(
        self, graph: Graph, run_id: str, missing_ok: bool = False, others_ok: bool = False
    ) -> RunView | None:
        journal = self.journal
        view: RunView | None
        if not journal.durable:
            view = journal.views.get(run_id)  # type: ignore[attr-defined]
        else:
            records = await journal.read(run_id)
            start = records[0][1] if records else None
            if isinstance(start, Started) and start.workflow != graph.name:
                if others_ok:
                    return None
                raise RunNotFoundError(
                    f"run {run_id!r} is a run of workflow {start.workflow!r}, not {graph.name!r}"
                )
            view = RunView.replay(graph, records, typed=False) if records else None
        if view is None and not missing_ok:
            where = "this process" if not journal.durable else "the workflow's store"
            raise RunNotFoundError(
                f"no run {run_id!r} of workflow {graph.name!r} in {where}"
                + ("" if journal.durable else " (without a store, only waiting runs are kept)")
            )
        return view

    # -- real-time mode ----------------------------------------------------------------

    def run(
        self,
        input: Any = None,
        *,
        run_id: str | None = None,
        budget: Budget | None = None,
        lease: Lease | None = None,
        _emit: Callable[[Any], None] | None = None,
    ) -> Coroutine[Any, Any, WorkflowResult]:
        """Run the workflow on ``input`` (a state instance or a dict of its fields).

        Returns when the run is done, or waits for approvals (``status ==
        "waiting"``); raises :class:`WorkflowStepError` if a node fails after
        its retries (the run is recorded as failed; ``resume`` retries it).
        ``lease``: the run's lease (:meth:`lease`, acquired), kept while it runs.
        """
        if run_id is None and lease is None and _emit is None and not self.journal.durable:
            # In memory there is nothing to await before the first node: the executor's
            # coroutine is the run's own (one frame less for every run in flight).
            try:
                if not self._validated:
                    self.validate()
                view = self._new_view(self, new_run_id(), input, budget or self.budget)
            except Exception:
                pass  # raised again, when awaited, by the general path
            else:
                return execute(self, self, view, None)
        return self._run(input, run_id, budget, lease, _emit)

    async def _run(
        self,
        input: Any,
        run_id: str | None,
        budget: Budget | None,
        lease: Lease | None,
        _emit: Callable[[Any], None] | None,
    ) -> WorkflowResult:
        if not self._validated:
            self.validate()
        if run_id is None:
            run_id = new_run_id()
        elif self.journal.durable and await self.journal.read(run_id):
            raise WorkflowError(f"run {run_id!r} already exists; resume it, or choose a new run id")
        view = self._new_view(self, run_id, input, budget or self.budget)
        if self.journal.durable:
            await self._record_start(view)
        if _emit is not None:
            _emit(RunStarted(run_id, self.name))
        if lease is None:
            return await execute(self, self, view, _emit)
        async with _keeping(lease):
            return await execute(self, self, view, _emit)

    async def launch(
        self, input: Any = None, *, run_id: str | None = None, budget: Budget | None = None
    ) -> str:
        """Start a run in the background of this process and return its id as soon as
        its start is recorded (``status``/``history`` see it at once); failures are
        recorded in the run, not raised."""
        if not self._validated:
            self.validate()
        if run_id is None:
            run_id = new_run_id()
        elif self.journal.durable and await self.journal.read(run_id):
            raise WorkflowError(f"run {run_id!r} already exists; resume it, or choose a new run id")
        view = self._new_view(self, run_id, input, budget or self.budget)
        if self.journal.durable:
            await self._record_start(view)
        self._background(execute(self, self, view, None))
        return run_id

    def _background(self, coro: Any) -> None:
        async def guarded() -> None:
            with contextlib.suppress(WorkflowError):  # recorded in the run
                await coro

        task = asyncio.ensure_future(guarded())
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    def run_sync(self, input: Any = None, **kwargs: Any) -> WorkflowResult:
        """:meth:`run` from synchronous code (in a new event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._run_and_close(input, kwargs))
        raise RuntimeError(
            "Workflow.run_sync() was called from a running event loop; use `await wf.run(...)`"
        )

    async def _run_and_close(self, input: Any, kwargs: dict[str, Any]) -> WorkflowResult:
        try:
            return await self.run(input, **kwargs)
        finally:
            # The store's connections belong to this event loop: close them, and open
            # the store again (lazily, on the next loop) if the workflow opened it.
            if isinstance(self._store_args[0], str):
                await self.aclose()
                self.journal = open_journal(*self._store_args)

    async def stream(
        self,
        input: Any = None,
        *,
        run_id: str | None = None,
        resume: str | None = None,
        lease: Lease | None = None,
    ) -> AsyncIterator[Any]:
        """Run like :meth:`run` (or continue run ``resume``), yielding events as they
        happen; the last is :class:`RunFinished`. Breaking out cancels the run.
        ``lease`` as for :meth:`run` and :meth:`resume`."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        emit = queue.put_nowait

        async def go() -> None:
            try:
                if resume is not None:
                    emit(RunStarted(resume, self.name))
                    res = await self.resume(resume, lease=lease, _emit=emit)
                else:
                    res = await self.run(input, run_id=run_id, lease=lease, _emit=emit)
                emit(RunFinished(res))
            except BaseException as exc:  # handed to the reader
                emit(_Failure(exc))

        task = asyncio.ensure_future(go())
        try:
            while True:
                ev = await queue.get()
                if type(ev) is _Failure:
                    raise ev.exc
                yield ev
                if type(ev) is RunFinished:
                    return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def lease(self, run_id: str) -> Lease:
        """The lease whoever drives run ``run_id`` holds (``wfrun/<id>`` in the store).

        :meth:`resume` takes it itself; a server that must know it holds the run
        before it answers acquires it first and hands it to ``run``/``resume``."""
        from openheim.stores.lease import Lease

        if not self.journal.durable:
            raise WorkflowError(f"workflow {self.name!r} has no store, so its runs have no lease")
        return Lease(self.journal.store, "wfrun/" + run_id, ttl=self.lease_ttl)  # type: ignore[attr-defined]

    async def resume(
        self,
        run_id: str,
        *,
        lease: Lease | None = None,
        _emit: Callable[[Any], None] | None = None,
    ) -> WorkflowResult:
        """Continue run ``run_id`` from its last checkpoint (after a crash, a failure or
        an approval). Nodes with a recorded result are not run again.

        A batch run (see :meth:`submit`) is not run here: its ready tasks go back on
        its queue, for the workers, and its status is returned.

        With a store, the resuming process holds a lease on the run (``wfrun/<id>``,
        renewed while it runs): a second process resuming the same run at the same
        time gets a :class:`WorkflowError` instead of running its steps twice.
        ``lease``: that lease, already acquired (:meth:`lease`); kept, then released.
        """
        if run_id in self._live:
            raise WorkflowError(f"run {run_id!r} is running in this process right now")
        if not self.journal.durable:
            return await self._resume(run_id, _emit)
        from openheim.workflow._batch import resume_batch

        batch = await resume_batch(self, run_id)
        if batch is not None:
            return batch  # its workers continue it
        if lease is None:
            lease = self.lease(run_id)
            if not await lease.acquire():
                info = await lease.info()
                holder = f" by {info.holder}" if info is not None else ""
                raise WorkflowBusyError(
                    f"run {run_id!r} is being resumed by another process{holder}; if that "
                    f"process died, its lease expires within {self.lease_ttl:g}s"
                )
        async with _keeping(lease):
            return await self._resume(run_id, _emit)

    async def _resume(self, run_id: str, emit: Callable[[Any], None] | None) -> WorkflowResult:
        view = await self._load(self, run_id)
        assert view is not None
        if view.ended == "cancelled":
            raise WorkflowCancelled(f"run {run_id!r} was cancelled; fork it to run it again")
        if view.ended == "done":
            return result_of(view)
        if self.journal.durable:
            await self._settle(view)
        if view.ended == "failed":  # try the failed superstep again
            rec = view.retried()
            if self.journal.durable:
                view.seq = await self.journal.append(run_id, rec)
            view.apply(rec)
        return await execute(self, self, view, emit)

    async def _settle(self, view: RunView) -> None:
        """Bring the run's approvals in line with their keys (a crash may have come
        between the two writes) and apply the deadlines that passed."""
        for rec in view.pending():
            got = await self.journal.get_approval(rec.id)
            if got is None:
                await self.journal.put_approval(rec, 0)
                got = (rec, 1)
            current, _ = got
            if current.status != "pending" and current.decision is not None:
                drec = self._decided(current, current.decision)
                await self.journal.append(view.run_id, drec)
                view.apply(self.definitions()[current.workflow].load_record(drec))
            elif current.deadline is not None and current.deadline <= time.time():
                await self._expire_one(current.id, resume=False)
                records = await self.journal.read(view.run_id)
                fresh = RunView.replay(view.graph, records, typed=False)
                for slot in RunView.__slots__:
                    setattr(view, slot, getattr(fresh, slot))

    async def recover(self) -> list[WorkflowResult]:
        """Resume every unfinished run of this workflow in the store (after a restart)
        and arm the deadlines of its pending approvals; returns what the resumed runs did.
        Batch runs are left to their workers."""
        out = []
        for run_id in await self.journal.runs():
            if "/" in run_id or run_id in self._live:
                continue  # child runs are resumed by their parent
            view = await self._load(self, run_id, missing_ok=True, others_ok=True)
            if view is None:
                continue
            if view.status == "running":
                if await self.queue_of(run_id) is not None:
                    continue  # a batch run: its queue and workers have it
                try:
                    out.append(await self.resume(run_id))
                except WorkflowBusyError:
                    continue  # another process is on it
            elif view.status == "waiting":
                for rec in view.pending():
                    if rec.deadline is not None:
                        self._arm(rec)
        return out

    # -- batch mode ------------------------------------------------------------------

    def _batch_for(self, queue: Any, store: Any = None, queue_name: str = "openheim") -> Any:
        """The :class:`~openheim.workflow._batch.Batch` of ``queue`` (opened once, kept)."""
        from openheim.workflow._batch import Batch

        if not isinstance(queue, str):
            return Batch(queue, store, queue_name=queue_name)
        skey = store if isinstance(store, str) or store is None else f"{store.url}#{id(store)}"
        key = (queue, str(skey), queue_name)
        b = self._batches.get(key)
        if b is None:
            b = self._batches[key] = Batch(queue, store, queue_name=queue_name)
        return b

    def _on_batch(
        self,
        queue: str,
        store: Any = None,
        queue_name: str = "openheim",
        namespace: str = "default",
    ) -> Workflow:
        """This workflow with its journal on the store of batch queue ``queue``."""
        from openheim.workflow._journal import StoreJournal

        b = self._batch_for(queue, store, queue_name)
        return self._journaled(StoreJournal(b.scoped(namespace), owned=False))

    def _journaled(self, journal: Journal) -> Workflow:
        """This workflow (the same definition) on ``journal``."""
        other = copy.copy(self)
        other.journal = journal
        other._live = {}
        other._timers = {}
        other._firing = set()
        return other

    async def submit(
        self,
        input: Any = None,
        *,
        queue: Any,
        store: Any = None,
        run_id: str | None = None,
        budget: Budget | None = None,
        namespace: str = "default",
        queue_name: str = "openheim",
    ) -> Any:
        """Run the workflow in batch mode: record the run and put its first tasks on
        ``queue`` (``"redis://host:6379/0"`` or ``"nats://host:4222"``), where
        ``openheim worker`` processes on any host run them. Returns a
        :class:`~openheim.workflow.RunHandle` (``status``, ``result``, ``cancel``).

        The run lives in ``store`` (by default the queue's own engine: Redis, or
        JetStream's key-value store); workers must use the same one.
        """
        from openheim.workflow._batch import submit

        b = self._batch_for(queue, store, queue_name)
        return await submit(self, b, input, run_id=run_id, budget=budget, namespace=namespace)

    async def submit_many(
        self,
        inputs: Any,
        *,
        queue: Any,
        store: Any = None,
        budget: Budget | None = None,
        namespace: str = "default",
        queue_name: str = "openheim",
        progress: bool = True,
        wait: bool = True,
        timeout: float | None = None,
        stream: Any = None,
    ) -> list[Any]:
        """Submit one run per input; with ``wait``, show a progress bar (done, failed,
        rate, ETA; plain lines when not on a terminal) until every run has ended or
        waits, then a summary table. Returns the runs' handles."""
        from openheim.workflow._batch import submit_many

        b = self._batch_for(queue, store, queue_name)
        return await submit_many(
            self,
            b,
            inputs,
            namespace=namespace,
            budget=budget,
            progress=progress,
            wait=wait,
            timeout=timeout,
            stream=stream,
        )

    async def queue_of(self, run_id: str) -> str | None:
        """The queue URL batch run ``run_id`` (in this workflow's store) was submitted
        to; None for a real-time run."""
        from openheim.workflow._batch import batch_meta

        meta = await batch_meta(self, run_id)
        return meta.queue if meta is not None else None

    def handle(
        self,
        run_id: str,
        *,
        queue: Any,
        store: Any = None,
        namespace: str = "default",
        queue_name: str = "openheim",
    ) -> Any:
        """The :class:`~openheim.workflow.RunHandle` of batch run ``run_id`` (from any
        process that can reach its queue and store)."""
        from openheim.workflow._batch import RunHandle

        return RunHandle(self, self._batch_for(queue, store, queue_name), run_id, namespace)

    # -- approvals ---------------------------------------------------------------------

    def _decided(self, rec: ApprovalRecord, d: Decision) -> Decided:
        graph = self.definitions().get(rec.workflow)
        if graph is None:
            raise WorkflowError(f"approval {rec.id!r} belongs to unknown workflow {rec.workflow!r}")
        if rec.kind == "budget":
            return Decided(
                task=rec.task, approval_id=rec.id, decision=d, budget=_raised(rec, d, self.budget)
            )
        node = graph.nodes[rec.node]
        updates: dict[str, Any] = {}
        if node.output:
            where = f"approval {rec.node!r}"
            try:
                updates = graph.spec.check({node.output: d}, where)
            except WorkflowStateError:  # a field typed as a dict (or a model) takes plain data
                updates = graph.spec.check({node.output: msgspec.to_builtins(d)}, where)
        routes = None
        targets = node.targets or {}
        if d.escalated and node.escalate_to is not None:
            routes = [node.escalate_to]
        elif d.approved and "approve" in targets:
            routes = [targets["approve"]]
        elif not d.approved and "reject" in targets:
            routes = [targets["reject"]]
        return Decided(
            task=rec.task,
            approval_id=rec.id,
            decision=d,
            updates=graph.spec.dump_updates(updates),
            routes=routes,
        )

    async def approve(
        self,
        approval_id: str,
        decision: bool = True,
        *,
        by: str | None = None,
        reason: str | None = None,
        edits: Mapping[str, Any] | None = None,
        resume: bool = True,
        queue: str | None = None,
        store: Any = None,
        namespace: str = "default",
        queue_name: str = "openheim",
        _escalated: bool = False,
    ) -> WorkflowResult | None:
        """Decide approval ``approval_id`` (True approves, False rejects) and, with
        ``resume``, continue its run here until it ends or waits again (returned).

        ``edits`` (field -> value) are applied to the state when approved; for a
        budget approval they are the new limits. The approval node and the nodes
        before it are not run again.

        A batch run (see :meth:`submit`) is not continued here: its next tasks go
        back on its queue, for the workers. ``queue`` (with ``store``,
        ``namespace`` and ``queue_name`` as given to ``submit``) says where a
        batch run lives when this workflow's own store is not that one.
        """
        if queue is not None:
            return await self._on_batch(queue, store, queue_name, namespace).approve(
                approval_id,
                decision,
                by=by,
                reason=reason,
                edits=edits,
                resume=resume,
                _escalated=_escalated,
            )
        got = await self.journal.get_approval(approval_id)
        if got is None:
            raise RunNotFoundError(
                f"no approval {approval_id!r}; list the pending ones with wf.approvals()"
            )
        rec, version = got
        if rec.status == "cancelled":
            raise WorkflowApprovalError(
                f"approval {approval_id!r} can no longer be decided: its run {rec.root!r} "
                "was cancelled (fork the run to go on from before it)"
            )
        if rec.status != "pending":
            by_whom = f" by {rec.decision.by}" if rec.decision and rec.decision.by else ""
            raise WorkflowApprovalError(
                f"approval {approval_id!r} was already {rec.status}{by_whom}"
            )
        if edits and rec.kind == "node":
            graph = self.definitions().get(rec.workflow, self)
            graph.spec.check(dict(edits), f"the edits of approval {approval_id!r}")
        d = Decision(
            approved=bool(decision),
            by=by,
            reason=reason,
            edits=dict(edits) if edits else None,
            escalated=_escalated,
            at=time.time(),
        )
        drec = self._decided(rec, d)
        status = "escalated" if _escalated else ("approved" if d.approved else "rejected")
        await self.journal.put_approval(
            msgspec.structs.replace(rec, status=status, decision=d), version
        )
        timer = self._timers.pop(approval_id, None)
        if timer is not None:
            timer.cancel()
        graph = self.definitions()[rec.workflow]
        typed = graph.load_record(msgspec.structs.replace(drec)) if self.journal.durable else drec
        if self.journal.durable:
            await self.journal.append(rec.run_id, drec)
        live = self._live.get(rec.run_id)
        if live is not None:
            live.view.apply(typed)  # a driver of this run is still busy here: it carries on
            return None
        if not self.journal.durable:
            view = self.journal.views.get(rec.run_id)  # type: ignore[attr-defined]
            if view is not None:
                view.apply(typed)
        if rec.run_id != rec.root:
            # A child run: if its parent is still being driven here, let it try the
            # sub-workflow node again (the parent's loop picks it up).
            parent_id, _, task = rec.run_id.rpartition("/")
            parent = self._live.get(parent_id)
            if parent is not None:
                parent.view.blocked.pop(task.partition(":")[2], None)
        if self.journal.durable:
            from openheim.workflow._batch import requeue

            if await requeue(self, rec.run_id):
                return None
        if not resume or rec.root in self._live:
            return None
        return await self.resume(rec.root)

    async def reject(
        self, approval_id: str, reason: str | None = None, *, by: str | None = None
    ) -> WorkflowResult | None:
        """``approve(approval_id, False, reason=..., by=...)``."""
        return await self.approve(approval_id, False, by=by, reason=reason)

    async def approvals(self, *, pending: bool = True) -> list[ApprovalRecord]:
        """The approval requests of this workflow's store (only pending ones by default)."""
        names = set(self.definitions())
        return sorted(
            (
                a
                for a in await self.journal.approvals()
                if a.workflow in names and (a.status == "pending" or not pending)
            ),
            key=lambda a: (a.requested_at, a.id),
        )

    async def expire(
        self,
        now: float | None = None,
        *,
        resume: bool = True,
        only: Collection[str] | None = None,
    ) -> list[str]:
        """Apply every passed deadline (reject, or escalate); returns the approval ids.
        ``only``: just these approvals; without ``resume`` their runs are not continued
        here (a server continues them under their leases)."""
        now = time.time() if now is None else now
        out = []
        for a in await self.approvals():
            if a.deadline is not None and a.deadline <= now and (only is None or a.id in only):
                await self._expire_one(a.id, resume=resume)
                out.append(a.id)
        return out

    async def _expire_one(self, approval_id: str, resume: bool = True) -> None:
        got = await self.journal.get_approval(approval_id)
        if got is None or got[0].status != "pending":
            return
        rec = got[0]
        with contextlib.suppress(WorkflowApprovalError):
            await self.approve(
                approval_id,
                False,
                by="deadline",
                reason="the approval's deadline passed",
                _escalated=rec.on_deadline == "escalate",
                resume=resume,
            )

    def _arm(self, rec: ApprovalRecord) -> None:
        """Decide ``rec`` at its deadline if this process still runs then (a timer, no task)."""
        assert rec.deadline is not None
        if rec.id in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(rec.id, None)
            task = loop.create_task(self._expire_one(rec.id))
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)

        self._timers[rec.id] = loop.call_later(max(0.0, rec.deadline - time.time()), fire)

    # -- control -----------------------------------------------------------------------

    async def cancel(self, run_id: str) -> None:
        """Cancel run ``run_id``: it stops (here, if it runs here) and cannot be resumed."""
        view = await self._load(self, run_id)
        assert view is not None
        if view.ended in ("done", "cancelled"):
            return
        rec = Ended(status="cancelled", active=view.usage.seconds, at=time.time())
        if self.journal.durable:
            await self.journal.append(run_id, rec)
        else:
            self.journal.views.pop(run_id, None)  # type: ignore[attr-defined]
        pending = view.pending()
        if self.journal.durable:
            from openheim.workflow._batch import status_of

            # (a child's approval is in the child's log only)
            pending = (await status_of(view, self._load)).pending
        await cancel_approvals(self.journal, pending)
        live = self._live.get(run_id)
        if live is not None:
            live.view.apply(rec)
            live.cancelled = True
            if live.task is not None and not live.task.done():
                live.task.cancel()

    async def status(self, run_id: str) -> WorkflowResult:
        """Where run ``run_id`` stands (its state, status and pending approvals)."""
        live = self._live.get(run_id)
        if live is not None:
            return result_of(live.view)
        view = await self._load(self, run_id)
        assert view is not None
        if not self.journal.durable:
            return result_of(view)
        from openheim.workflow._batch import status_of

        # A run parked on a sub-workflow node whose child waits for an approval: only
        # the child's log says so (batch run or real-time).
        return await status_of(view, self._load)

    async def history(self, run_id: str) -> list[Checkpoint]:
        """The run's checkpoints, oldest first: what each node changed."""
        records = await self._records(run_id)
        return [_checkpoint(seq, rec) for seq, rec in records]

    async def lineage(self, run_id: str) -> Lineage | None:
        """The run and checkpoint ``run_id`` was forked from (None if not a fork)."""
        records = await self._records(run_id)
        start = records[0][1]
        assert isinstance(start, Started)
        return start.fork_of

    async def _records(self, run_id: str) -> list[tuple[int, Record]]:
        if not self.journal.durable:
            raise WorkflowError(
                f"workflow {self.name!r} has no store, so its runs have no history; "
                "give it one: Workflow(..., store='sqlite:///state.db')"
            )
        records = await self.journal.read(run_id)
        if not records:
            raise RunNotFoundError(f"no run {run_id!r} in the store of workflow {self.name!r}")
        return records

    async def fork(
        self,
        run_id: str,
        checkpoint_id: int | None = None,
        state_patch: Mapping[str, Any] | None = None,
    ) -> str:
        """A new run that starts where ``run_id`` stood at ``checkpoint_id`` (the latest
        if None), with ``state_patch`` applied; the original run is left as it is.
        Returns the new run id; ``resume(new_id)`` runs it. Usage and budget carry over.
        The fork of a batch run is a batch run on the same queue: ``resume(new_id)``
        puts its tasks there."""
        records = await self._records(run_id)
        if checkpoint_id is not None:
            if not any(seq == checkpoint_id for seq, _ in records):
                raise RunNotFoundError(
                    f"run {run_id!r} has no checkpoint {checkpoint_id}; "
                    "history(run_id) lists its checkpoints"
                )
            records = [(s, r) for s, r in records if s <= checkpoint_id]
        view = RunView.replay(self, records, typed=False)
        state = self.spec.replace(view.state, state_patch) if state_patch else view.state
        new_id = new_run_id()
        usage = Usage(
            steps=view.usage.steps - len(view.done),
            tokens=view.usage.tokens,
            seconds=view.usage.seconds,
        )
        await self.journal.append(
            new_id,
            Started(
                run_id=new_id,
                workflow=self.name,
                state=self.spec.dump(state),
                frontier=view.frontier,
                step=view.step,
                usage=usage,
                budget=view.budget,
                joins={k: sorted(v) for k, v in view.joins.items()},
                fork_of=Lineage(run_id=run_id, checkpoint=records[-1][0]),
                at=time.time(),
            ),
        )
        for node, (updates, routes, edits) in view.done.items():
            merged = {**updates, **(edits or {})}
            await self.journal.append(
                new_id,
                StepDone(
                    task=view.task_id(node),
                    updates=self.spec.dump_updates(merged),
                    routes=routes,
                    at=time.time(),
                ),
            )
        for node, items in view.items.items():
            for index, value in items.items():
                await self.journal.append(
                    new_id, ItemDone(task=view.task_id(node), index=index, value=value)
                )
        if self.journal.durable:
            from openheim.workflow._batch import fork_meta

            await fork_meta(self, run_id, new_id)
        return new_id

    async def delete(self, run_id: str) -> None:
        """Drop a finished run (done, failed or cancelled): its checkpoints and history,
        its sub-workflow runs, the approvals they recorded and, for a batch run, its
        batch record. A run still running or waiting is refused (cancel it first)."""
        view = await self._load(self, run_id)
        assert view is not None
        status = view.ended
        if status is None:  # running, or waiting (here or in a child run)
            from openheim.workflow._batch import status_of

            status = (await status_of(view, self._load)).status
            raise WorkflowError(
                f"run {run_id!r} is {status}: cancel it first (wf.cancel, or `openheim "
                "workflow cancel`), then delete it"
            )
        await self._delete(self, run_id, view.step)

    async def _delete(self, graph: Graph, run_id: str, last_step: int) -> None:
        """Drop run ``run_id`` (of ``graph``, which reached superstep ``last_step``): its
        sub-workflow runs first (``<run_id>/<step>:<node>`` for each superstep it reached
        and each of its sub-workflow nodes), then its batch record, then its log."""
        journal = self.journal
        if journal.durable:
            for node in graph.nodes.values():
                if node.kind != "workflow":
                    continue
                for step in range(last_step + 1):
                    child_id = f"{run_id}/{step}:{node.name}"
                    child = await journal.read(child_id)
                    if child:
                        cview = RunView.replay(node.sub, child, typed=journal.typed)
                        await self._delete(node.sub, child_id, cview.step)
            from openheim.workflow._batch import delete_meta

            await delete_meta(self, run_id)  # (before the log: a batch record is no run)
        await journal.delete_run(run_id)

    async def prune(self, older_than: float, *, dry_run: bool = False) -> list[str]:
        """Delete the finished runs of this workflow (done, failed or cancelled) whose
        last record is more than ``older_than`` seconds old, as :meth:`delete` does;
        returns their ids (``dry_run``: only returns them). Runs in flight and runs of
        other workflows in the store are left alone."""
        if older_than < 0:
            raise ConfigError(f"older_than is seconds (0 or more), got {older_than!r}")
        cutoff = time.time() - older_than
        out = []
        for run_id in await self.journal.runs():
            if "/" in run_id:
                continue  # a sub-workflow run goes with its parent
            records = await self.journal.read(run_id)
            start = records[0][1] if records else None
            if not isinstance(start, Started) or start.workflow != self.name:
                continue
            if max(_stamp(rec) for _, rec in records) > cutoff:
                continue
            view = RunView.replay(self, records, typed=self.journal.typed)
            if view.ended is None:
                continue  # running or waiting
            out.append(run_id)
            if not dry_run:
                await self._delete(self, run_id, view.step)
        return out

    async def aclose(self) -> None:
        """Cancel pending deadline timers and close the store if the workflow opened it."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        batches = list(self._batches.values())
        self._batches.clear()
        for b in batches:
            await b.aclose()
        await self.journal.aclose()


@contextlib.asynccontextmanager
async def _keeping(lease: Lease) -> AsyncIterator[None]:
    """Keep ``lease`` (renewed) around a run; losing it cancels the run's task."""
    task = asyncio.current_task()
    async with lease.kept(on_lost=task.cancel if task is not None else None):
        yield


def _raised(rec: ApprovalRecord, d: Decision, default: Budget | None) -> Budget | None:
    payload = rec.payload if isinstance(rec.payload, dict) else {}
    current = msgspec.convert(payload.get("budget") or {}, Budget)
    if not d.approved:
        return current
    if d.edits:
        return msgspec.structs.replace(current, **d.edits)
    base = default or current
    usage = msgspec.convert(payload.get("usage") or {}, Usage)
    tokens, steps, seconds = current.tokens, current.steps, current.seconds
    if tokens is not None and usage.tokens >= tokens:
        tokens += base.tokens or tokens
    if steps is not None and usage.steps >= steps:
        steps += base.steps or steps
    if seconds is not None and usage.seconds >= seconds:
        seconds += base.seconds or seconds
    return msgspec.structs.replace(current, tokens=tokens, steps=steps, seconds=seconds)


def _stamp(rec: Record) -> float:
    """When ``rec`` was written, as far as it says (0.0: it does not)."""
    if isinstance(rec, Decided):
        return rec.decision.at
    if isinstance(rec, Waiting):
        return rec.approval.requested_at
    return getattr(rec, "at", 0.0)


def _checkpoint(seq: int, rec: Record) -> Checkpoint:
    if isinstance(rec, Started):
        detail = (
            f"forked from {rec.fork_of.run_id}@{rec.fork_of.checkpoint}" if rec.fork_of else None
        )
        return Checkpoint(id=seq, kind="start", changed=rec.state, detail=detail, at=rec.at)
    if isinstance(rec, StepDone):
        node = rec.task.partition(":")[2]
        return Checkpoint(
            id=seq,
            kind="step",
            node=node,
            task=rec.task,
            changed=rec.updates,
            detail=f"-> {', '.join(rec.routes)}" if rec.routes else None,
            at=rec.at,
        )
    if isinstance(rec, ItemDone):
        return Checkpoint(
            id=seq,
            kind="item",
            node=rec.task.partition(":")[2],
            task=rec.task,
            detail=f"item {rec.index}",
        )
    if isinstance(rec, Waiting):
        return Checkpoint(
            id=seq,
            kind="approval",
            node=rec.approval.node or None,
            task=rec.task,
            detail=f"waiting for approval {rec.approval.id}",
            at=rec.approval.requested_at,
        )
    if isinstance(rec, Decided):
        verdict = "approved" if rec.decision.approved else "rejected"
        who = f" by {rec.decision.by}" if rec.decision.by else ""
        return Checkpoint(
            id=seq,
            kind="decision",
            node=rec.task.partition(":")[2] or None,
            task=rec.task,
            changed=rec.updates,
            detail=f"{rec.approval_id} {verdict}{who}",
            at=rec.decision.at,
        )
    if isinstance(rec, Retried):
        return Checkpoint(
            id=seq, kind="retry", detail=f"failed run resumed (retry {rec.n})", at=rec.at
        )
    assert isinstance(rec, Ended)
    return Checkpoint(
        id=seq, kind="end", detail=rec.status + (f": {rec.error}" if rec.error else ""), at=rec.at
    )
