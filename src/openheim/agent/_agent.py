"""``Agent``: instructions, tools and a model, run as a tool loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import msgspec

from openheim.agent._loop import _Run
from openheim.agent._output import OutputSpec
from openheim.agent.events import AgentEvent, Done
from openheim.agent.result import Approval, RunResult, RunState
from openheim.errors import ApprovalError, ConfigError
from openheim.messages import Message
from openheim.models.base import Model, ModelSettings, ToolDefinition
from openheim.sessions import HistoryStore, InMemoryHistory, TokenCounter, estimate_tokens
from openheim.tools._context import RunContext
from openheim.tools._tool import Tool
from openheim.tools._toolset import Toolset

__all__ = ["Agent"]

# Run ids: random per process (so ids from different processes do not collide),
# then a counter (a syscall per run would cost more than the rest of the id).
_RUN_PREFIX = os.urandom(6).hex()
_run_numbers = itertools.count(1)

Instructions = str | Callable[..., Any]
ApprovalDecision = bool | Approval


def _as_settings(value: ModelSettings | Mapping[str, Any] | None) -> ModelSettings:
    if value is None:
        return ModelSettings()
    if isinstance(value, ModelSettings):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - set(ModelSettings.__struct_fields__)
        if unknown:
            raise ConfigError(
                f"unknown model settings {sorted(unknown)}; the settings are "
                f"{', '.join(ModelSettings.__struct_fields__)}"
            )
        try:
            return msgspec.convert(dict(value), ModelSettings)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid model settings: {exc}") from None
    raise ConfigError(
        f"model_settings must be a ModelSettings or a dict, got {type(value).__name__}"
    )


def _check_model(model: Any) -> None:
    """Fail at construction on a model string no provider accepts (without importing it)."""
    from openheim.models import _PROVIDERS

    provider, sep, name = model.partition(":")
    if not sep or not name or provider not in _PROVIDERS:
        raise ConfigError(
            f"unknown model {model!r}: use 'openai:<model>', 'anthropic:<model>' or "
            "'llama:/path/to/model.gguf', or pass a Model instance"
        )


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds or None, got {value!r}")


class Agent:
    """An LLM agent: a model, instructions and tools, run as a tool loop.

    ``model`` is a ``"provider:name"`` string (resolved on first run) or a
    :class:`~openheim.models.Model`. ``instructions`` is a string, or a
    function of the :class:`RunContext` (sync or async) returning one; it is
    sent as the system message and never stored in session history.
    ``tools`` holds functions, :class:`Tool` objects, :class:`Toolset` and MCP
    servers. ``output_type`` (a pydantic model, dataclass, TypedDict or
    JSON-compatible type) makes the answer structured and validated.

    Limits: ``max_iterations`` model requests per run; ``tool_concurrency``
    tool calls in flight per turn; ``model_timeout`` / ``tool_timeout`` (per
    call, a tool's own ``timeout`` wins) and ``run_timeout`` in seconds;
    ``output_retries`` invalid answers sent back before ``OutputValidationError``.
    ``history`` stores sessions (in memory by default); ``count_tokens``
    estimates a message's tokens when trimming history to the context window.

    A run adds its messages to the session only when it finishes: a run that
    fails, times out, is cancelled (``task.cancel()`` also cancels its model
    call and tool calls) or is paused for approval leaves the history as it
    was, so it never holds a tool call without its result. Concurrent runs on
    one session each see the history as it was when they started.
    """

    def __init__(
        self,
        model: str | Model,
        *,
        name: str = "agent",
        instructions: Instructions | None = None,
        tools: Sequence[Any] = (),
        output_type: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        max_iterations: int = 20,
        tool_concurrency: int = 8,
        model_timeout: float | None = None,
        tool_timeout: float | None = None,
        run_timeout: float | None = None,
        output_retries: int = 2,
        history: HistoryStore | None = None,
        count_tokens: TokenCounter | None = None,
    ) -> None:
        if isinstance(model, str):
            _check_model(model)
            self._model: Model | None = None
        elif isinstance(model, Model):
            self._model = model
        else:
            raise ConfigError(
                f"model must be a 'provider:name' string or a Model, got {type(model).__name__}"
            )
        self._model_spec = model
        if max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {max_iterations!r}")
        if tool_concurrency < 1:
            raise ConfigError(f"tool_concurrency must be >= 1, got {tool_concurrency!r}")
        if output_retries < 0:
            raise ConfigError(f"output_retries must be >= 0, got {output_retries!r}")
        _positive("model_timeout", model_timeout)
        _positive("tool_timeout", tool_timeout)
        _positive("run_timeout", run_timeout)
        self.name = name
        self.max_iterations = max_iterations
        self.tool_concurrency = tool_concurrency
        self.model_timeout = model_timeout
        self.tool_timeout = tool_timeout
        self.run_timeout = run_timeout
        self.output_retries = output_retries
        self.model_settings = _as_settings(model_settings)
        self.history: HistoryStore = history if history is not None else InMemoryHistory()
        self._count_tokens: TokenCounter = count_tokens or estimate_tokens
        self._output = OutputSpec(output_type)
        self.output_type = output_type

        self._instructions = instructions
        self._system: Message | None = None
        self._instructions_async = False
        self._instructions_takes_ctx = False
        if isinstance(instructions, str):
            self._system = Message("system", instructions) if instructions else None
        elif instructions is not None:
            if not callable(instructions):
                raise ConfigError(
                    f"instructions must be a string or a function, got {type(instructions).__name__}"
                )
            self._instructions_async = inspect.iscoroutinefunction(instructions)
            try:
                self._instructions_takes_ctx = bool(inspect.signature(instructions).parameters)
            except (TypeError, ValueError):
                self._instructions_takes_ctx = True

        self._toolset = Toolset()
        self._providers: list[Any] = []
        for item in tools:
            if isinstance(item, Toolset):
                for t in item:
                    self._toolset.add(t)
            elif not isinstance(item, Tool) and hasattr(item, "list_tools"):
                self._providers.append(item)
            else:
                self._toolset.add(item)
        self._tool_map: dict[str, Tool] = {t.name: t for t in self._toolset}
        self._definitions: list[ToolDefinition] = self._toolset.definitions

    def __repr__(self) -> str:
        model = self._model.name if self._model is not None else self._model_spec
        return f"Agent(name={self.name!r}, model={model!r}, tools={list(self._tool_map)!r})"

    @property
    def model(self) -> Model:
        """The model (a model string is resolved, and its connector imported, here)."""
        if self._model is None:
            from openheim.models import infer_model

            self._model = infer_model(self._model_spec)
        return self._model

    @property
    def tools(self) -> list[Tool]:
        """The agent's own tools (MCP servers' tools are listed when a run starts)."""
        return list(self._tool_map.values())

    # ---- running ----------------------------------------------------------------------

    async def run(
        self,
        prompt: str | None = None,
        *,
        session: str | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
    ) -> RunResult:
        """Run the agent on ``prompt`` until it answers (or pauses for an approval).

        ``session`` names a conversation: its history is loaded first and this
        run's messages are added when it finishes. ``deps`` reaches tools and
        instructions as ``ctx.deps``. ``model_settings`` override the agent's
        for this run. ``resume`` continues a paused run (see :meth:`resume`).
        """
        run = await self._start(prompt, session, deps, model_settings, resume, approvals, False)
        result: RunResult | None = None
        async for event in run.events():
            if type(event) is Done:
                result = event.result
        assert result is not None
        return result

    async def resume(
        self,
        result: RunResult | RunState,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        *,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Continue a run paused with ``stop_reason == "approval_required"``.

        ``approvals`` maps call ids to True/False or an :class:`Approval` (with
        a reason), in addition to decisions made with ``result.approve(id)`` /
        ``result.reject(id, reason)``; every pending call needs one. Approved
        calls run, rejected ones report the rejection to the model, and the
        loop goes on. A paused run can be resumed once.
        """
        return await self.run(
            deps=deps, model_settings=model_settings, resume=result, approvals=approvals
        )

    def run_sync(
        self,
        prompt: str | None = None,
        *,
        session: str | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
    ) -> RunResult:
        """:meth:`run` from synchronous code (in a new event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                self.run(
                    prompt,
                    session=session,
                    deps=deps,
                    model_settings=model_settings,
                    resume=resume,
                    approvals=approvals,
                )
            )
        raise RuntimeError(
            "Agent.run_sync() was called from a running event loop; use `await agent.run(...)` there"
        )

    async def stream(
        self,
        prompt: str | None = None,
        *,
        session: str | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run like :meth:`run`, yielding events as they happen; the last is ``Done``.

        Stopping the iteration early abandons the run: nothing is added to the
        session's history.
        """
        run = await self._start(prompt, session, deps, model_settings, resume, approvals, True)
        async with contextlib.aclosing(run.events()) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        """Close the model's connections and the MCP servers' sessions."""
        for provider in self._providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        if self._model is not None:
            await self._model.aclose()

    # ---- internals --------------------------------------------------------------------

    async def _start(
        self,
        prompt: str | None,
        session: str | None,
        deps: Any,
        model_settings: ModelSettings | Mapping[str, Any] | None,
        resume: RunResult | RunState | None,
        approvals: Mapping[str, ApprovalDecision] | None,
        streaming: bool,
    ) -> _Run:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.run_timeout if self.run_timeout is not None else None
        model = self._model if self._model is not None else self.model
        settings = self.model_settings
        if model_settings is not None:
            settings = settings.merged(_as_settings(model_settings))
        if resume is not None:
            if prompt is not None:
                raise ConfigError("give either a prompt or resume=, not both")
            state = self._resumable(resume, approvals)
        else:
            if not isinstance(prompt, str):
                raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
            state = RunState(
                run_id=f"run-{_RUN_PREFIX}-{next(_run_numbers)}",
                agent=self.name,
                session=session,
                messages=[Message("user", prompt)],
            )
        session = state.session
        history = await self.history.load(session) if session is not None else []
        if self._providers:
            tools, definitions = await self._all_tools()
        else:
            tools, definitions = self._tool_map, self._definitions
        system = self._system
        ctx: RunContext[Any] | None = None
        if self._instructions is not None and not isinstance(self._instructions, str):
            ctx = RunContext(
                deps,
                agent=self.name,
                run_id=state.run_id,
                session=session,
                messages=state.messages,
                usage=state.usage,
            )
            system = await self._render_instructions(ctx)
        return _Run(
            self,
            model,
            state,
            deps,
            ctx,
            settings,
            history,
            system,
            tools,
            definitions,
            streaming,
            resume is not None,
            deadline,
            loop,
        )

    async def _render_instructions(self, ctx: RunContext[Any]) -> Message | None:
        fn: Callable[..., Any] = self._instructions  # type: ignore[assignment]
        value = fn(ctx) if self._instructions_takes_ctx else fn()
        if self._instructions_async or inspect.isawaitable(value):
            value = await value
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(
                f"the instructions function of agent {self.name!r} returned "
                f"{type(value).__name__}; it must return a string"
            )
        return Message("system", value)

    async def _all_tools(self) -> tuple[dict[str, Tool], list[ToolDefinition]]:
        tools = dict(self._tool_map)
        for provider in self._providers:
            for t in await provider.list_tools():
                if t.name in tools and tools[t.name] is not t:
                    raise ConfigError(
                        f"agent {self.name!r}: two tools are named {t.name!r} (one from "
                        f"{provider!r}); give the MCP server a tool_prefix= or rename the tool"
                    )
                tools[t.name] = t
        return tools, [t.definition for t in tools.values()]

    def _resumable(
        self,
        resume: RunResult | RunState,
        approvals: Mapping[str, ApprovalDecision] | None,
    ) -> RunState:
        original = resume.state if isinstance(resume, RunResult) else resume
        if not isinstance(original, RunState):
            raise ConfigError(
                f"resume= takes a RunResult or a RunState, got {type(resume).__name__}"
            )
        if not original.pending:
            raise ApprovalError(
                f"run {original.run_id!r} is not waiting for approvals (it has finished, or "
                "was resumed already)"
            )
        if original.agent != self.name:
            raise ApprovalError(
                f"run {original.run_id!r} belongs to agent {original.agent!r}, not {self.name!r}"
            )
        for call_id, decision in (approvals or {}).items():
            original.decide(
                call_id, decision if isinstance(decision, Approval) else Approval(bool(decision))
            )
        undecided = [p.id for p in original.pending if p.id not in original.decisions]
        if undecided:
            raise ApprovalError(
                f"run {original.run_id!r}: tool call(s) {', '.join(undecided)} have no decision; "
                "approve or reject every pending call (result.approve(id) / "
                "result.reject(id, reason), or approvals={id: True/False}) before resuming"
            )
        # Continue on a copy so the paused result stays as it was; the original
        # is marked settled so that it cannot be resumed twice.
        state = msgspec.structs.replace(
            original,
            messages=list(original.messages),
            tool_retries=dict(original.tool_retries),
            pending=list(original.pending),
            completed=dict(original.completed),
            decisions=dict(original.decisions),
        )
        original.pending = []
        return state
