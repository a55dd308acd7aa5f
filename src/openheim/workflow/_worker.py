"""Batch mode, the working side: :class:`Worker` takes tasks from a queue and runs them.

For each delivery a worker:

1. *claims* the task: gets the delivery a fencing token (or learns that the
   task already has a committed result), and in the same round trip brings
   the worker's cached :class:`RunView` of the run up to date (the records
   after the last one it folded);
2. runs the node with the real-time executor's own code (``_runner.call_node``,
   ``run_item``, ``approval_record``) against the state of the superstep;
3. *commits*: appends the result record to the run's log only while its token
   is still the task's newest. A worker whose claim was taken over (it was too
   slow, the queue gave the task to another worker) is refused: a late worker
   never produces a second result (``stats.refused`` counts these);
4. *settles*: puts the run's next ready tasks on the queue (de-duplicated by
   the queue; a superstep's last commit is the one that sees them all), and
   acks the delivery.

How the token is kept depends on the backend (``_backends``):

- *generic* (any queue and store): the token is a compare-and-set increment
  of the fencing key ``wfclaim/<run>/<task>``; the commit writes the record
  into that key with a compare-and-set against the token, then appends it to
  the log. A crash between the two is repaired by the next delivery of the
  task (the committed record is kept in the key and appended if the log lacks
  it).
- *Redis* (queue and store on one server, ``_redis_fused``): the same keys,
  with the claims, commits and settles of many deliveries in one Lua script or
  pipeline per group, and no gap between a commit and its record in the log.
  A chain's next task, put once by its predecessor's commit, goes on the
  worker's own stream (the worker takes it first, others only what it leaves)
  and writes no fencing key on its first delivery (its commit expects none).
- *NATS JetStream* (queue and KV store, ``_nats_fused``): the run's log is the
  fence. A claim that must fence other deliveries writes a mark into the log,
  a first delivery of a task put once writes nothing, and a commit is one
  append that expects the log's last message; the claims, commits and settles
  of a group are in flight together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from openheim import telemetry
from openheim.errors import (
    ConfigError,
    VersionConflictError,
    WorkflowStateError,
    WorkflowStepError,
)
from openheim.stores import is_transient
from openheim.workflow._backends import (
    Records,
    _Batcher,
    _Claim,
    _Commit,
    _Finish,
    _fused,
)
from openheim.workflow._batch import (
    CLAIM,
    CLAIM_TTL,
    META,
    Batch,
    BatchMeta,
    apply_deadlines,
    decode_meta,
    encode_end,
    encode_meta,
    note_deadline,
)
from openheim.workflow._nodes import END
from openheim.workflow._records import (
    Ended,
    ItemDone,
    Record,
    Started,
    StepDone,
    Waiting,
    decode_record,
    encode_record,
    step_done,
)
from openheim.workflow._runner import (
    Ctx,
    approval_record,
    budget_record,
    call_node,
    map_join,
    run_item,
    step_limit,
)
from openheim.workflow._runner import _routes as routes_of
from openheim.workflow._view import RunView
from openheim.workflow.queues import Delivery, Task, TaskQueue

if TYPE_CHECKING:
    from openheim.stores._base import Store
    from openheim.workflow._graph import Graph
    from openheim.workflow._nodes import Node
    from openheim.workflow._workflow import Workflow

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("openheim.worker")
_TAKE_GRACE = 2.0  # seconds a take may go on after stop() (a normal one takes < 0.3 s)
_LEAVE_DEADLINE = 10.0  # seconds a stopping worker tries to give its own tasks back


class WorkerStats(msgspec.Struct, kw_only=True):
    """What one worker did (``openheim worker`` prints it)."""

    taken: int = 0  # deliveries taken
    committed: int = 0  # results this worker committed
    duplicates: int = 0  # deliveries of tasks that already had a result (acked, not run)
    refused: int = 0  # commits refused: another worker had taken the task over
    lost_claims: int = 0  # claims lost to a concurrent delivery of the same task
    failed_runs: int = 0  # runs this worker recorded as failed
    dead_lettered: int = 0
    released: int = 0  # deliveries given back when draining
    errors: int = 0  # deliveries left to be redelivered after an unexpected error


# -- the worker ----------------------------------------------------------------------------


class _BatchCtx(Ctx):
    """What the shared node code needs of a run being worked on here."""

    def __init__(self, graph: Graph, view: RunView, root: str) -> None:
        self.owner = None  # type: ignore[assignment]
        self.graph = graph
        self.view = view
        self.emit = None
        self.root = root
        self.durable = False
        self.base = view.usage.seconds
        self.t0 = time.perf_counter()
        self.cancelled = False
        self.task = None


def _parse(task: str) -> tuple[int, str, int | None] | None:
    step, sep, rest = task.partition(":")
    if not sep or not step.isdigit():
        return None
    node, sep, index = rest.partition("#")
    if sep and not index.isdigit():
        return None
    return int(step), node, int(index) if sep else None


def tune_gc(gen0: int = 50_000) -> None:
    """Set this process's garbage collector for a process that runs workers (``openheim
    worker`` does; not called for a ``Worker`` inside another program). What exists now
    (modules, workflow definitions) leaves the collector's scans (``gc.freeze``), and
    the youngest generation is collected every ``gen0`` allocations instead of 700: a
    worker allocates short-lived objects by the million (tasks, records, futures), and
    on this project's bench it spent a fifth of its CPU in collections."""
    import gc

    gc.freeze()
    gc.set_threshold(gen0, 20, 100)


