"""The real-time executor: drives a :class:`RunView` in this process, node by node.

``drive`` repeats: take the view's ready nodes, run them (concurrently when
there are several), commit each result as a record, until the frontier is
empty (done), only approvals remain (waiting: the coroutine returns and holds
nothing), the budget is used up, or a node fails after its retries.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from itertools import repeat
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from openheim import telemetry
from openheim.errors import (
    BudgetExceededError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowStateError,
    WorkflowStepError,
    WorkflowTimeout,
)
from openheim.workflow._nodes import END, NO_RETRY, Node
from openheim.workflow._records import (
    ApprovalRecord,
    Ended,
    ItemDone,
    Record,
    Waiting,
    step_done,
)
from openheim.workflow._step import _FAST, _STEP
from openheim.workflow._view import RunView
from openheim.workflow.events import (
    ApprovalRequested,
    NodeFinished,
    NodeRetrying,
    NodeStarted,
    TokenDelta,
    WorkflowResult,
)

if TYPE_CHECKING:
    from openheim.workflow._graph import Graph
    from openheim.workflow._workflow import Workflow

__all__ = [
    "Ctx",
    "approval_record",
    "budget_record",
    "call_node",
    "execute",
    "map_join",
    "result_of",
    "run_item",
    "step_limit",
]

Emit = Callable[[Any], None]
T = TypeVar("T")
_perf = time.perf_counter


class Ctx:
    """One run being driven in this process."""

    __slots__ = (
        "base",
        "cancelled",
        "durable",
        "emit",
        "graph",
        "owner",
        "root",
        "t0",
        "task",
        "view",
    )

    def __init__(
        self, owner: Workflow, graph: Graph, view: RunView, emit: Emit | None, root: str
    ) -> None:
        self.owner = owner
        self.graph = graph
        self.view = view
        self.emit = emit
        self.root = root
        self.durable = owner.journal.durable
        self.base = view.usage.seconds
        self.t0 = _perf()
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None

    def active(self) -> float:
        return self.base + (_perf() - self.t0)

    async def commit(self, rec: Record, stored: Record | None = None) -> None:
        if self.durable:
            self.view.seq = await self.owner.journal.append(self.view.run_id, stored or rec)
        self.view.apply(rec)


def result_of(view: RunView) -> WorkflowResult:
    # (a cancelled run's approvals can no longer be decided: none is pending)
    pending = view.pending() if view.ended not in ("done", "cancelled") else []
    return WorkflowResult(view.run_id, view.state, view.status, pending, view.usage, view.error)


def execute(
    owner: Workflow, graph: Graph, view: RunView, emit: Emit | None, root: str | None = None
) -> Coroutine[Any, Any, WorkflowResult]:
    """Drive ``view`` until it ends or waits; the run's failure is raised."""
    ctx = Ctx(owner, graph, view, emit, root or view.run_id)
    run = _execute(ctx) if graph.timeout is None else _execute_within(ctx, graph.timeout)
    return telemetry.workflow_run(run, graph.name, view.run_id)


async def _execute_within(ctx: Ctx, timeout: float) -> WorkflowResult:
    try:
        return await asyncio.wait_for(_execute(ctx), timeout)
    except asyncio.TimeoutError:
        if ctx.cancelled:
            raise
        msg = f"run {ctx.view.run_id!r} took longer than its timeout of {timeout:g}s"
        await _fail(ctx, msg)
        raise WorkflowTimeout(msg) from None


