"""Batch mode, the submitting side: ``wf.submit(input, queue=URL)``, run handles, approvals.

A batch run is recorded exactly like a real-time run (the log ``wf/<run_id>``
of records that :class:`RunView` folds), in a store reachable by every worker:
by default the queue's own engine (a ``redis://`` queue keeps its runs in that
Redis, a ``nats://`` queue in JetStream's key-value store). ``submit`` writes
the run's metadata (``wfmeta/<run_id>``: its queue, so an approval decided in
any process finds where to put the run's next tasks), its start record, and
puts its ready tasks on the queue; ``openheim worker`` processes
(:mod:`openheim.workflow._worker`) do the rest.

Store keys besides the run's log: ``wfclaim/<run_id>/<task>`` (the fencing
key of one task: its version is the fencing token, its value the committed
record once there is one) and the log ``wfend/<queue name>`` (one entry per
run a worker saw end, read by progress bars).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from openheim.errors import (
    BudgetExceededError,
    ConfigError,
    RunNotFoundError,
    VersionConflictError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowStepError,
    WorkflowTimeout,
)
from openheim.stores import is_transient
from openheim.workflow._journal import Journal, StoreJournal, cancel_approvals
from openheim.workflow._records import ApprovalRecord, Budget, Ended, Started
from openheim.workflow._runner import result_of
from openheim.workflow._view import RunView
from openheim.workflow.events import Checkpoint, WorkflowResult
from openheim.workflow.queues import Task, TaskQueue, open_queue

if TYPE_CHECKING:
    from openheim.stores._base import Store
    from openheim.workflow._graph import Graph
    from openheim.workflow._workflow import Workflow

__all__ = ["Batch", "BatchMeta", "RunHandle", "decode_ends", "encode_ends", "new_traceparent"]

log = logging.getLogger("openheim.workflow")

META = "wfmeta/"
CLAIM = "wfclaim/"
ENDS = "wfend/"
DEADLINES = "wfdeadline/"  # + queue name + "/NN": an index shard of approvals' deadlines
CLAIM_TTL = 7 * 24 * 3600.0  # a claim key outlives any redelivery of its task


class BatchMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the store keeps about a batch run besides its records."""

    workflow: str
    queue: str  # the queue URL
    queue_name: str = "openheim"
    namespace: str = "default"
    traceparent: str | None = None
    parent_workflow: str | None = None  # a child run: its parent's workflow
    at: float = 0.0


class RunEnd(msgspec.Struct, array_like=True):
    run_id: str
    status: str
    at: float


_meta_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(BatchMeta)
_end_dec = msgspec.msgpack.Decoder(RunEnd)
_ends_dec = msgspec.msgpack.Decoder(list[RunEnd])


def encode_meta(meta: BatchMeta) -> bytes:
    return _meta_enc.encode(meta)


def decode_meta(data: bytes) -> BatchMeta:
    return _meta_dec.decode(data)


def encode_end(run_id: str, status: str) -> bytes:
    return _meta_enc.encode(RunEnd(run_id, status, time.time()))


def encode_ends(ends: list[bytes]) -> bytes:
    """Several run ends (each from :func:`encode_end`) as one record of the ends log.

    A record holds one run end, or a list of them: a worker settling many
    deliveries at once appends the run ends of all of them as one record
    (appends to the one ends log of a queue are compare-and-set on some
    stores, so one per run would queue up behind each other).
    """
    if len(ends) == 1:
        return ends[0]
    return _meta_enc.encode([msgspec.Raw(e) for e in ends])


def decode_ends(data: bytes) -> list[RunEnd]:
    """The run ends of one record of the ends log (see :func:`encode_ends`)."""
    try:
        return [_end_dec.decode(data)]
    except msgspec.ValidationError:
        return _ends_dec.decode(data)


def new_traceparent() -> str:
    """The W3C ``traceparent`` of the current OpenTelemetry span, or a new trace's."""
    try:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    except ImportError:
        pass
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def default_store_url(queue_url: str) -> str:
    """The store a queue's runs live in by default: the queue's own engine."""
    return queue_url