class Worker:
    """Runs the tasks of ``workflows`` (and their sub-workflows) from ``queue``.

    ``queue`` is a URL (``redis://...``, ``nats://...``), a
    :class:`~openheim.workflow.queues.TaskQueue` or a ``Batch``; ``store``
    (default: the queue's engine) is where the runs live. Up to
    ``concurrency`` tasks run at once, taken ``take`` at a time (default:
    ``concurrency``, at most 128: the tasks taken together are claimed and
    committed together, so a smaller take keeps more than one group in flight).
    A worker keeps the views of the runs it worked on (their state, folded from
    their records) for their next tasks, about ``cache_mb`` of them (counted as the
    bytes of their records); a run whose view was dropped is read back from its
    log. A worker takes its own runs' next steps first (they go on its own Redis
    stream or NATS subject), so the views it needs are about its concurrency's
    worth. Every ``deadline_every`` seconds, a worker rejects (or escalates) the
    approvals of the queue's runs whose deadline passed, as a real-time run's timer
    would. ``await worker.run()`` works until
    :meth:`stop` (or ``max_idle`` seconds without work), then drains: tasks
    running finish within ``drain_timeout`` seconds, or are cancelled and
    given back to the queue.
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        queue: Any,
        *,
        store: Any = None,
        queue_name: str = "openheim",
        concurrency: int = 64,
        take: int | None = None,
        consumer: str | None = None,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        heartbeat: float | None = None,
        cache_views: int = 1_000_000,
        cache_mb: float = 128.0,
        deadline_every: float = 5.0,
    ) -> None:
        self.batch = (
            queue
            if isinstance(queue, Batch)
            else Batch(
                queue,
                store,
                queue_name=queue_name,
                visibility_timeout=visibility_timeout,
                max_deliveries=max_deliveries,
            )
        )
        self._own_batch = not isinstance(queue, Batch)
        self.queue: TaskQueue = self.batch.queue
        self.graphs: dict[str, Graph] = {}
        self.workflows = list(workflows)
        for wf in self.workflows:
            if not wf._validated:
                wf.validate()
            for name, g in wf.definitions().items():
                if not g._validated:
                    g.validate()
                self.graphs.setdefault(name, g)
        self.concurrency = max(1, concurrency)
        if take is not None and (not isinstance(take, int) or take < 1):
            raise ConfigError(f"take must be an int >= 1 (tasks taken per pull), got {take!r}")
        self.take_count = take or min(self.concurrency, 128)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.heartbeat = heartbeat or self.queue.visibility_timeout / 3
        if not deadline_every > 0:
            raise ConfigError(
                f"deadline_every must be a positive number of seconds, got {deadline_every!r}"
            )
        self.deadline_every = deadline_every
        self.stats = WorkerStats()
        self.backend = _fused(self.batch)
        self.backend.consumer = self.consumer
        self._claim = _Batcher(self._claims)
        self._commit = _Batcher(self._commits)
        self._finish = _Batcher(self._finishes)
        if not cache_mb > 0 or cache_views < 1:
            raise ConfigError(
                f"cache_mb must be positive and cache_views at least 1, got {cache_mb!r} and "
                f"{cache_views!r}"
            )
        self._views = _Views(cache_views, int(cache_mb * 2**20))
        self._items: dict[tuple[str, str, str], int] = {}  # map item counts
        self._inflight: dict[str, Delivery] = {}
        self._running: dict[asyncio.Task[None], Delivery] = {}
        self._freed: asyncio.Future[None] | None = None  # run() waits on it for room
        self._taking: asyncio.Future[list[Delivery]] | None = None  # the take run() awaits
        self._stop = asyncio.Event() if _has_loop() else None
        self._stopping = False
        # Seconds from take to ack of each delivery, when a benchmark asks (None: not kept).
        self.latencies: list[float] | None = None

    def __repr__(self) -> str:
        return f"Worker({self.consumer!r}, queue={self.batch.queue_url!r})"

    # -- grouped backend calls ---------------------------------------------------------

    async def _claims(self, items: list[_Claim]) -> list[tuple[int, bytes | None, Records]]:
        many = getattr(self.backend, "claim_many", None)
        if many is not None:
            result: list[tuple[int, bytes | None, Records]] = await many(items)
            return result
        return list(await asyncio.gather(*(self.backend.claim(c) for c in items)))

    async def _commits(self, items: list[_Commit]) -> list[tuple[bool, bool, Records]]:
        many = getattr(self.backend, "commit_many", None)
        if many is not None:
            result: list[tuple[bool, bool, Records]] = await many(items)
            return result
        return list(await asyncio.gather(*(self.backend.commit(c) for c in items)))

    async def _finishes(self, items: list[_Finish]) -> list[None]:
        merged = _Finish(tasks=[], acks=[], ends=[])
        for f in items:
            merged.tasks += f.tasks
            merged.acks += f.acks
            merged.ends += f.ends
        await self.backend.finish(merged)
        return [None] * len(items)

    # -- running -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking tasks and drain (safe from a signal handler). A take still
        waiting ``_TAKE_GRACE`` seconds later (its server out of reach) is given up."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        take = self._taking
        if take is not None:
            with contextlib.suppress(RuntimeError):  # (no loop running: nothing to give up)
                asyncio.get_running_loop().call_later(_TAKE_GRACE, take.cancel)

    async def run(
        self,
        *,
        drain_timeout: float = 30.0,
        max_idle: float | None = None,
        on_stats: Callable[[WorkerStats], None] | None = None,
        stats_every: float = 10.0,
    ) -> WorkerStats:
        """Work until :meth:`stop` (or ``max_idle`` s without a task), then drain."""
        if self._stop is None:
            self._stop = asyncio.Event()
            if self._stopping:
                self._stop.set()
        beat = asyncio.ensure_future(self._background())
        idle_since = time.monotonic()
        down_since: float | None = None  # since when takes fail on the server's absence
        warned = 0.0
        last_stats = time.monotonic()
        try:
            while not self._stopping:
                if on_stats is not None and time.monotonic() - last_stats >= stats_every:
                    last_stats = time.monotonic()
                    on_stats(self.stats)
                room = self.concurrency - len(self._running)
                if room <= 0:
                    # Woken by the first task to finish (one future, not a callback on
                    # every running task each time).
                    self._freed = asyncio.get_running_loop().create_future()
                    await self._freed
                    continue
                take = asyncio.ensure_future(
                    self.queue.take(self.consumer, min(room, self.take_count), timeout=0.25)
                )
                self._taking = take
                try:
                    await asyncio.wait((take,))
                except asyncio.CancelledError:
                    take.cancel()
                    raise
                finally:
                    self._taking = None
                if take.cancelled():
                    break  # stopped while a take hung (its server out of reach): see stop
                try:
                    got = take.result()
                except Exception as exc:
                    if is_transient(exc):
                        now = time.monotonic()
                        if down_since is None or now - warned >= 30.0:
                            down_since = down_since or now
                            warned = now
                            log.warning(
                                "queue unavailable for %.0f s (%s); retrying",
                                now - down_since,
                                exc,
                            )
                        await self._pause(0.5)
                        continue
                    raise
                if down_since is not None:
                    log.warning("queue available again")
                    down_since = None
                if not got:
                    if (
                        max_idle is not None
                        and not self._running
                        and time.monotonic() - idle_since >= max_idle
                    ):
                        break
                    continue
                idle_since = time.monotonic()
                self.stats.taken += len(got)
                for d in got:
                    self._inflight[d.id] = d
                    t = asyncio.ensure_future(self._handle(d))
                    self._running[t] = d
                    t.add_done_callback(self._done)
        finally:
            await self._drain(drain_timeout)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            # A cancelled delivery leaves its claim, commit or settle group in flight:
            # let it finish, so nothing talks to the server after run() returned.
            for b in (self._claim, self._commit, self._finish):
                await b.idle()
            leave = getattr(self.queue, "leave", None)
            if leave is not None and self.stats.taken:
                # This worker's own next tasks go back to the others; with the server out
                # of reach, the others take them over once they find this worker gone.
                try:
                    await asyncio.wait_for(leave(self.consumer), _LEAVE_DEADLINE)
                except Exception as exc:
                    log.warning("could not give back this worker's own tasks (%r)", exc)
        return self.stats

    async def _pause(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _done(self, t: asyncio.Task[None]) -> None:
        d = self._running.pop(t, None)
        if d is not None:
            self._inflight.pop(d.id, None)
        freed = self._freed
        if freed is not None and not freed.done():
            freed.set_result(None)

    async def _drain(self, timeout: float) -> None:
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout)
        left = list(self._running.items())
        for t, _ in left:
            t.cancel()
        for t, d in left:
            with contextlib.suppress(BaseException):
                await t
            try:
                await self.queue.release(d)
                self.stats.released += 1
            except Exception as exc:
                log.warning("could not give task %s back (%s); it is redelivered later", d.id, exc)

    async def _background(self) -> None:
        await asyncio.gather(self._heartbeats(), self._deadlines())

    async def _deadlines(self) -> None:
        """Apply the approval deadlines of this queue's runs that passed (every
        ``deadline_every`` seconds)."""
        while True:
            await asyncio.sleep(self.deadline_every)
            try:
                await apply_deadlines(self.batch, self.workflows)
            except Exception as exc:
                log.warning("applying approval deadlines failed (%s); trying again", exc)

    async def _heartbeats(self) -> None:
        extend_many = getattr(self.queue, "extend_many", None)
        while True:
            await asyncio.sleep(self.heartbeat)
            ds = list(self._inflight.values())
            if not ds:
                continue
            try:
                if extend_many is not None:
                    await extend_many(ds)
                else:
                    await asyncio.gather(*(self.queue.extend(d) for d in ds))
            except Exception as exc:
                log.warning("heartbeat failed (%s)", exc)

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self._own_batch:
            await self.batch.aclose()

    # -- one delivery ------------------------------------------------------------------

    async def _handle(self, d: Delivery) -> None:
        t0 = time.perf_counter()
        try:
            await self._process(d)
            if self.latencies is not None:
                self.latencies.append(time.perf_counter() - t0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.errors += 1
            log.warning(
                "task %s of run %s: %s: %s (it will be redelivered)",
                d.task.task,
                d.task.run_id,
                type(exc).__name__,
                exc,
            )

    def _fold(self, key: tuple[str, str], graph: Graph, records: Records) -> RunView | None:
        view = self._views.get(key)
        cached = view
        grew = 0
        for seq, data in records:
            if view is not None and seq <= view.seq:
                continue
            rec = decode_record(data, f"record {seq} of workflow run {key[1]!r}")
            if view is None:
                if not isinstance(rec, Started):
                    continue  # a cache dropped mid-run: the claim read from 0
                view = RunView.started(graph, rec, typed=False)
            else:
                view.apply(graph.load_record(rec))
            view.seq = seq
            grew += len(data)
        if view is not None:
            self._views.put(key, view, grew, fresh=view is not cached)
        return view

    async def _process(self, d: Delivery) -> None:
        t = d.task
        graph = self.graphs.get(t.workflow)
        parsed = _parse(t.task)
        if graph is None or parsed is None:
            why = (
                f"this worker does not run workflow {t.workflow!r} (start workers with "
                f"--workflows naming it; known: {', '.join(sorted(self.graphs))})"
                if graph is None
                else f"malformed task id {t.task!r}"
            )
            await self.queue.dead_letter(d, why)
            self.stats.dead_lettered += 1
            return
        step, name, index = parsed
        key = (t.namespace, t.run_id)
        cached = self._views.get(key)
        if not _current(cached, step, name, index):
            # The run's last records the task brought (see NatsBackend.carried): enough
            # if the view lacks only those, or if there is no view and they are all
            # of the run's log.
            brought = self.backend.carried(d)
            if brought and (
                brought[0][0] <= cached.seq + 1 <= brought[-1][0]
                if cached is not None
                else brought[0][0] == 1
            ):
                cached = self._fold(key, graph, brought)
        claim = _Claim(
            t.namespace,
            t.run_id,
            t.claim_id(),
            cached.seq if cached is not None else -1,
            self.consumer,
            read=not _current(cached, step, name, index),
            first=self.backend.first(d),
        )
        now = self.backend.claim_at_once(claim)
        token, committed, records = now if now is not None else await self._claim(claim)
        view = self._fold(key, graph, records)
        if view is None:  # the run was deleted
            await self._finish(_Finish(tasks=[], acks=[d], ends=[]))
            return
        if committed is not None:
            self.stats.duplicates += 1
            rec: Record | None = None
            if committed:
                rec = decode_record(committed, f"the committed result of task {t.task!r}")
                reflected = _reflected(view, rec, step, name, index)
                if not reflected and isinstance(rec, Waiting):
                    got = await self.batch.journal(t.namespace).get_approval(rec.approval.id)
                    reflected = got is not None and got[0].status != "pending"
                if not reflected:
                    records = await self.backend.append(t.namespace, t.run_id, committed, view.seq)
                    view = self._fold(key, graph, records) or view
                if isinstance(rec, Waiting):
                    await self.batch.journal(t.namespace).put_approval(rec.approval, 0)
            await self._settle(d, graph, view, step, name, index, rec)
            return
        if token < 0:
            self.stats.lost_claims += 1
            return  # another delivery of this task runs it; ours is redelivered and acked then
        if view.ended is not None or step < view.step:
            await self._settle(d, graph, view, step, name, index, None)
            return
        if step > view.step or name not in view.frontier:
            await self.queue.dead_letter(
                d, f"task {t.task!r} is not in run {t.run_id!r}'s current superstep {view.step}"
            )
            self.stats.dead_lettered += 1
            return
        if name in view.done or name in view.waiting or view.budget_wait is not None:
            await self._settle(d, graph, view, step, name, index, None)
            return
        if index is not None and index in view.items.get(name, {}):
            await self._settle(d, graph, view, step, name, index, None)
            return
        # A span per task, under the submitter's trace (the traceparent the task carried).
        run = self._run(d, graph, view, token, step, name, index)
        await telemetry.batch_step(run, graph, view, name, t.task, t.traceparent)

    async def _run(
        self,
        d: Delivery,
        graph: Graph,
        view: RunView,
        token: int,
        step: int,
        name: str,
        index: int | None,
    ) -> None:
        t = d.task
        root = t.run_id.split("/")[0]
        ctx = _BatchCtx(graph, view, root)
        node = graph.nodes[name]
        rec: Record | None = None
        if index is None and not view.done:
            # The run's limits, checked where the real-time loop checks them: before a
            # superstep's nodes run (here: while none of them has a result).
            if view.step >= graph.max_steps:
                rec = Ended(status="failed", error=step_limit(graph, t.run_id), active=ctx.active())
            elif view.budget is not None:
                over = view.exceeded()
                if over is not None:
                    if view.budget.on_exceed == "pause":
                        await self._budget_pause(d, graph, ctx, over)
                        return
                    rec = Ended(
                        status="failed",
                        error=f"run {t.run_id!r} used up its budget: {over}",
                        active=ctx.active(),
                    )
        state = view.state
        kind = node.kind
        task = f"{step}:{name}"
        if rec is None:
            try:
                if kind == "approval":
                    approval = approval_record(ctx, node, task, state)
                    rec = Waiting(task=task, approval=approval, active=ctx.active())
                elif kind == "workflow":
                    rec = await self._sub(d, graph, ctx, node, task, state)
                    if rec is None:
                        return
                elif kind == "map":
                    rec = await self._map(d, graph, ctx, node, task, state, index)
                    if rec is None:
                        return
                else:
                    updates, routes, tokens, attempt = await call_node(ctx, node, t.task, state)
                    rec = step_done(
                        task,
                        updates,
                        routes=routes,
                        tokens=tokens,
                        active=ctx.active(),
                        attempt=attempt,
                    )
            except (WorkflowStepError, WorkflowStateError) as exc:
                rec = Ended(status="failed", error=str(exc), active=ctx.active(), at=time.time())
        if isinstance(rec, Ended) and rec.at == 0.0:
            rec = msgspec.structs.replace(rec, at=time.time())
        await self._commit_and_settle(d, graph, view, token, t.claim_id(), rec, step, name, index)

    async def _commit_and_settle(
        self,
        d: Delivery,
        graph: Graph,
        view: RunView,
        token: int,
        claim_task: str,
        rec: Record,
        step: int,
        name: str,
        index: int | None,
    ) -> None:
        t = d.task
        stored = rec
        if type(rec) is StepDone and rec.updates and graph.spec.is_pydantic:
            stored = msgspec.structs.replace(rec, updates=graph.spec.dump_updates(rec.updates))
        try:
            data = encode_record(stored)
        except TypeError as exc:
            rec = Ended(
                status="failed",
                error=(
                    f"run {t.run_id!r}: a checkpoint cannot be stored ({exc}); state values, "
                    "map results and approval payloads must be plain data"
                ),
                at=time.time(),
            )
            data = encode_record(rec)
        settle = None
        if self.backend.fast_settle and type(rec) is StepDone:
            settle = self._chain_settle(d, graph, view, rec, step, name, index)
        if isinstance(rec, Waiting):
            if rec.approval.deadline is not None:
                await note_deadline(self.batch, t.namespace, rec.approval)
            # Before the record: whoever sees the run waiting can decide the approval at once.
            await self.batch.journal(t.namespace).put_approval(rec.approval, 0)
        after = view.seq
        ok, settled, records = await self._commit(
            _Commit(t.namespace, t.run_id, claim_task, token, data, after, settle)
        )
        if not ok:
            self.stats.refused += 1
            log.info("task %s of run %s was taken over; result dropped", t.task, t.run_id)
            return
        self.stats.committed += 1
        if isinstance(rec, Ended) and rec.status == "failed":
            self.stats.failed_runs += 1
        key = (t.namespace, t.run_id)
        if settled:
            if view.seq == after and len(records) == 1:
                view.apply(rec)  # ours, the one record after `after`
                view.seq = records[0][0]
                if view.ended is not None:
                    self._views.pop(key)
                else:
                    self._views.grew(key, len(data))
            else:
                self._fold(key, graph, records)
            return
        view = self._fold(key, graph, records) or view
        await self._settle(d, graph, view, step, name, index, rec)

    def _chain_settle(
        self,
        d: Delivery,
        graph: Graph,
        view: RunView,
        rec: StepDone,
        step: int,
        name: str,
        index: int | None,
    ) -> _Finish | None:
        """What settling looks like if ``rec`` is the run's next record and ends a
        one-node superstep (a chain): its successors, the ack, the run's end."""
        t = d.task
        if (
            index is not None
            or len(view.frontier) != 1
            or graph.joins
            or view.step != step
            or view.done
            or view.budget_wait is not None
            or "/" in t.run_id
        ):
            return None
        targets = rec.routes if rec.routes is not None else graph.edges.get(name, ())
        nxt = list(dict.fromkeys(x for x in targets if x != END))
        tasks = [
            Task(
                workflow=t.workflow,
                run_id=t.run_id,
                task=f"{step + 1}:{n}",
                namespace=t.namespace,
                traceparent=t.traceparent,
                retry=view.retries,
            )
            for n in nxt
        ]
        return _Finish(tasks=tasks, acks=[d], ends=[] if nxt else [self._end(t, "done")])

    async def _budget_pause(self, d: Delivery, graph: Graph, ctx: Ctx, over: str) -> None:
        t = d.task
        view = ctx.view
        approval = budget_record(ctx, over)
        token, committed, records = await self._claim(
            _Claim(t.namespace, t.run_id, approval.task, view.seq, self.consumer)
        )
        view = self._fold((t.namespace, t.run_id), graph, records) or view
        if committed is None and token > 0 and view.budget_wait is None:
            rec = Waiting(task=approval.task, approval=approval, active=ctx.active())
            await self.batch.journal(t.namespace).put_approval(approval, 0)
            ok, _, records = await self._commit(
                _Commit(t.namespace, t.run_id, approval.task, token, encode_record(rec), view.seq)
            )
            if ok:
                self._fold((t.namespace, t.run_id), graph, records)
                await self._finish(_Finish(tasks=[], acks=[d], ends=[self._end(t, "waiting")]))
                return
        await self._finish(_Finish(tasks=[], acks=[d], ends=[]))

    def _end(self, t: Task, status: str) -> bytes:
        return encode_end(t.run_id, status)

    async def _settle(
        self,
        d: Delivery,
        graph: Graph,
        view: RunView,
        step: int,
        name: str,
        index: int | None,
        rec: Record | None,
    ) -> None:
        """Put what follows from the run's records now on the queue, then ack ``d``."""
        t = d.task
        tasks = self.batch.tasks(view, t.namespace, t.traceparent)
        if index is not None and view.ended is None and step == view.step:
            node = graph.nodes.get(name)
            have = view.items.get(name)
            if (
                node is not None
                and have is not None
                and name not in view.done
                and len(have) >= self._item_count(t, node, view)
            ):
                task = f"{step}:{name}"
                tasks.append(
                    Task(
                        workflow=t.workflow,
                        run_id=t.run_id,
                        task=task,
                        namespace=t.namespace,
                        traceparent=t.traceparent,
                        dedup=f"{t.run_id}/{task}/join{view.retries or ''}",
                        retry=view.retries,
                    )
                )
        ends: list[bytes] = []
        status = view.status
        if rec is not None and status != "running":
            if "/" in t.run_id:
                if view.ended is not None:
                    parent = await self._parent_task(t)
                    if parent is not None:
                        tasks.append(parent)
            else:
                ends.append(self._end(t, status))
            if view.ended is not None:
                self._views.pop((t.namespace, t.run_id))
        await self._finish(_Finish(tasks=tasks, acks=[d], ends=ends))

    def _item_count(self, t: Task, node: Node, view: RunView) -> int:
        key = (t.namespace, t.run_id, f"{view.step}:{node.name}")
        n = self._items.get(key)
        if n is None:
            n = len(list(node.over(view.state)))  # type: ignore[misc]
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = n
        return n

    async def _parent_task(self, t: Task) -> Task | None:
        parent_id, _, ptask = t.run_id.rpartition("/")
        got = await self.batch.scoped(t.namespace).get(META + t.run_id)
        if got is None:
            return None
        meta = decode_meta(got[0])
        if meta.parent_workflow is None:
            return None
        return Task(
            workflow=meta.parent_workflow,
            run_id=parent_id,
            task=ptask,
            namespace=t.namespace,
            traceparent=t.traceparent,
            dedup=f"{parent_id}/{ptask}/child",
        )

    # -- map and sub-workflow nodes ----------------------------------------------------

    async def _map(
        self,
        d: Delivery,
        graph: Graph,
        ctx: Ctx,
        node: Node,
        task: str,
        state: Any,
        index: int | None,
    ) -> Record | None:
        t = d.task
        view = ctx.view
        if index is not None:
            items = list(node.over(state))  # type: ignore[misc]
            try:
                v, tokens = await run_item(ctx, node, items[index], state, t.task)
            except (WorkflowStateError, WorkflowStepError):
                raise
            except Exception as exc:
                raise WorkflowStepError(
                    f"node {node.name!r} of run {t.run_id!r} failed after 1 attempt(s): "
                    f"{type(exc).__name__}: {exc}",
                    run_id=t.run_id,
                    node=node.name,
                ) from exc
            return ItemDone(task=task, index=index, value=v, tokens=tokens, active=ctx.active())
        items = list(node.over(state))  # type: ignore[misc]
        have = view.items.get(node.name, {})
        todo = [i for i in range(len(items)) if i not in have]
        if todo:
            self._items[(t.namespace, t.run_id, task)] = len(items)
            await self._finish(
                _Finish(
                    tasks=[
                        Task(
                            workflow=t.workflow,
                            run_id=t.run_id,
                            task=f"{task}#{i}",
                            namespace=t.namespace,
                            traceparent=t.traceparent,
                            retry=view.retries,
                        )
                        for i in todo
                    ],
                    acks=[d],
                    ends=[],
                )
            )
            return None
        updates = map_join(ctx, node, [have[i] for i in range(len(items))])
        return step_done(task, updates, active=ctx.active())

    async def _sub(
        self, d: Delivery, graph: Graph, ctx: Ctx, node: Node, task: str, state: Any
    ) -> Record | None:
        t = d.task
        child: Graph = node.sub
        child_id = f"{t.run_id}/{task}"
        journal = self.batch.journal(t.namespace)
        records = await journal.read(child_id)
        if not records:
            store: Store = self.batch.scoped(t.namespace)
            try:
                await store.put(f"{CLAIM}{child_id}/start", b"C", expect_version=0, ttl=CLAIM_TTL)
            except VersionConflictError:
                await self._finish(_Finish(tasks=[], acks=[d], ends=[]))
                return None
            meta = BatchMeta(
                workflow=child.name,
                queue=self.batch.queue_url,
                queue_name=self.queue.name,
                namespace=t.namespace,
                traceparent=t.traceparent,
                parent_workflow=graph.name,
                at=time.time(),
            )
            await store.put(META + child_id, encode_meta(meta))
            assert child.start is not None
            cview = RunView(
                child,
                child_id,
                child.spec.new(node.input(state) if node.input else None),
                [child.start],
            )
            await journal.append(
                child_id,
                Started(
                    run_id=child_id,
                    workflow=child.name,
                    state=child.spec.dump(cview.state),
                    frontier=cview.frontier,
                    at=time.time(),
                ),
            )
            await self._finish(
                _Finish(
                    tasks=self.batch.tasks(cview, t.namespace, t.traceparent), acks=[d], ends=[]
                )
            )
            return None
        cview = RunView.replay(child, records, typed=False)
        if cview.ended is None:
            await self._finish(_Finish(tasks=[], acks=[d], ends=[]))
            return None  # the child puts this task again when it ends
        if cview.ended != "done":
            raise WorkflowStepError(
                f"sub-workflow node {node.name!r}: child run {child_id!r} ended {cview.ended}: "
                f"{cview.error}",
                run_id=t.run_id,
                node=node.name,
            )
        spec = graph.spec
        updates = spec.check(node.fn(cview.state), f"sub-workflow {node.name!r}") if node.fn else {}
        routes = None
        if node.router is not None:
            routes = routes_of(
                graph, node, node.router(spec.apply(state, updates) if updates else state)
            )
        return step_done(
            task, updates, routes=routes, tokens=cview.usage.tokens, active=ctx.active()
        )