async def _execute(ctx: Ctx) -> WorkflowResult:
    view = ctx.view
    owner = ctx.owner
    run_id = view.run_id
    live = owner._live
    if run_id in live:
        raise WorkflowError(
            f"run {run_id!r} is already running in this process; wait for it to stop"
        )
    live[run_id] = ctx
    if view.blocked:
        view.blocked = {}  # their child runs may have been decided since: try them again
    ctx.task = asyncio.current_task()
    try:
        # The loop lives here, not in a coroutine of its own: one frame less per run in flight.
        graph = ctx.graph
        while True:
            if view.ended is not None or view.budget_wait is not None:
                break
            ready = view.ready()
            if not ready:
                if view.frontier:
                    break  # only approvals (or waiting child runs) left
                view.ended = "done"  # (the fold already says so, unless nothing ever ran)
                break
            if view.step >= graph.max_steps:
                msg = step_limit(graph, run_id)
                await _fail(ctx, msg)
                raise WorkflowError(msg)
            if view.budget is not None:
                over = view.exceeded()
                if over is not None:
                    if view.budget.on_exceed == "pause":
                        await _budget_pause(ctx, over)
                        break
                    msg = f"run {run_id!r} used up its budget: {over}"
                    await _fail(ctx, msg)
                    raise BudgetExceededError(msg)
            try:
                if len(ready) == 1:
                    name = ready[0]
                    node = graph.nodes[name]
                    if (
                        node.fast_async
                        and ctx.emit is None
                        and not ctx.durable
                        and node.retry is NO_RETRY
                        and not telemetry.observed()  # else the step's span is in _run_node
                    ):
                        # What _run_node does for it, awaited here: no frame of its own
                        # while it waits (one object less per run in flight for the GC).
                        step_token = _STEP.set((view.run_id, view.task_id(name), 1))
                        try:
                            r = await node.fn(view.state)  # type: ignore[misc]
                        except (asyncio.CancelledError, WorkflowStateError):
                            raise
                        except Exception as exc:
                            raise WorkflowStepError(
                                f"node {name!r} of run {run_id!r} failed after 1 attempt(s): "
                                f"{type(exc).__name__}: {exc}",
                                run_id=run_id,
                                node=name,
                            ) from exc
                        finally:
                            _STEP.reset(step_token)
                        updates = graph.spec.check(r, f"step {name!r}") if r else {}
                        view.complete(name, updates, None, 0, ctx.active() if view.budget else 0.0)
                    else:
                        await _run_node(ctx, name)
                else:
                    results = await asyncio.gather(
                        *map(_run_node, repeat(ctx), ready), return_exceptions=True
                    )
                    for r in results:
                        if isinstance(r, BaseException):
                            raise r
            except (WorkflowStepError, WorkflowStateError) as exc:
                await _fail(ctx, str(exc))
                raise
    except asyncio.CancelledError:
        if not ctx.cancelled:
            raise
        task = asyncio.current_task()
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        raise WorkflowCancelled(f"run {run_id!r} was cancelled") from None
    finally:
        del live[run_id]
    if not ctx.durable:
        views = owner.journal.views  # type: ignore[attr-defined]
        if view.status == "waiting":
            views[run_id] = view
        elif views:
            views.pop(run_id, None)
    return result_of(view)


def step_limit(graph: Graph, run_id: str) -> str:
    return (
        f"run {run_id!r} reached the step limit of workflow {graph.name!r} "
        f"({graph.max_steps} supersteps; a cycle that does not end?); raise "
        "max_steps if it is expected"
    )


async def _fail(ctx: Ctx, msg: str) -> None:
    if ctx.view.ended is None:
        await ctx.commit(Ended(status="failed", error=msg, active=ctx.active(), at=time.time()))


@telemetry.workflow_step  # a span per step (returns the plain coroutine when nothing observes)
async def _run_node(ctx: Ctx, name: str) -> None:
    graph = ctx.graph
    node = graph.nodes[name]
    view = ctx.view
    emit = ctx.emit
    task = view.task_id(name) if emit is not None or ctx.durable or node.kind != "step" else ""
    state = view.state
    if emit is not None:
        emit(NodeStarted(view.run_id, name, task))
    kind = node.kind
    if kind == "approval":
        await _request_approval(ctx, node, task, state)
        return
    if kind == "workflow":
        await _run_sub(ctx, node, task, state)
        return
    if node.fast:  # inline: no coroutine of our own for a plain sync step
        res = _fast(ctx, node, state)
        if type(res) is not tuple:
            res = await res
        updates, routes, tokens, attempt = res
    else:
        updates, routes, tokens, attempt = await call_node(ctx, node, task, state)
    if not ctx.durable:
        view.complete(name, updates, routes, tokens, ctx.active() if view.budget else 0.0)
        if emit is not None:
            emit(NodeFinished(view.run_id, name, task, updates))
        return
    rec = step_done(
        task, updates, routes=routes, tokens=tokens, active=ctx.active(), attempt=attempt
    )
    stored = None
    if ctx.durable and graph.spec.is_pydantic and updates:
        stored = msgspec.structs.replace(rec, updates=graph.spec.dump_updates(updates))
    await ctx.commit(rec, stored)
    if emit is not None:
        emit(NodeFinished(view.run_id, name, task, updates))