class Batch:
    """One queue and the store its runs live in (what submit, handles and workers share)."""

    def __init__(
        self,
        queue: str | TaskQueue,
        store: str | Store | None = None,
        *,
        queue_name: str = "openheim",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
    ) -> None:
        from openheim.stores import open_store

        if isinstance(queue, str):
            self.queue: TaskQueue = open_queue(
                queue,
                name=queue_name,
                visibility_timeout=visibility_timeout,
                max_deliveries=max_deliveries,
            )
            self._own_queue = True
        elif isinstance(queue, TaskQueue):
            self.queue = queue
            self._own_queue = False
        else:
            raise ConfigError(
                f"queue is a URL (redis://host:6379/0 or nats://host:4222) or a TaskQueue, "
                f"got {type(queue).__name__}"
            )
        self.queue_url = self.queue.url
        if store is None:
            store = default_store_url(self.queue_url)
        self._own_store = isinstance(store, str)
        shared = self._shared_redis(store)
        if shared is not None:
            self.store: Store = shared  # one connection pool, reconnecting after restarts
            self._own_store = False
        else:
            self.store = open_store(store) if isinstance(store, str) else store
        self.store_url = self.store.url
        self._journals: dict[str, StoreJournal] = {}
        self._stores: dict[str, Store] = {}

    def __repr__(self) -> str:
        return f"Batch(queue={self.queue_url!r}, store={self.store_url!r})"

    def _shared_redis(self, store: Any) -> Store | None:
        """A RedisStore on the queue's own client, when both are the same Redis URL."""
        if not isinstance(store, str) or store != self.queue_url or not self._own_queue:
            return None
        client = getattr(self.queue, "client", None)
        if client is None or not store.startswith(("redis://", "rediss://")):
            return None
        from openheim.stores.redis import RedisStore

        return RedisStore(store, _client=client)

    def scoped(self, namespace: str) -> Store:
        s = self._stores.get(namespace)
        if s is None:
            s = self._stores[namespace] = (
                self.store if namespace == self.store.ns else self.store.namespace(namespace)
            )
        return s

    def journal(self, namespace: str) -> StoreJournal:
        j = self._journals.get(namespace)
        if j is None:
            j = self._journals[namespace] = StoreJournal(self.scoped(namespace), owned=False)
        return j

    async def meta(self, run_id: str, namespace: str = "default") -> BatchMeta | None:
        got = await self.scoped(namespace).get(META + run_id)
        return decode_meta(got[0]) if got is not None else None

    async def load(self, graph: Graph, run_id: str, namespace: str) -> RunView:
        records = await self.journal(namespace).read(run_id)
        if not records:
            raise RunNotFoundError(
                f"no run {run_id!r} of workflow {graph.name!r} in the store {self.store_url!r} "
                f"(namespace {namespace!r})"
            )
        start = records[0][1]
        if isinstance(start, Started) and start.workflow != graph.name:
            raise RunNotFoundError(
                f"run {run_id!r} is a run of workflow {start.workflow!r}, not {graph.name!r}"
            )
        return RunView.replay(graph, records, typed=False)

    def tasks(self, view: RunView, namespace: str, traceparent: str | None) -> list[Task]:
        """The queue tasks of the view's ready nodes."""
        if view.ended is not None or view.budget_wait is not None:
            return []
        name = view.graph.name
        return [
            Task(
                workflow=name,
                run_id=view.run_id,
                task=view.task_id(n),
                namespace=namespace,
                traceparent=traceparent,
                retry=view.retries,
            )
            for n in view.ready()
        ]

    async def enqueue(self, wf: Workflow, run_id: str, namespace: str, *, nonce: str = "") -> int:
        """Put the ready tasks of run ``run_id`` (of ``wf`` or one of its sub-workflows)."""
        meta = await self.meta(run_id, namespace)
        root_meta = meta if "/" not in run_id else await self.meta(run_id.split("/")[0], namespace)
        graph: Graph = wf
        if meta is not None:
            graph = wf.definitions().get(meta.workflow, wf)
        view = await self.load(graph, run_id, namespace)
        tp = root_meta.traceparent if root_meta is not None else None
        tasks = self.tasks(view, namespace, tp)
        if nonce:
            tasks = [msgspec.structs.replace(t, dedup=f"{t.dedup_id()}/{nonce}") for t in tasks]
        return await self.queue.put(tasks)

    async def ends_after(self, queue_name: str, after: int) -> list[tuple[int, RunEnd]]:
        return [
            (seq, end)
            for seq, data in await self.store.read_log(ENDS + queue_name, after)
            for end in decode_ends(data)
        ]

    async def aclose(self) -> None:
        if self._own_queue:
            await self.queue.aclose()
        if self._own_store:
            await self.store.aclose()