class _Views:
    """The runs' views a worker keeps, the least recently used dropped first: at most
    ``count`` of them, of about ``limit`` bytes together. A view's size is taken as the
    bytes of the records folded into it (about what plain-data state takes decoded); a
    view dropped is read back from the run's log when its run comes round again."""

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        self.size = 0  # bytes of the views kept, as estimated
        self._views: collections.OrderedDict[tuple[str, str], RunView] = collections.OrderedDict()
        self._sizes: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._views)

    def get(self, key: tuple[str, str]) -> RunView | None:
        return self._views.get(key)

    def put(self, key: tuple[str, str], view: RunView, grew: int, *, fresh: bool) -> None:
        """Keep ``view`` as the newest, ``grew`` bytes larger (``fresh``: built anew)."""
        views = self._views
        if fresh:
            self.size -= self._sizes.get(key, 0)
            self._sizes[key] = 0
        views[key] = view
        views.move_to_end(key)
        self.grew(key, grew)

    def grew(self, key: tuple[str, str], n: int) -> None:
        if key in self._sizes:
            self._sizes[key] += n
            self.size += n
        while len(self._views) > 1 and (len(self._views) > self.count or self.size > self.limit):
            self.pop(next(iter(self._views)))

    def pop(self, key: tuple[str, str]) -> None:
        if self._views.pop(key, None) is not None:
            self.size -= self._sizes.pop(key, 0)


def _current(view: RunView | None, step: int, name: str, index: int | None) -> bool:
    """Whether a cached view is where task step:name finds it if nothing else happened
    in the run: the one node of its superstep, not run yet. Its claim need not read
    the run's log then (unless the task turns out committed): the commit, appended
    right after the view's last record or not, tells whether anything came between
    (a cancel, say), and the worker reads the log then."""
    return (
        view is not None
        and index is None
        and view.step == step
        and view.ended is None
        and view.budget_wait is None
        and not view.done
        and not view.waiting
        and len(view.frontier) == 1
        and view.frontier[0] == name
    )


def _reflected(view: RunView, rec: Record, step: int, name: str, index: int | None) -> bool:
    """Whether ``rec`` (a committed result of task step:name[#index]) is in the view."""
    if view.ended is not None or step < view.step:
        return True
    if isinstance(rec, Ended):
        return view.ended is not None
    if isinstance(rec, Waiting):
        if rec.approval.kind == "budget":
            return view.budget_wait is not None  # (or decided since: see _process)
        return name in view.waiting or name in view.done
    if isinstance(rec, ItemDone):
        return name in view.done or rec.index in view.items.get(name, {})
    return name in view.done


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