async def call_node(
    ctx: Ctx, node: Node, task: str, state: Any
) -> tuple[dict[str, Any], list[str] | None, int, int]:
    """Run a step, agent, tool, branch or map node on ``state`` with its retry policy
    and timeout: ``(updates, routes, tokens, attempt)``. Both executors call this
    (the real-time one runs plain sync steps inline: ``_run_node``)."""
    if node.fast:
        res = _fast(ctx, node, state)
        return res if type(res) is tuple else await res
    graph = ctx.graph
    name = node.name
    view = ctx.view
    kind = node.kind
    failures = 0
    while True:
        token = _STEP.set((view.run_id, task or view.task_id(name), failures + 1))
        try:
            if node.fast_async:  # awaited here: no coroutine of our own in between
                r = await node.fn(state)  # type: ignore[misc]
                updates = graph.spec.check(r, f"step {name!r}") if r else {}
                return updates, None, 0, failures + 1
            coro = _map(ctx, node, task, state) if kind == "map" else _call(ctx, node, state)
            if node.timeout is not None and kind != "map":
                updates, routes, tokens = await asyncio.wait_for(coro, node.timeout)
            else:
                updates, routes, tokens = await coro
            return updates, routes, tokens, failures + 1
        except asyncio.CancelledError:
            raise
        except WorkflowStateError:
            raise
        except Exception as exc:
            failures += 1
            delay = _failed(ctx, node, exc, failures)
        finally:
            _STEP.reset(token)
        await asyncio.sleep(delay)


def _fast(ctx: Ctx, node: Node, state: Any) -> Any:
    """A plain sync step's result tuple, or if its first attempt failed and it is to be
    retried, the coroutine that retries it (no coroutine at all in the common case)."""
    cell = _FAST
    cell[0] = ctx.view
    cell[1] = node.name
    cell[2] = 1
    try:
        r = node.fn(state)  # type: ignore[misc]
        updates = ctx.graph.spec.check(r, f"step {node.name!r}") if r else {}
    except WorkflowStateError:
        raise
    except Exception as exc:
        return _retried(ctx, node, state, _failed(ctx, node, exc, 1))
    finally:
        cell[0] = None
    return updates, None, 0, 1


async def _retried(
    ctx: Ctx, node: Node, state: Any, delay: float
) -> tuple[dict[str, Any], list[str] | None, int, int]:
    failures = 1
    cell = _FAST
    while True:
        await asyncio.sleep(delay)
        cell[0] = ctx.view
        cell[1] = node.name
        cell[2] = failures + 1
        try:
            r = node.fn(state)  # type: ignore[misc]
            updates = ctx.graph.spec.check(r, f"step {node.name!r}") if r else {}
            return updates, None, 0, failures + 1
        except WorkflowStateError:
            raise
        except Exception as exc:
            failures += 1
            delay = _failed(ctx, node, exc, failures)
        finally:
            cell[0] = None


def _failed(ctx: Ctx, node: Node, exc: Exception, failures: int) -> float:
    """After the ``failures``-th failure: the delay before retrying, or the node's error."""
    name = node.name
    view = ctx.view
    retry = node.retry
    if isinstance(exc, asyncio.TimeoutError) and node.timeout is not None:
        exc = WorkflowTimeout(f"node {name!r} took longer than {node.timeout:g}s")
    # A map retries each item by itself (finished items are kept): not the whole map.
    if failures >= retry.attempts or not isinstance(exc, retry.on) or node.kind == "map":
        raise WorkflowStepError(
            f"node {name!r} of run {view.run_id!r} failed after {failures} attempt(s): "
            f"{type(exc).__name__}: {exc}",
            run_id=view.run_id,
            node=name,
        ) from exc
    delay = retry.delay(failures)
    if ctx.emit is not None:
        ctx.emit(NodeRetrying(view.run_id, name, failures, repr(exc), delay))
    return delay


def _routes(graph: Graph, node: Node, value: Any) -> list[str]:
    if value is None:
        return [END]
    values = [value] if isinstance(value, str) else list(value)
    targets = node.targets
    out = []
    for v in values:
        if targets is not None:
            t = targets.get(v)
            if t is None and v in targets.values():
                t = v
            if t is None and v != END:
                raise WorkflowStateError(
                    f"the condition of node {node.name!r} returned {v!r}, which is not one of "
                    f"its targets ({', '.join(targets)})"
                )
            out.append(t or END)
        else:
            if not isinstance(v, str) or (v != END and v not in graph.nodes):
                raise WorkflowStateError(
                    f"the condition of node {node.name!r} returned {v!r}, which is not a node "
                    f"of workflow {graph.name!r} (nodes: {', '.join(graph.nodes)}) nor oh.END"
                )
            out.append(v)
    return out