class RunHandle:
    """A batch run, from any process: ``status``, ``result``, ``cancel``."""

    def __init__(self, wf: Workflow, batch: Batch, run_id: str, namespace: str = "default"):
        self.workflow = wf
        self.batch = batch
        self.run_id = run_id
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r}, queue={self.batch.queue_url!r})"

    async def _view(self) -> RunView:
        return await self.batch.load(self.workflow, self.run_id, self.namespace)

    async def status(self) -> WorkflowResult:
        """Where the run stands now (state, status, pending approvals, usage)."""
        view = await self._view()
        return await status_of(view, partial(self.batch.load, namespace=self.namespace))

    async def _children_pending(self, view: RunView) -> list[Any]:
        return await waiting_children(view, partial(self.batch.load, namespace=self.namespace))

    async def result(self, timeout: float | None = None) -> WorkflowResult:
        """Wait until the run ends or waits for an approval, and return its result.

        Raises :class:`WorkflowStepError` if it failed, :class:`WorkflowCancelled`
        if it was cancelled, :class:`WorkflowTimeout` after ``timeout`` seconds.
        """
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                res = await self.status()
            except Exception as exc:
                if not is_transient(exc) or (end is not None and time.monotonic() >= end):
                    raise
                await asyncio.sleep(delay)
                delay = min(0.25, delay * 1.5)
                continue
            if res.status in ("done", "waiting"):
                return res
            if res.status == "failed":
                msg = res.error or "the run failed"
                if "used up its budget" in msg:
                    raise BudgetExceededError(msg)
                if "reached the step limit" in msg:
                    raise WorkflowError(msg)
                raise WorkflowStepError(msg, run_id=self.run_id)
            if res.status == "cancelled":
                raise WorkflowCancelled(f"run {self.run_id!r} was cancelled")
            if end is not None and time.monotonic() >= end:
                raise WorkflowTimeout(
                    f"run {self.run_id!r} did not finish within {timeout:g}s (it is "
                    f"{res.status}; are `openheim worker --queue {self.batch.queue_url}` "
                    "processes running?)"
                )
            await asyncio.sleep(delay if end is None else min(delay, end - time.monotonic()))
            delay = min(0.25, delay * 1.5)

    async def history(self) -> list[Checkpoint]:
        """The run's checkpoints, oldest first (as ``Workflow.history``)."""
        from openheim.workflow._workflow import _checkpoint

        records = await self.batch.journal(self.namespace).read(self.run_id)
        if not records:
            raise RunNotFoundError(f"no run {self.run_id!r} in {self.batch.store_url!r}")
        return [_checkpoint(seq, rec) for seq, rec in records]

    async def cancel(self) -> None:
        """Cancel the run: workers stop taking its tasks; it cannot be resumed."""
        view = await self._view()
        if view.ended in ("done", "cancelled"):
            return
        journal = self.batch.journal(self.namespace)
        await journal.append(
            self.run_id, Ended(status="cancelled", active=view.usage.seconds, at=time.time())
        )
        await cancel_approvals(journal, view.pending() + await self._children_pending(view))

    async def resume(self) -> int:
        """Put the run's ready tasks on the queue again (a fork, tasks lost with a queue
        that was purged, or a failed run: it runs again from its failed superstep);
        returns how many were put."""
        view = await self._view()
        if view.ended == "failed":
            await retry_failed(self.batch.journal(self.namespace), view)
            view = await self._view()
        meta = await self.batch.meta(self.run_id, self.namespace)
        if meta is None:
            meta = BatchMeta(
                workflow=self.workflow.name,
                queue=self.batch.queue_url,
                queue_name=self.batch.queue.name,
                namespace=self.namespace,
                traceparent=new_traceparent(),
                at=time.time(),
            )
            await self.batch.scoped(self.namespace).put(META + self.run_id, encode_meta(meta))
        nonce = os.urandom(4).hex()
        tasks = self.batch.tasks(view, self.namespace, meta.traceparent)
        tasks = [msgspec.structs.replace(t, dedup=f"{t.dedup_id()}/{nonce}") for t in tasks]
        return await self.batch.queue.put(tasks)


