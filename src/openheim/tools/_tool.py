"""``Tool`` and the ``@tool`` decorator."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

from openheim.errors import ConfigError
from openheim.models.base import ToolDefinition
from openheim.tools._context import RunContext
from openheim.tools._docstring import parse_docstring
from openheim.tools._schema import build_arguments

__all__ = ["Tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])
Executor = Literal["thread", "process"]


class Tool:
    """A function the model may call, with its name, description and argument schema.

    Made by :func:`tool`; calling the Tool calls the function unchanged, so
    decorated functions stay testable on their own.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        timeout: float | None = None,
        retries: int = 2,
        parameters: dict[str, Any] | None = None,
        executor: Executor = "thread",
        _localns: dict[str, Any] | None = None,
    ) -> None:
        if not callable(function):
            raise ConfigError(f"a tool needs a function, got {type(function).__name__}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"tool timeout must be positive seconds or None, got {timeout!r}")
        if retries < 0:
            raise ConfigError(f"tool retries must be >= 0, got {retries!r}")
        self.function = function
        self.name = name or getattr(function, "__name__", "") or type(function).__name__
        documented: Any = function
        while isinstance(documented, functools.partial):
            documented = documented.func
        doc_description, param_docs = parse_docstring(inspect.getdoc(documented))
        self.description = description if description is not None else doc_description
        self.requires_approval = requires_approval
        self.timeout = timeout
        self.retries = retries
        self.is_async = _is_async_callable(function)
        if executor not in ("thread", "process"):
            raise ConfigError(
                f"tool executor is 'thread' (sync tools in the loop's thread pool) or "
                f"'process' (a pool of worker processes, for CPU-heavy tools); got {executor!r}"
            )
        self.executor: Executor = executor
        if executor == "process":
            from openheim.tools._process import check_process_function

            check_process_function(function, self.name)
        if parameters is not None:
            # A schema given by hand (MCP tools): arguments pass through unvalidated,
            # the callee validates them.
            self._arguments = None
            schema = parameters
        else:
            self._arguments = build_arguments(function, self.name, param_docs, _localns)
            schema = self._arguments.schema
            if executor == "process" and self._arguments.takes_ctx:
                raise ConfigError(
                    f'tool {self.name!r}: executor="process" cannot pass the RunContext to '
                    "another process; drop the ctx parameter or use the thread executor"
                )
        self.definition = ToolDefinition(self.name, self.description, schema)
        functools.update_wrapper(self, function)

    @property
    def takes_ctx(self) -> bool:
        return self._arguments is not None and self._arguments.takes_ctx

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return self.definition.parameters

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments, validated and with defaults filled in.

        Raises pydantic's ``ValidationError`` when they do not fit the schema.
        """
        if self._arguments is None:
            if not isinstance(arguments, dict):
                raise TypeError(f"arguments must be a JSON object, got {type(arguments).__name__}")
            return arguments
        return self._arguments.validate(arguments)

    def invoke(self, arguments: dict[str, Any], ctx: RunContext[Any] | None) -> Awaitable[Any]:
        """Call the function with validated ``arguments``: a coroutine, or a thread-pool future."""
        spec = self._arguments
        args: tuple[Any, ...] = ()
        if spec is not None:
            if spec.takes_ctx:
                args = (ctx,)
            if spec.positional:
                arguments = dict(arguments)
                args += tuple(arguments.pop(n) for n in spec.positional if n in arguments)
        if self.is_async:
            coro: Awaitable[Any] = self.function(*args, **arguments)
            return coro
        if self.executor == "process":
            from openheim.tools._process import default_pool

            return default_pool().run(
                self.function, args, arguments, timeout=self.timeout, name=self.name
            )
        # Sync tools run in the loop's default thread pool, in a copy of the
        # caller's context (as asyncio.to_thread does) so contextvars carry over.
        call = functools.partial(contextvars.copy_context().run, self.function, *args, **arguments)
        return asyncio.get_running_loop().run_in_executor(None, call)


def _is_async_callable(function: Any) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - async __call__ on instances
    )


@overload
def tool(function: F, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    retries: int = 2,
    executor: Executor = "thread",
) -> Callable[[F], Tool]: ...


def tool(
    function: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
    retries: int = 2,
    executor: Executor = "thread",
) -> Tool | Callable[[F], Tool]:
    """Make a function (sync or async) into a :class:`Tool`.

    ``@tool`` or ``@tool(name=..., requires_approval=True, timeout=5)``. The
    JSON schema comes from the annotated parameters and the docstring (its
    summary and the ``Args:`` descriptions); a first parameter annotated
    ``RunContext`` receives the run's context and is not shown to the model.
    ``retries`` is how often the model may send invalid arguments in one run.
    ``executor="process"`` runs a sync, module-level tool in a pool of worker
    processes (spawned, not forked) instead of the loop's thread pool: for
    CPU-heavy tools. Its arguments and result must pickle; a timeout kills
    the worker, and a worker that dies fails only its call with a
    :class:`~openheim.errors.ToolError`.
    """
    # Annotations naming classes local to the caller's function resolve there.
    caller = sys._getframe(1)
    localns = dict(caller.f_locals) if caller.f_code.co_name != "<module>" else None

    def make(fn: F) -> Tool:
        return Tool(
            fn,
            name=name,
            description=description,
            requires_approval=requires_approval,
            timeout=timeout,
            retries=retries,
            executor=executor,
            _localns=localns,
        )

    if function is not None:
        return make(function)
    return make