async def _call(ctx: Ctx, node: Node, state: Any) -> tuple[dict[str, Any], list[str] | None, int]:
    spec = ctx.graph.spec
    kind = node.kind
    tokens = 0
    updates: dict[str, Any]
    if kind == "step":
        fn: Any = node.fn
        if node.is_async:
            r = await fn(state)
        elif node.thread:
            call = contextvars.copy_context().run
            r = await asyncio.get_running_loop().run_in_executor(None, call, fn, state)
        else:
            r = fn(state)
        updates = spec.check(r, f"step {node.name!r}") if r else {}
    elif kind == "branch":
        updates = {}
    elif kind == "agent":
        prompt = node.prompt(state) if node.prompt is not None else str(state)
        output, tokens = await _agent(ctx, node, node.agent, prompt)
        updates = (
            spec.check({node.output: output}, f"agent node {node.name!r}") if node.output else {}
        )
    elif kind == "tool":
        tool: Any = node.fn
        args = tool.validate(dict(node.args(state)) if node.args is not None else {})
        value = await _tool_call(tool, _invoke(tool, args), args)
        updates = (
            spec.check({node.output: value}, f"tool node {node.name!r}") if node.output else {}
        )
    else:  # pragma: no cover - the kinds above are all there are
        raise WorkflowError(f"node {node.name!r} of unknown kind {kind!r}")
    routes = None
    if node.router is not None:
        local = spec.apply(state, updates) if updates else state
        choice = node.router(local)
        if inspect.isawaitable(choice):
            choice = await choice
        routes = _routes(ctx.graph, node, choice)
    return updates, routes, tokens


async def _agent(ctx: Ctx, node: Node, agent: Any, prompt: str) -> tuple[Any, int]:
    emit = ctx.emit
    if emit is None:
        result = await agent.run(prompt)
    else:
        from openheim.agent.events import Done
        from openheim.models.base import TextDelta

        result = None
        run_id = ctx.view.run_id
        async for ev in agent.stream(prompt):
            if type(ev) is TextDelta:
                emit(TokenDelta(run_id, node.name, ev.text))
            elif type(ev) is Done:
                result = ev.result
        assert result is not None
    if result.stop_reason != "final":
        raise WorkflowStepError(
            f"agent node {node.name!r}: the agent paused for a tool approval; inside a workflow "
            "use an approval node instead of requires_approval tools",
            run_id=ctx.view.run_id,
            node=node.name,
        )
    usage = result.usage
    return result.output, usage.input_tokens + usage.output_tokens