async def submit(
    wf: Workflow,
    batch: Batch,
    input: Any,
    *,
    run_id: str | None,
    budget: Budget | None,
    namespace: str,
    traceparent: str | None = None,
) -> RunHandle:
    from openheim.workflow._workflow import new_run_id

    if not wf._validated:
        wf.validate()
    journal = batch.journal(namespace)
    if run_id is None:
        run_id = new_run_id()
    elif await journal.read(run_id):
        raise WorkflowError(f"run {run_id!r} already exists; choose a new run id")
    view = wf._new_view(wf, run_id, input, budget or wf.budget)
    tp = traceparent or new_traceparent()
    meta = BatchMeta(
        workflow=wf.name,
        queue=batch.queue_url,
        queue_name=batch.queue.name,
        namespace=namespace,
        traceparent=tp,
        at=time.time(),
    )
    await batch.scoped(namespace).put(META + run_id, encode_meta(meta))
    view.seq = await journal.append(
        run_id,
        Started(
            run_id=run_id,
            workflow=wf.name,
            state=wf.spec.dump(view.state),
            frontier=view.frontier,
            budget=view.budget,
            at=time.time(),
        ),
    )
    await batch.queue.put(batch.tasks(view, namespace, tp))
    return RunHandle(wf, batch, run_id, namespace)


async def waiting_children(
    view: RunView, load: Callable[[Graph, str], Awaitable[RunView | None]]
) -> list[ApprovalRecord]:
    """The approvals the child runs of a run's sub-workflow nodes wait for (recorded in
    the child's log only; ``load(graph, run_id)`` reads one)."""
    out = []
    for n in view.ready():
        node = view.graph.nodes[n]
        if node.kind != "workflow":
            continue
        try:
            child = await load(node.sub, f"{view.run_id}/{view.task_id(n)}")
        except RunNotFoundError:
            continue
        if child is not None and child.status == "waiting":
            out += child.pending()
    return out


async def status_of(
    view: RunView, load: Callable[[Graph, str], Awaitable[RunView | None]]
) -> WorkflowResult:
    """Where run ``view`` stands: ``result_of(view)``, but waiting (with their
    approvals) while a sub-workflow node's child run waits for one (``load`` as for
    :func:`waiting_children`)."""
    res = result_of(view)
    if res.status == "running":
        pending = await waiting_children(view, load)
        if pending:
            res = WorkflowResult(res.run_id, res.state, "waiting", pending, res.usage)
    return res


class Deadline(msgspec.Struct, array_like=True):
    """A batch run's approval with a deadline (kept until the deadline is applied)."""

    namespace: str
    approval: str
    deadline: float


_Deadlines = dict[str, Deadline]  # one index shard: its entries by ``namespace \0 id``
DEADLINE_SHARDS = 16  # index keys per queue (an update rewrites one)


