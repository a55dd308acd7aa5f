"""The pure core: a run's state as the fold of its records, and the steps ready to run.

A run advances in *supersteps*. The frontier is the list of nodes to run in
the current superstep; each runs against the state as it was when the
superstep began, and its result is committed as its own record as soon as it
finishes (so a crash loses at most the nodes still running). Once every node
of the frontier has a result, their updates are merged in frontier order
(through the fields' reducers) and the next frontier is computed from the
edges and the branches' recorded choices. Merging needs no record: it follows
from the records before it, so replaying the log rebuilds exactly the same
state, and a node with a committed result is never run again.

This module runs no user code and does no I/O: the real-time executor here
and the batch executor drive the same ``RunView``.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from openheim.errors import CorruptStateError, WorkflowStateError
from openheim.workflow._nodes import END
from openheim.workflow._records import (
    ApprovalRecord,
    Budget,
    Decided,
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

if TYPE_CHECKING:
    from openheim.workflow._graph import Graph

__all__ = ["RunView", "split_task"]

# Shared by every view until it needs a dict of its own (most runs never do): a
# read-only mapping, so a write that forgot to make its own dict fails loudly.
_NONE: Any = MappingProxyType({})


def split_task(task: str) -> tuple[int, str]:
    step, _, node = task.partition(":")
    return int(step), node


class RunView:
    """A run's state folded from its records (see the module docstring)."""

    __slots__ = (
        "blocked",
        "budget",
        "budget_wait",
        "done",
        "ended",
        "error",
        "fork_of",
        "frontier",
        "graph",
        "items",
        "joins",
        "legacy",
        "retries",
        "run_id",
        "seq",
        "state",
        "step",
        "usage",
        "waiting",
    )

    def __init__(
        self,
        graph: Graph,
        run_id: str,
        state: Any,
        frontier: list[str],
        *,
        step: int = 0,
        usage: Usage | None = None,
        budget: Budget | None = None,
        joins: dict[str, list[str]] | None = None,
        fork_of: Lineage | None = None,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.state = state
        self.frontier = frontier
        self.step = step
        self.usage = usage if usage is not None else Usage()
        self.budget = budget
        self.joins: dict[str, set[str]] = {k: set(v) for k, v in joins.items()} if joins else {}
        self.fork_of = fork_of
        # node -> (updates, routes, replacements) of the current superstep
        self.done: dict[str, tuple[dict[str, Any], list[str] | None, dict[str, Any] | None]] = {}
        self.items: dict[str, dict[int, Any]] = _NONE  # map node -> results by item index
        self.waiting: dict[str, ApprovalRecord] = _NONE  # node -> its pending approval
        self.budget_wait: ApprovalRecord | None = None
        # sub-workflow nodes whose child run waits (in this process; not recorded)
        self.blocked: dict[str, list[ApprovalRecord]] = _NONE
        self.ended: str | None = None  # "done" | "failed" | "cancelled"
        self.error: str | None = None
        self.retries = 0  # failures resumed (Retried records)
        self.legacy = False  # started at format 1: a result after a failure resumes the run
        self.seq = 0  # the last record folded in

    @classmethod
    def started(cls, graph: Graph, rec: Started, *, typed: bool) -> RunView:
        state = rec.state if typed else graph.spec.load(rec.state)
        view = cls(
            graph,
            rec.run_id,
            state,
            list(rec.frontier),
            step=rec.step,
            usage=Usage(steps=rec.usage.steps, tokens=rec.usage.tokens, seconds=rec.usage.seconds),
            budget=rec.budget,
            joins=rec.joins,
            fork_of=rec.fork_of,
        )
        if not rec.frontier:
            view.ended = "done"  # a fork of a finished run: nothing is left to run
        if rec.v < 2:
            view.legacy = True
        return view

    @classmethod
    def replay(cls, graph: Graph, records: list[tuple[int, Record]], *, typed: bool) -> RunView:
        if not records or not isinstance(records[0][1], Started):
            raise CorruptStateError("a workflow run's log does not begin with its start record")
        view = cls.started(graph, records[0][1], typed=typed)
        view.seq = records[0][0]
        for seq, rec in records[1:]:
            if not typed:
                rec = graph.load_record(rec)
            view.apply(rec)
            view.seq = seq
        return view

    # -- queries -----------------------------------------------------------------------

    def task_id(self, node: str) -> str:
        return f"{self.step}:{node}"

    def block(self, node: str, pending: list[ApprovalRecord]) -> None:
        """Sub-workflow node ``node`` waits for its child run's approvals (``pending``)."""
        if self.blocked is _NONE:
            self.blocked = {}
        self.blocked[node] = pending

    def ready(self) -> list[str]:
        """The frontier's nodes without a result and not waiting for an approval."""
        done, waiting, blocked = self.done, self.waiting, self.blocked
        if not done and not waiting and not blocked:
            return self.frontier  # the common case: no list of its own (callers only read it)
        return [n for n in self.frontier if n not in done and n not in waiting and n not in blocked]

    @property
    def status(self) -> str:
        if self.ended is not None:
            return self.ended
        if self.budget_wait is not None or ((self.waiting or self.blocked) and not self.ready()):
            return "waiting"
        return "running"

    def pending(self) -> list[ApprovalRecord]:
        out = list(self.waiting.values())
        for child in self.blocked.values():
            out += child
        if self.budget_wait is not None:
            out.append(self.budget_wait)
        return out

    def retried(self) -> Retried:
        """The record that resumes this failed run: its next retry (see Retried)."""
        return Retried(n=self.retries + 1, at=time.time())

    def exceeded(self) -> str | None:
        """Which budget limit the run has reached, if any."""
        b = self.budget
        if b is None:
            return None
        u = self.usage
        if b.tokens is not None and u.tokens >= b.tokens:
            return f"tokens ({u.tokens} of {b.tokens})"
        if b.steps is not None and u.steps >= b.steps:
            return f"steps ({u.steps} of {b.steps})"
        if b.seconds is not None and u.seconds >= b.seconds:
            return f"seconds ({u.seconds:.3g} of {b.seconds:g})"
        return None

    # -- folding -----------------------------------------------------------------------

    def _current(self, task: str) -> str | None:
        """The node of ``task`` if it belongs to the current superstep, else None."""
        step, node = split_task(task)
        return node if step == self.step else None

    def apply(self, rec: Record) -> None:
        """Fold one record in (its updates already typed)."""
        tp = type(rec)
        if tp is StepDone:
            assert isinstance(rec, StepDone)
            if self.ended == "cancelled":
                return
            node = self._current(rec.task)
            if node is None or node in self.done:
                return  # a duplicate or stale result: the first one counts
            self.complete(node, rec.updates, rec.routes, rec.tokens, rec.active)
        elif tp is ItemDone:
            assert isinstance(rec, ItemDone)
            node = self._current(rec.task)
            if node is not None:
                if self.items is _NONE:
                    self.items = {}
                have = self.items.setdefault(node, {})
                if rec.index not in have:  # a second record of the item: the first counts
                    have[rec.index] = rec.value
                    self.usage.tokens += rec.tokens
                if rec.active > self.usage.seconds:
                    self.usage.seconds = rec.active
        elif tp is Waiting:
            assert isinstance(rec, Waiting)
            if rec.approval.kind == "budget":
                self.budget_wait = rec.approval
            else:
                node = self._current(rec.task)
                if node is not None and node not in self.done:
                    if self.waiting is _NONE:
                        self.waiting = {}
                    self.waiting[node] = rec.approval
            if rec.active > self.usage.seconds:
                self.usage.seconds = rec.active
        elif tp is Decided:
            assert isinstance(rec, Decided)
            if self.ended == "cancelled":
                return
            if rec.task.startswith("budget:"):
                if self.budget_wait is not None and self.budget_wait.id == rec.approval_id:
                    self.budget_wait = None
                    if rec.budget is not None:
                        self.budget = rec.budget
                    if not rec.decision.approved:
                        self.ended = "failed"
                        self.error = "the run's budget was exceeded and the approval was refused"
                return
            node = self._current(rec.task)
            if node is None or self.waiting.get(node) is None:
                return
            if self.waiting[node].id != rec.approval_id:
                return
            del self.waiting[node]
            self.usage.steps += 1
            edits = rec.decision.edits if rec.decision.approved else None
            self.done[node] = (rec.updates, rec.routes, edits)
            if len(self.done) == len(self.frontier):
                self._advance()
        elif tp is Ended:
            assert isinstance(rec, Ended)
            if self.ended in ("done", "cancelled"):
                return
            self.ended = rec.status
            self.error = rec.error
            if rec.active > self.usage.seconds:
                self.usage.seconds = rec.active
        elif tp is Retried:
            assert isinstance(rec, Retried)
            if self.ended == "failed" and rec.n == self.retries + 1:
                self.ended = self.error = None
                self.retries = rec.n
        elif tp is Started:
            raise CorruptStateError(f"run {self.run_id!r}: a second start record in its log")

    def complete(
        self,
        node: str,
        updates: dict[str, Any],
        routes: list[str] | None,
        tokens: int,
        active: float,
    ) -> None:
        """Node ``node`` of the current superstep finished with these results (a result
        after the run failed, of a node that ran beside the one that failed, is kept for
        when the run is resumed: see Retried)."""
        if self.legacy and self.ended == "failed":
            self.ended = self.error = None  # a failed run resumed (format 1)
        u = self.usage
        u.steps += 1
        if tokens:
            u.tokens += tokens
        if active > u.seconds:
            u.seconds = active
        self.done[node] = (updates, routes, None)
        if self.items:
            self.items.pop(node, None)
        if len(self.done) == len(self.frontier):
            self._advance()

    def _advance(self) -> None:
        graph = self.graph
        if len(self.frontier) == 1 and not graph.joins:
            # One node (a chain): no merge to order, no join to wait for.
            node = self.frontier[0]
            updates, routes, edits = self.done[node]
            state = graph.spec.apply(self.state, updates) if updates else self.state
            if edits:
                state = graph.spec.replace(state, edits)
            targets = routes if routes is not None else graph.edges.get(node, ())
            # (no comprehension unless END is among them: a chain's step costs no frame)
            nxt: list[str] = [t for t in targets if t != END] if END in targets else [*targets]
            if len(nxt) > 1:
                nxt = list(dict.fromkeys(nxt))
            self.state = state
            self.frontier = nxt
            self.done = {}
            self.step += 1
            if self.items:
                self.items = _NONE
            if not nxt:
                self.ended = "done"
            return
        spec = graph.spec
        state = self.state
        parallel = len(self.frontier) > 1
        writers: dict[str, str] = {}
        nxt = []
        seen: set[str] = set()
        for node in self.frontier:
            updates, routes, edits = self.done[node]
            if parallel:
                for name in updates:
                    if name in spec.reducers:
                        continue
                    other = writers.get(name)
                    if other is not None:
                        raise WorkflowStateError(
                            f"nodes {other!r} and {node!r} ran in parallel and both wrote "
                            f"{spec.name}.{name}, which has no reducer; give the field one "
                            f"(Annotated[..., oh.reducer(fn)]) or write it from one node only"
                        )
                    writers[name] = node
            state = spec.apply(state, updates)
            if edits:
                state = spec.replace(state, edits)
            for target in routes if routes is not None else graph.edges.get(node, ()):
                if target == END:
                    continue
                sources = graph.joins.get(target)
                if sources is not None and node in sources:
                    arrived = self.joins.setdefault(target, set())
                    arrived.add(node)
                    if not arrived >= sources:
                        continue
                    del self.joins[target]
                if target not in seen:
                    seen.add(target)
                    nxt.append(target)
        self.state = state
        self.frontier = nxt
        if not nxt:
            self.ended = "done"  # follows from the records: no record of its own
        self.done = {}
        if self.items:
            self.items = _NONE
        self.step += 1