async def _map(
    ctx: Ctx, node: Node, task: str, state: Any
) -> tuple[dict[str, Any], list[str] | None, int]:
    items = list(node.over(state))  # type: ignore[misc]
    have = ctx.view.items.get(node.name, {})
    values: list[Any] = [have.get(i) for i in range(len(items))]
    todo = [i for i in range(len(items)) if i not in have]
    tokens = 0
    durable = ctx.durable

    async def one(i: int) -> None:
        nonlocal tokens
        v, t = await run_item(ctx, node, items[i], state, f"{task}#{i}")
        values[i] = v
        tokens += t
        if durable:
            await ctx.commit(ItemDone(task=task, index=i, value=v, tokens=t, active=ctx.active()))

    if todo:
        if node.is_async or node.fn is None:
            results = await asyncio.gather(*(one(i) for i in todo), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        else:
            for i in todo:
                await one(i)
    # A durable run recorded each item's tokens with the item (ItemDone, counted when
    # applied): the node's result must not carry them a second time.
    return map_join(ctx, node, values), None, 0 if durable else tokens


def map_join(ctx: Ctx, node: Node, values: list[Any]) -> dict[str, Any]:
    """The updates of map node ``node`` once every item has its value."""
    joined = node.reduce(values) if node.reduce is not None else values
    return ctx.graph.spec.check({node.output: joined}, f"map {node.name!r}")


async def run_item(ctx: Ctx, node: Node, item: Any, state: Any, task: str) -> tuple[Any, int]:
    """One item of map node ``node`` with the node's retry policy: ``(value, tokens)``."""
    retry = node.retry
    do = node.do
    failures = 0
    while True:
        token = _STEP.set((ctx.view.run_id, task, failures + 1))
        try:
            if node.fn is None:  # an agent per item
                coro = _agent(ctx, node, do, str(item))
                return await (asyncio.wait_for(coro, node.timeout) if node.timeout else coro)
            args = (item, state) if node.takes_state else (item,)
            if telemetry.observed() and _is_tool(do):  # an @oh.tool per item: its span
                c = _tool_call(do, do(*args) if node.is_async else _value(do, args), item)
                return await (asyncio.wait_for(c, node.timeout) if node.timeout else c), 0
            if node.is_async:
                c = do(*args)
                return await (asyncio.wait_for(c, node.timeout) if node.timeout else c), 0
            return do(*args), 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if failures >= retry.attempts or not isinstance(exc, retry.on):
                raise
            await asyncio.sleep(retry.delay(failures))
        finally:
            _STEP.reset(token)


def _is_tool(fn: Any) -> bool:
    # (an @oh.tool exists only once openheim.tools was imported: no import here)
    tools = sys.modules.get("openheim.tools._tool")
    return tools is not None and isinstance(fn, tools.Tool)


def _tool_call(tool: Any, call: Awaitable[T], arguments: Any) -> Awaitable[T]:
    """``call`` of ``tool`` (a tool node, or a map item's @oh.tool) inside its
    ``execute_tool`` span; the call id is the step's idempotency key."""
    got = _STEP.get()
    call_id = f"{got[0]}/{got[1]}/{got[2]}" if got is not None else ""
    return telemetry.execute_tool(call, tool.name, call_id, arguments, tool.description)


async def _invoke(tool: Any, args: dict[str, Any]) -> Any:
    # A coroutine: the tool starts once awaited, inside its span (a sync tool's thread
    # copies the context then).
    return await tool.invoke(args, None)


async def _value(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(*args)


def approval_record(ctx: Ctx, node: Node, task: str, state: Any) -> ApprovalRecord:
    """The approval request approval node ``node`` makes (both executors record it)."""
    view = ctx.view
    now = time.time()
    payload = node.payload(state) if node.payload is not None else None
    return ApprovalRecord(
        id=f"{view.run_id}:{task}",
        run_id=view.run_id,
        root=ctx.root,
        workflow=ctx.graph.name,
        node=node.name,
        task=task,
        payload=payload,
        requested_at=now,
        deadline=now + node.deadline if node.deadline is not None else None,
        on_deadline=node.on_deadline,
    )


async def _request_approval(ctx: Ctx, node: Node, task: str, state: Any) -> None:
    rec = approval_record(ctx, node, task, state)
    await ctx.commit(Waiting(task=task, approval=rec, active=ctx.active()))
    await ctx.owner.journal.put_approval(rec, 0)
    if ctx.emit is not None:
        ctx.emit(ApprovalRequested(rec))
    if rec.deadline is not None:
        ctx.owner._arm(rec)


def budget_record(ctx: Ctx, over: str) -> ApprovalRecord:
    """The approval request of a run that used up its budget (``on_exceed="pause"``)."""
    view = ctx.view
    task = f"budget:{view.step}:{view.usage.steps}"
    return ApprovalRecord(
        id=f"{view.run_id}:{task}",
        run_id=view.run_id,
        root=ctx.root,
        workflow=ctx.graph.name,
        node="",
        task=task,
        kind="budget",
        payload={
            "exceeded": over,
            "usage": msgspec.to_builtins(view.usage),
            "budget": msgspec.to_builtins(view.budget),
        },
        requested_at=time.time(),
    )


async def _budget_pause(ctx: Ctx, over: str) -> None:
    rec = budget_record(ctx, over)
    task = rec.task
    await ctx.commit(Waiting(task=task, approval=rec, active=ctx.active()))
    await ctx.owner.journal.put_approval(rec, 0)
    if ctx.emit is not None:
        ctx.emit(ApprovalRequested(rec))


async def _run_sub(ctx: Ctx, node: Node, task: str, state: Any) -> None:
    owner = ctx.owner
    child: Graph = node.sub
    child_id = f"{ctx.view.run_id}/{task}"
    view = await owner._load(child, child_id, missing_ok=True)
    if view is None:
        view = await owner._start(
            child, child_id, node.input(state) if node.input else None, budget=None
        )
    if view.ended != "done":
        await execute(owner, child, view, ctx.emit, ctx.root)
    if view.status == "waiting":
        ctx.view.block(node.name, view.pending())
        return
    if view.ended != "done":
        raise WorkflowStepError(
            f"sub-workflow node {node.name!r}: child run {child_id!r} ended {view.ended}: "
            f"{view.error}",
            run_id=ctx.view.run_id,
            node=node.name,
        )
    spec = ctx.graph.spec
    updates = spec.check(node.fn(view.state), f"sub-workflow {node.name!r}") if node.fn else {}
    routes = None
    if node.router is not None:
        routes = _routes(
            ctx.graph, node, node.router(spec.apply(state, updates) if updates else state)
        )
    rec = step_done(task, updates, routes=routes, tokens=view.usage.tokens, active=ctx.active())
    stored = None
    if ctx.durable and spec.is_pydantic and updates:
        stored = msgspec.structs.replace(rec, updates=spec.dump_updates(updates))
    await ctx.commit(rec, stored)
    if ctx.emit is not None:
        ctx.emit(NodeFinished(ctx.view.run_id, node.name, task, updates))