def _shard_key(queue_name: str, n: int) -> str:
    return f"{DEADLINES}{queue_name}/{n:02d}"


def _deadline_shard(queue_name: str, entry_key: str) -> str:
    n = hashlib.blake2s(entry_key.encode(), digest_size=2).digest()[0] % DEADLINE_SHARDS
    return _shard_key(queue_name, n)


async def _read_shard(store: Store, key: str) -> tuple[_Deadlines, int]:
    """Index shard ``key``'s entries and version (0: absent; an unreadable one is empty)."""
    got = await store.get(key)
    if got is None:
        return {}, 0
    try:
        return msgspec.msgpack.decode(got[0], type=_Deadlines), got[1]
    except msgspec.DecodeError:
        log.warning("approval deadline index %r was unreadable; starting it again", key)
        return {}, got[1]


async def _update_shard(store: Store, key: str, change: Callable[[_Deadlines], bool]) -> _Deadlines:
    """Read index shard ``key``, let ``change`` edit it (False: nothing to write) and write
    it back with a compare-and-set (again on a conflict); the shard as written."""
    while True:
        entries, version = await _read_shard(store, key)
        if not change(entries):
            return entries
        try:
            await store.put(key, msgspec.msgpack.encode(entries), expect_version=version)
            return entries
        except VersionConflictError:
            continue  # another worker wrote it meanwhile: read it again


async def note_deadline(batch: Batch, namespace: str, approval: ApprovalRecord) -> None:
    """Index ``approval`` (with a deadline) under its queue, where workers look for the
    deadlines that passed (:func:`apply_deadlines`): one of a few keys per queue, so
    looking costs a few reads, however many keys the store holds."""
    assert approval.deadline is not None
    entry_key = f"{namespace}\0{approval.id}"
    entry = Deadline(namespace, approval.id, approval.deadline)

    def add(entries: _Deadlines) -> bool:
        if entry_key in entries:
            return False
        entries[entry_key] = entry
        return True

    await _update_shard(batch.store, _deadline_shard(batch.queue.name, entry_key), add)


async def apply_deadlines(
    batch: Batch, workflows: Iterable[Workflow], now: float | None = None
) -> list[str]:
    """Reject (or escalate) the approvals of ``batch``'s queue whose deadline passed, as
    a real-time run's timer would; their runs go back on the queue. Returns their ids.
    Any number of workers may do this at once: a decision is a compare-and-set."""
    now = time.time() if now is None else now
    out: list[str] = []
    for n in range(DEADLINE_SHARDS):
        key = _shard_key(batch.queue.name, n)
        entries, _ = await _read_shard(batch.store, key)
        done = set()
        for entry_key, entry in entries.items():
            if entry.deadline <= now and await _apply_deadline(batch, workflows, entry, out):
                done.add(entry_key)
        if done:

            def drop(entries: _Deadlines, done: set[str] = done) -> bool:
                for k in done:
                    entries.pop(k, None)
                return True

            await _update_shard(batch.store, key, drop)
    return out


async def _apply_deadline(
    batch: Batch, workflows: Iterable[Workflow], entry: Deadline, out: list[str]
) -> bool:
    """Apply ``entry``'s passed deadline (its id goes in ``out``); False when it is left
    for a worker that runs its workflow."""
    journal = batch.journal(entry.namespace)
    got = await journal.get_approval(entry.approval)
    if got is None or got[0].status != "pending":
        return True  # decided (or cancelled) before its deadline
    wf = next((w for w in workflows if got[0].workflow in w.definitions()), None)
    if wf is None:
        return False
    try:
        await wf._journaled(journal)._expire_one(entry.approval, resume=False)
    except WorkflowError as exc:  # decided meanwhile, or its run cancelled
        log.info("approval %s: deadline not applied (%s)", entry.approval, exc)
    else:
        out.append(entry.approval)
    return True


