"""Node kinds of a workflow graph, and their per-node policies (retries, timeouts)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from openheim.errors import WorkflowDefinitionError

__all__ = ["END", "Node", "NodeKind", "Retry"]

END = "__end__"
"""A branch target that ends the path it is on."""

NodeKind = Literal["step", "agent", "tool", "branch", "map", "approval", "workflow"]


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """Retry policy of a node: ``attempts`` in all, waiting ``backoff`` seconds after the
    first failure, times ``multiplier`` after each next one (at most ``max_backoff``);
    only exceptions that are instances of ``on`` are retried."""

    attempts: int = 3
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 30.0
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise WorkflowDefinitionError(f"Retry.attempts must be >= 1, got {self.attempts}")
        if self.backoff < 0 or self.multiplier < 1:
            raise WorkflowDefinitionError(
                "Retry.backoff must be >= 0 and Retry.multiplier >= 1, got "
                f"{self.backoff} and {self.multiplier}"
            )

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure."""
        return float(min(self.max_backoff, self.backoff * self.multiplier ** (failures - 1)))


NO_RETRY = Retry(attempts=1, backoff=0.0)


def is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async __call__ on instances
    )


def arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` takes (for 1-or-2-argument callbacks)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def declared_writes(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keys of a TypedDict return annotation, if the step has one."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    keys = getattr(ret, "__annotations__", None) if typing.is_typeddict(ret) else None
    return frozenset(keys) if keys else None


class Node:
    """One node of a workflow graph (made by ``Workflow.step``, ``.agent``, ``.map``, ...)."""

    __slots__ = (
        "agent",
        "args",
        "deadline",
        "do",
        "escalate_to",
        "fast",
        "fast_async",
        "fn",
        "input",
        "is_async",
        "kind",
        "name",
        "on_deadline",
        "output",
        "over",
        "payload",
        "prompt",
        "reduce",
        "retry",
        "router",
        "sub",
        "takes_state",
        "targets",
        "thread",
        "timeout",
        "writes",
    )

    def __init__(self, name: str, kind: NodeKind, **kw: Any) -> None:
        if not isinstance(name, str) or not name or name == END or ":" in name:
            raise WorkflowDefinitionError(
                f"a node name is a non-empty string without ':' other than {END!r}, got {name!r}"
            )
        self.name = name
        self.kind: NodeKind = kind
        self.fn: Callable[..., Any] | None = kw.get("fn")
        self.is_async = bool(self.fn is not None and is_async(self.fn))
        self.thread: bool = kw.get("thread", False)
        self.output: str | None = kw.get("output")
        self.retry: Retry = kw.get("retry") or NO_RETRY
        self.timeout: float | None = kw.get("timeout")
        self.router: Callable[[Any], Any] | None = kw.get("router")
        self.targets: dict[str, str] | None = kw.get("targets")
        self.agent: Any = kw.get("agent")
        self.prompt: Callable[[Any], Any] | None = kw.get("prompt")
        self.args: Callable[[Any], Any] | None = kw.get("args")
        self.over: Callable[[Any], Any] | None = kw.get("over")
        self.do: Any = kw.get("do")
        self.takes_state: bool = kw.get("takes_state", False)
        self.reduce: Callable[[list[Any]], Any] | None = kw.get("reduce")
        self.payload: Callable[[Any], Any] | None = kw.get("payload")
        self.deadline: float | None = kw.get("deadline")
        self.on_deadline: Literal["reject", "escalate"] = kw.get("on_deadline", "reject")
        self.escalate_to: str | None = kw.get("escalate_to")
        self.sub: Any = kw.get("sub")
        self.input: Callable[[Any], Any] | None = kw.get("input")
        writes: frozenset[str] | None = kw.get("writes")
        if writes is None and self.output is not None:
            writes = frozenset((self.output,))
        self.writes = writes
        # A plain step: called (sync) or awaited (async) inline, no coroutine of our own.
        plain = kind == "step" and self.timeout is None and self.router is None
        self.fast = plain and not self.is_async and not self.thread
        self.fast_async = plain and self.is_async
        if self.timeout is not None and not self.timeout > 0:
            raise WorkflowDefinitionError(
                f"node {name!r}: timeout must be positive seconds or None, got {self.timeout!r}"
            )

    def __repr__(self) -> str:
        return f"Node({self.name!r}, kind={self.kind!r})"
