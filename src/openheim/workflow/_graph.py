"""``Workflow``: the graph definition (nodes, edges, state) and its validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from openheim.errors import WorkflowDefinitionError
from openheim.workflow._nodes import END, Node, Retry, arity, declared_writes, is_async
from openheim.workflow._records import Budget, Decided, Record, StepDone
from openheim.workflow._state import StateSpec

__all__ = ["Graph"]


def _targets(targets: Iterable[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    if targets is None:
        return None
    if isinstance(targets, Mapping):
        return {str(k): v for k, v in targets.items()}
    if isinstance(targets, str):
        raise WorkflowDefinitionError(
            f"targets is a list of node names or a dict of label -> node, got the string "
            f"{targets!r}"
        )
    return {t: t for t in targets}


class Graph:
    """The definition half of :class:`~openheim.workflow.Workflow`."""

    def __init__(
        self,
        name: str,
        state: Any,
        *,
        reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
        max_steps: int = 1000,
        budget: Budget | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise WorkflowDefinitionError(f"a workflow needs a non-empty name, got {name!r}")
        if max_steps < 1:
            raise WorkflowDefinitionError(f"max_steps must be >= 1, got {max_steps!r}")
        if budget is not None and not isinstance(budget, Budget):
            raise WorkflowDefinitionError(f"budget must be an oh.Budget, got {budget!r}")
        if timeout is not None and not timeout > 0:
            raise WorkflowDefinitionError(f"timeout must be positive seconds, got {timeout!r}")
        self.name = name
        self.spec = StateSpec(state, reducers)
        self.max_steps = max_steps
        self.budget = budget
        self.timeout = timeout
        self.nodes: dict[str, Node] = {}
        self.edges: dict[str, list[str]] = {}
        self.joins: dict[str, frozenset[str]] = {}
        self._start_node: str | None = None
        self._validated = False

    # -- nodes -------------------------------------------------------------------------

    def _add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise WorkflowDefinitionError(
                f"workflow {self.name!r} already has a node named {node.name!r}; "
                "give the new one another name"
            )
        self.nodes[node.name] = node
        self._validated = False
        return node

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        writes: Iterable[str] | None = None,
        thread: bool = False,
    ) -> Any:
        """Add a Python step: ``fn(state)`` (sync or async) returns the fields it updates.

        Use as ``@wf.step`` or ``@wf.step(name=..., retry=oh.Retry(...), timeout=5)``.
        ``writes`` names the fields it may update (checked for parallel
        writes when the graph is built; a ``TypedDict`` return annotation does
        the same). A sync step runs on the event loop unless ``thread=True``.
        """

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(f):
                raise WorkflowDefinitionError(f"@wf.step needs a function, got {f!r}")
            w = frozenset(writes) if writes is not None else declared_writes(f)
            self._add(
                Node(
                    name or str(getattr(f, "__name__", "")),
                    "step",
                    fn=f,
                    retry=retry,
                    timeout=timeout,
                    writes=w,
                    thread=thread,
                )
            )
            return f

        return add(fn) if fn is not None else add

    def agent(
        self,
        name: str,
        agent: Any,
        *,
        prompt: Callable[[Any], str] | None = None,
        output: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> None:
        """Add an agent call: ``agent.run(prompt(state))``; its output goes to field ``output``.

        Its tokens count toward the run's budget; ``stream`` yields its text deltas.
        """
        if not callable(getattr(agent, "run", None)):
            raise WorkflowDefinitionError(
                f"wf.agent({name!r}, ...) needs an oh.Agent, got {type(agent).__name__}"
            )
        if prompt is not None and not callable(prompt):
            raise WorkflowDefinitionError(f"agent node {name!r}: prompt must be a function")
        self._add(
            Node(
                name,
                "agent",
                agent=agent,
                prompt=prompt,
                output=output,
                retry=retry,
                timeout=timeout,
            )
        )

    def tool(
        self,
        name: str,
        tool: Any,
        *,
        args: Callable[[Any], Mapping[str, Any]] | None = None,
        output: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> None:
        """Add a tool call: ``tool(**args(state))`` (arguments validated against its schema)."""
        from openheim.tools._tool import Tool

        if not isinstance(tool, Tool):
            if not callable(tool):
                raise WorkflowDefinitionError(
                    f"wf.tool({name!r}, ...) needs an @oh.tool or a function, got {tool!r}"
                )
            tool = Tool(tool)
        self._add(
            Node(name, "tool", fn=tool, args=args, output=output, retry=retry, timeout=timeout)
        )

    def branch(
        self,
        name: str,
        fn: Callable[[Any], Any],
        targets: Iterable[str] | Mapping[str, str] | None = None,
    ) -> None:
        """Add a branch: ``fn(state)`` returns the next node's name (or a label of
        ``targets``, a list of them to run in parallel, or ``oh.END``)."""
        if not callable(fn):
            raise WorkflowDefinitionError(f"branch {name!r} needs a function of the state")
        self._add(Node(name, "branch", router=fn, targets=_targets(targets)))

    def map(
        self,
        name: str,
        over: str | Callable[[Any], Iterable[Any]],
        do: Any,
        *,
        output: str,
        reduce: Callable[[list[Any]], Any] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> None:
        """Add a map: ``do`` runs on every item of ``over`` (a list field's name, or a
        function of the state) in parallel, each result checkpointed; then the join
        writes ``reduce(results)`` (the list of results, in item order, by default)
        into ``output``. ``do`` is ``fn(item)`` or ``fn(item, state)``, sync or
        async, or an Agent (prompted with ``str(item)``)."""
        if isinstance(over, str):
            field = over
            over = lambda s: getattr(s, field)  # noqa: E731
            if field not in self.spec.fields:
                raise WorkflowDefinitionError(
                    f"map {name!r}: over={field!r} is not a field of {self.spec.name}"
                )
        if not callable(over):
            raise WorkflowDefinitionError(f"map {name!r}: over must be a field name or function")
        takes_state = False
        fn = None
        if callable(getattr(do, "run", None)) and callable(getattr(do, "stream", None)):
            pass  # an Agent
        elif callable(do):
            from openheim.tools._tool import Tool

            takes_state = arity(do) >= 2
            # An @oh.tool is a sync callable object even around an async function: its
            # function says whether the items are awaited.
            fn = do.function if isinstance(do, Tool) else do
        else:
            raise WorkflowDefinitionError(f"map {name!r}: do must be a function or an Agent")
        self._add(
            Node(
                name,
                "map",
                over=over,
                do=do,
                fn=fn,
                takes_state=takes_state,
                output=output,
                reduce=reduce,
                retry=retry,
                timeout=timeout,
            )
        )

    def approval(
        self,
        name: str,
        *,
        payload: Callable[[Any], Any] | None = None,
        output: str | None = None,
        deadline: float | None = None,
        on_deadline: Literal["reject", "escalate"] = "reject",
        escalate_to: str | None = None,
        on_approve: str | None = None,
        on_reject: str | None = None,
    ) -> None:
        """Add an approval: the run waits, holding nothing, until ``approve(id, ...)``.

        ``payload(state)`` is shown to whoever decides; the :class:`Decision`
        goes to field ``output``; an approval's ``edits`` are applied to the
        state. ``deadline`` (seconds after the request) auto-rejects, or with
        ``on_deadline="escalate"`` continues at ``escalate_to``. ``on_approve``
        / ``on_reject`` pick the next node by the decision (else the edges).
        """
        if on_deadline not in ("reject", "escalate"):
            raise WorkflowDefinitionError(
                f"approval {name!r}: on_deadline is 'reject' or 'escalate', got {on_deadline!r}"
            )
        if on_deadline == "escalate" and escalate_to is None:
            raise WorkflowDefinitionError(
                f"approval {name!r}: on_deadline='escalate' needs escalate_to=<node>"
            )
        if deadline is not None and not deadline > 0:
            raise WorkflowDefinitionError(f"approval {name!r}: deadline must be positive seconds")
        targets = {
            k: v
            for k, v in (("approve", on_approve), ("reject", on_reject), ("escalate", escalate_to))
            if v is not None
        }
        self._add(
            Node(
                name,
                "approval",
                payload=payload,
                output=output,
                deadline=deadline,
                on_deadline=on_deadline,
                escalate_to=escalate_to,
                targets=targets or None,
            )
        )

    def subworkflow(
        self,
        name: str,
        workflow: Any,
        *,
        input: Callable[[Any], Any] | None = None,
        output: Callable[[Any], Mapping[str, Any]] | None = None,
        writes: Iterable[str] | None = None,
    ) -> None:
        """Add a sub-workflow: ``workflow`` runs on ``input(state)`` as a child run
        (checkpointed in the same store); ``output(child_state)`` returns the updates."""
        if not isinstance(workflow, Graph):
            raise WorkflowDefinitionError(
                f"subworkflow {name!r} needs an oh.Workflow, got {type(workflow).__name__}"
            )
        if workflow is self:
            raise WorkflowDefinitionError(f"subworkflow {name!r}: a workflow cannot contain itself")
        self._add(
            Node(
                name,
                "workflow",
                sub=workflow,
                input=input,
                fn=output,
                writes=frozenset(writes) if writes is not None else None,
            )
        )

    # -- edges -------------------------------------------------------------------------

    def edge(
        self,
        source: str | tuple[str, ...] | list[str],
        target: str | Callable[[Any], Any],
        *,
        targets: Iterable[str] | Mapping[str, str] | None = None,
    ) -> None:
        """``edge("a", "b")``: b runs after a. ``edge(("a", "b"), "c")``: c runs once
        both a and b have finished. ``edge("a", fn, targets=[...])``: a conditional
        edge, the next node is ``fn(state)`` (as for :meth:`branch`)."""
        self._validated = False
        if callable(target):
            if not isinstance(source, str):
                raise WorkflowDefinitionError("a conditional edge starts at one node")
            node = self.nodes.get(source)
            if node is None:
                raise WorkflowDefinitionError(
                    f"edge from unknown node {source!r}; add the node before its edges"
                )
            if node.router is not None:
                raise WorkflowDefinitionError(f"node {source!r} already has a conditional edge")
            node.router = target
            node.fast = node.fast_async = False
            node.targets = _targets(targets)
            return
        if not isinstance(target, str):
            raise WorkflowDefinitionError(f"an edge target is a node name, got {target!r}")
        if isinstance(source, str):
            sources: tuple[str, ...] = (source,)
        else:
            sources = tuple(source)
            if len(sources) > 1:
                if target in self.joins:
                    raise WorkflowDefinitionError(f"node {target!r} already has a joining edge")
                self.joins[target] = frozenset(sources)
        for s in sources:
            out = self.edges.setdefault(s, [])
            if target not in out:
                out.append(target)

    @property
    def start(self) -> str | None:
        """The first node: the first one added unless set."""
        return self._start_node if self._start_node is not None else next(iter(self.nodes), None)

    @start.setter
    def start(self, name: str) -> None:
        self._start_node = name
        self._validated = False

    # -- validation --------------------------------------------------------------------

    def validate(self) -> None:
        """Check the graph; raise WorkflowDefinitionError naming every problem found."""
        if self._validated:
            return
        problems: list[str] = []
        nodes = self.nodes
        fields = self.spec.fields
        if not nodes:
            raise WorkflowDefinitionError(f"workflow {self.name!r} has no nodes; add a step")
        start = self.start
        if start not in nodes:
            problems.append(f"the start node {start!r} is not a node")
        known = ", ".join(nodes)
        for src, dsts in self.edges.items():
            if src not in nodes:
                problems.append(f"an edge starts at unknown node {src!r} (nodes: {known})")
            for d in dsts:
                if d != END and d not in nodes:
                    problems.append(f"edge {src!r} -> {d!r}: unknown node {d!r} (nodes: {known})")
        for target, srcs in self.joins.items():
            for s in srcs:
                if s not in nodes:
                    problems.append(f"the join into {target!r} waits for unknown node {s!r}")
        for node in nodes.values():
            if node.targets:
                for label, t in node.targets.items():
                    if t != END and t not in nodes:
                        problems.append(
                            f"node {node.name!r}: target {label!r} -> unknown node {t!r}"
                        )
            if node.router is not None and self.edges.get(node.name) and node.kind != "branch":
                problems.append(
                    f"node {node.name!r} has both a conditional edge and plain edges; "
                    "let the condition return every next node"
                )
            if node.kind == "branch" and self.edges.get(node.name):
                problems.append(
                    f"branch {node.name!r} has plain edges; a branch's function picks its next node"
                )
            for w in sorted(node.writes or ()):
                if w not in fields:
                    problems.append(
                        f"node {node.name!r} writes {w!r}, which is not a field of "
                        f"{self.spec.name} (fields: {', '.join(fields)})"
                    )
            if node.kind == "workflow":
                try:
                    node.sub.validate()
                except WorkflowDefinitionError as exc:
                    problems.append(f"sub-workflow {node.name!r}: {exc}")
        if not problems and start in nodes:
            problems += self._unreachable(start)
            problems += self._parallel_writes()
        if problems:
            listed = "\n  - ".join(problems)
            raise WorkflowDefinitionError(f"workflow {self.name!r} is invalid:\n  - {listed}")
        self._validated = True

    def _successors(self, node: Node) -> list[str] | None:
        """Where ``node`` may lead; None if unknown (a condition without declared targets)."""
        out = list(self.edges.get(node.name, ()))
        if node.router is not None:
            if node.targets is None:
                return None
            out += node.targets.values()
        elif node.targets:
            out += node.targets.values()
        return [t for t in out if t != END]

    def _unreachable(self, start: str) -> list[str]:
        seen = {start}
        todo = [start]
        while todo:
            nxt = self._successors(self.nodes[todo.pop()])
            if nxt is None:
                return []  # a condition may go anywhere
            for t in nxt:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        missing = [n for n in self.nodes if n not in seen]
        return [
            f"node {n!r} can never run: no edge from the start node {start!r} leads to it "
            "(add an edge, or declare the targets of the branches that pick it)"
            for n in missing
        ]

    def _parallel_writes(self) -> list[str]:
        """Nodes that may run in the same superstep and write one field without a reducer."""
        problems: list[str] = []
        reducers = self.spec.reducers
        reported: set[tuple[str, str, str]] = set()
        limit = len(self.nodes)

        def levels(first: str) -> list[set[str]]:
            out = [{first}]
            for _ in range(limit):
                nxt: set[str] = set()
                for n in out[-1]:
                    nxt.update(self.edges.get(n, ()))
                nxt.discard(END)
                if not nxt:
                    break
                out.append(nxt)
            return out

        for src, dsts in self.edges.items():
            branches = [d for d in dsts if d != END]
            if len(branches) < 2:
                continue
            lv = {b: levels(b) for b in branches}
            for i, b1 in enumerate(branches):
                for b2 in branches[i + 1 :]:
                    for l1, l2 in zip(lv[b1], lv[b2], strict=False):
                        for a in l1:
                            for b in l2:
                                if a == b:
                                    continue
                                wa, wb = self.nodes[a].writes, self.nodes[b].writes
                                for f in sorted((wa or frozenset()) & (wb or frozenset())):
                                    key = (min(a, b), max(a, b), f)
                                    if f in reducers or key in reported:
                                        continue
                                    reported.add(key)
                                    problems.append(
                                        f"nodes {a!r} and {b!r} can run in parallel (after "
                                        f"{src!r}) and both write {self.spec.name}.{f}, which has "
                                        "no reducer: annotate it Annotated[..., oh.reducer(fn)] "
                                        "or pass reducers={...}"
                                    )
        return problems

    # -- records -----------------------------------------------------------------------

    def load_record(self, rec: Record) -> Record:
        """A decoded record with its updates converted to the state's field types."""
        if type(rec) in (StepDone, Decided) and rec.updates:  # type: ignore[union-attr]
            rec.updates = self.spec.load_updates(rec.updates)  # type: ignore[union-attr]
        return rec

    def definitions(self) -> dict[str, Graph]:
        """This workflow and its sub-workflows (recursively), by name."""
        out: dict[str, Graph] = {self.name: self}
        for node in self.nodes.values():
            if node.kind == "workflow":
                for k, v in node.sub.definitions().items():
                    out.setdefault(k, v)
        return out


def node_is_async(node: Node) -> bool:
    return node.is_async or is_async(node.fn)