async def batch_meta(wf: Workflow, run_id: str) -> BatchMeta | None:
    """The batch record of run ``run_id`` (or of its root run) in ``wf``'s store; None
    for a real-time run."""
    journal = wf.journal
    if not isinstance(journal, StoreJournal):
        return None
    got = await journal.store.get(META + run_id.split("/")[0])
    return decode_meta(got[0]) if got is not None else None


async def fork_meta(wf: Workflow, run_id: str, new_id: str) -> None:
    """Run ``new_id``, forked from ``run_id``: a batch run on the same queue if that one
    is (its own trace)."""
    meta = await batch_meta(wf, run_id)
    if meta is not None:
        fork = msgspec.structs.replace(meta, traceparent=new_traceparent(), at=time.time())
        await wf.journal.store.put(META + new_id, encode_meta(fork))  # type: ignore[attr-defined]


async def delete_meta(wf: Workflow, run_id: str) -> None:
    """Drop run ``run_id``'s batch record, if it has one (``Workflow.delete``)."""
    await wf.journal.store.delete(META + run_id)  # type: ignore[attr-defined]


async def requeue(wf: Workflow, run_id: str) -> bool:
    """If run ``run_id`` (in ``wf``'s store) is a batch run, put its ready tasks on its
    queue (True; after an approval was decided, or by :func:`resume_batch`); False for
    a real-time run."""
    meta = await batch_meta(wf, run_id)
    if meta is None:
        return False
    store = wf.journal.store  # type: ignore[attr-defined]
    batch = wf._batch_for(meta.queue, store, meta.queue_name)
    await batch.enqueue(wf, run_id, store.ns, nonce=os.urandom(4).hex())
    return True


async def retry_failed(journal: Journal, view: RunView) -> None:
    """Record that failed run ``view`` runs again from its failed superstep (a Retried
    record; its tasks are put with the new retry count, so they claim anew: the failed
    task's claim holds its failure). Two processes doing this at once append one
    record each, and the second changes nothing (see Retried)."""
    await journal.append(view.run_id, view.retried())


async def resume_batch(wf: Workflow, run_id: str) -> WorkflowResult | None:
    """``Workflow.resume`` of a batch run: nothing runs here; its ready tasks go on its
    queue again (tasks lost with a purged queue come back; one a worker holds is
    delivered twice, and the step's claim lets one commit). A failed run runs again
    from its failed superstep, as a real-time run resumed does. None for a real-time
    run."""
    if await batch_meta(wf, run_id) is None:
        return None
    view = await wf._load(wf, run_id)
    assert view is not None
    res = await status_of(view, wf._load)
    if res.status == "cancelled":
        raise WorkflowCancelled(f"run {run_id!r} was cancelled; fork it to run it again")
    if res.status == "failed":
        await retry_failed(wf.journal, view)
        view = await wf._load(wf, run_id)
        assert view is not None
        res = await status_of(view, wf._load)
    if res.status != "done":
        await requeue(wf, run_id)
    return res


# -- submit_many's progress ------------------------------------------------------------


class Progress:
    """A progress line (done, failed, rate, ETA) for many runs; rich when on a TTY."""

    def __init__(
        self, total: int, enabled: bool, stream: Any = None, started: float | None = None
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.other = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        # (time.monotonic() when the work began: the rate and the seconds count from it)
        self.t0 = time.monotonic() if started is None else started
        self._last = 0.0
        self._rich: Any = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress

                self._rich = RichProgress(
                    TextColumn("runs"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("failed {task.fields[failed]}"),
                    TextColumn("{task.fields[rate]:.1f}/s"),
                    TimeRemainingColumn(),
                    transient=False,
                )
                self._task = self._rich.add_task("runs", total=total, failed=0, rate=0.0)
                self._rich.start()
            except ImportError:
                self._rich = None

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.other

    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return self.finished / dt if dt > 0 else 0.0

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        rate = self.rate()
        if self._rich is not None:
            self._rich.update(self._task, completed=self.finished, failed=self.failed, rate=rate)
            return
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        left = self.total - self.finished
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        print(
            f"runs {self.finished}/{self.total}  done {self.done}  failed {self.failed}  "
            f"{rate:.1f}/s  ETA {eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._rich is not None:
            self._rich.update(
                self._task, completed=self.finished, failed=self.failed, rate=self.rate()
            )
            self._rich.stop()
        elif self.enabled:
            self.update(force=True)

    def summary(self) -> list[tuple[str, str]]:
        dt = time.monotonic() - self.t0
        return [
            ("runs", str(self.total)),
            ("done", str(self.done)),
            ("failed", str(self.failed)),
            ("other (waiting, cancelled)", str(self.other)),
            ("seconds", f"{dt:.2f}"),
            ("runs/s", f"{self.rate():.1f}"),
        ]

    def print_summary(self) -> None:
        rows = self.summary()
        if self._rich is not None:
            from rich.console import Console
            from rich.table import Table

            table = Table(title="batch summary")
            table.add_column("")
            table.add_column("", justify="right")
            for k, v in rows:
                table.add_row(k, v)
            Console(file=self.stream).print(table)
            return
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k.ljust(width)}  {v}", file=self.stream, flush=True)


async def submit_many(
    wf: Workflow,
    batch: Batch,
    inputs: Iterable[Any],
    *,
    namespace: str,
    budget: Budget | None,
    progress: bool,
    wait: bool,
    timeout: float | None,
    stream: Any = None,
) -> list[RunHandle]:
    items = list(inputs)
    store = batch.store
    qname = batch.queue.name
    log = ENDS + qname
    # (the runs' ends come after this: a queue's log of ends grows with every run)
    start_seq = await store.last_seq(log) if wait else 0
    handles = []
    tp = new_traceparent()
    started = time.monotonic()  # runs may finish while the later ones are still submitted
    for item in items:
        handles.append(
            await submit(
                wf, batch, item, run_id=None, budget=budget, namespace=namespace, traceparent=tp
            )
        )
    if not wait:
        return handles
    bar = Progress(len(handles), progress, stream, started)
    mine = {h.run_id for h in handles}
    seen: set[str] = set()
    failed: list[str] = []
    after = start_seq
    end = None if timeout is None else time.monotonic() + timeout
    try:
        while len(seen) < len(mine):
            for seq, rec in await batch.ends_after(qname, after):
                after = seq
                if rec.run_id in mine and rec.run_id not in seen:
                    seen.add(rec.run_id)
                    if rec.status == "done":
                        bar.done += 1
                    elif rec.status == "failed":
                        bar.failed += 1
                        failed.append(rec.run_id)
                    else:
                        bar.other += 1
            bar.update()
            if len(seen) >= len(mine):
                break
            if end is not None and time.monotonic() >= end:
                raise WorkflowTimeout(
                    f"{len(mine) - len(seen)} of {len(mine)} runs did not finish within "
                    f"{timeout:g}s"
                )
            await asyncio.sleep(0.05)
    finally:
        bar.close()
    if progress:
        bar.print_summary()
        if failed:
            await _print_failed({h.run_id: h for h in handles}, failed, bar.stream)
    return handles


async def _print_failed(
    handles: dict[str, RunHandle], failed: list[str], stream: Any, most: int = 10
) -> None:
    """The first ``most`` failed runs with their errors, and what to do about them."""
    print(f"failed runs ({len(failed)}):", file=stream)
    for run_id in failed[:most]:
        try:
            error = (await handles[run_id].status()).error or "?"
        except Exception as exc:  # (the summary stands without it)
            error = f"(its status could not be read: {exc})"
        print(f"  {run_id}: {error}", file=stream)
    if len(failed) > most:
        print(f"  ... and {len(failed) - most} more", file=stream)
    print(
        "once the cause is fixed, resume a failed run (it runs again from the step that "
        "failed): `openheim workflow resume WORKFLOW RUN_ID` (with the --tenant or "
        "--namespace it was submitted with), or wf.resume(run_id)",
        file=stream,
        flush=True,
    )
