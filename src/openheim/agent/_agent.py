"""``Agent``: instructions, tools and a model, run as a tool loop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from openheim.agent._loop import _Run
from openheim.agent._output import OutputSpec
from openheim.agent._settings import RunSettings, as_model_settings
from openheim.agent._sync import run_in_thread_loop
from openheim.agent.events import AgentEvent, Done, result_of
from openheim.agent.result import RunResult
from openheim.errors import ApprovalError, ConfigError
from openheim.messages import Message
from openheim.models.base import Model, ModelSettings, ToolDefinition
from openheim.sessions import TokenCounter, estimate_tokens
from openheim.snapshot import Approval, RunState, new_run_id, state_of, valid_run_id
from openheim.stores.history import HistoryStore, InMemoryHistory
from openheim.tools._context import RunContext
from openheim.tools._tool import Tool
from openheim.tools._toolset import Toolset

if TYPE_CHECKING:
    from openheim.stores.checkpoint import Checkpointer

__all__ = ["Agent"]

logger = logging.getLogger("openheim.agent")

Instructions = str | Callable[..., Any]


class _Unset:
    """The default of reload()'s arguments: "leave this as it is"."""


_UNSET: Any = _Unset()
ApprovalDecision = bool | Approval


def _check_model(model: Any) -> None:
    """Fail at construction on a model string no provider accepts (without importing it)."""
    from openheim.models import _PROVIDERS

    provider, sep, name = model.partition(":")
    if not sep or not name or provider not in _PROVIDERS:
        raise ConfigError(
            f"unknown model {model!r}: use 'openai:<model>', 'anthropic:<model>' or "
            "'llama:/path/to/model.gguf', or pass a Model instance"
        )


_T = TypeVar("_T")


class _Setting(Generic[_T]):
    """An ``Agent`` attribute that is one field of its :class:`RunSettings`: reading it
    reads the field; setting it makes new settings with the field changed (validated)."""

    def __init__(self, field: str) -> None:
        self.field = field

    @overload
    def __get__(self, obj: None, owner: type) -> _Setting[_T]: ...
    @overload
    def __get__(self, obj: Agent, owner: type) -> _T: ...
    def __get__(self, obj: Agent | None, owner: type) -> _T | _Setting[_T]:
        if obj is None:
            return self
        value: _T = getattr(obj._settings, self.field)
        return value

    def __set__(self, obj: Agent, value: _T) -> None:
        obj._replace(**{self.field: value})


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
    ``history`` stores sessions: in memory by default, or a store URL
    (``"sqlite:///state.db"``, ``"redis://..."``, ...) or any
    :class:`HistoryStore` such as ``openheim.stores.open_history(url)``;
    ``count_tokens`` estimates a message's tokens when trimming history to
    the context window. ``checkpointer`` (an :class:`openheim.stores.Checkpointer`,
    or True for one on the history's store) records every step of every run
    durably so that :meth:`recover` can finish them after a crash;
    :meth:`reload` changes the definition without losing sessions.

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
        history: HistoryStore | str | None = None,
        count_tokens: TokenCounter | None = None,
        checkpointer: Checkpointer | bool | None = None,
    ) -> None:
        self._set_model(model)
        self.settings = RunSettings(
            agent=name,
            max_iterations=max_iterations,
            tool_concurrency=tool_concurrency,
            model_timeout=model_timeout,
            tool_timeout=tool_timeout,
            run_timeout=run_timeout,
            output_retries=output_retries,
            model_settings=as_model_settings(model_settings),
        )
        if isinstance(history, str):
            from openheim.stores import open_history

            self.history: HistoryStore = open_history(history)
        else:
            self.history = history if history is not None else InMemoryHistory()
        if checkpointer is True:
            store = self.history.store
            if store is None:
                raise ConfigError(
                    "checkpointer=True keeps checkpoints in the history's store, but this "
                    "history has none: give history='sqlite:///path.db' (or another store URL) "
                    "or checkpointer=Checkpointer(store)"
                )
            from openheim.stores.checkpoint import Checkpointer as _Checkpointer

            checkpointer = _Checkpointer(store)
        self.checkpointer: Checkpointer | None = checkpointer or None
        self._count_tokens: TokenCounter = count_tokens or estimate_tokens
        self._output = OutputSpec(output_type)
        self.output_type = output_type
        self._set_instructions(instructions)
        self._set_tools(tools)

    # The run settings, one attribute each (setting one validates it).

    @property
    def settings(self) -> RunSettings:
        """The settings every run starts from (frozen; runs may override ``model_settings``)."""
        return self._settings

    @settings.setter
    def settings(self, value: RunSettings) -> None:
        if not isinstance(value, RunSettings):
            raise ConfigError(f"settings must be a RunSettings, got {type(value).__name__}")
        self._settings = value
        self._streaming = msgspec.structs.replace(value, streaming=True)

    def _replace(self, **changes: Any) -> None:
        self.settings = RunSettings(**{**msgspec.structs.asdict(self._settings), **changes})

    name = _Setting[str]("agent")
    max_iterations = _Setting[int]("max_iterations")
    tool_concurrency = _Setting[int]("tool_concurrency")
    model_timeout = _Setting["float | None"]("model_timeout")
    tool_timeout = _Setting["float | None"]("tool_timeout")
    run_timeout = _Setting["float | None"]("run_timeout")
    output_retries = _Setting[int]("output_retries")

    @property
    def model_settings(self) -> ModelSettings:
        return self._settings.model_settings

    @model_settings.setter
    def model_settings(self, value: ModelSettings | Mapping[str, Any] | None) -> None:
        self._replace(model_settings=as_model_settings(value))

    def _set_model(self, model: str | Model) -> None:
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

    def _set_instructions(self, instructions: Instructions | None) -> None:
        system: Message | None = None
        is_async = takes_ctx = False
        if isinstance(instructions, str):
            system = Message("system", instructions) if instructions else None
        elif instructions is not None:
            if not callable(instructions):
                raise ConfigError(
                    f"instructions must be a string or a function, got {type(instructions).__name__}"
                )
            is_async = inspect.iscoroutinefunction(instructions)
            try:
                takes_ctx = bool(inspect.signature(instructions).parameters)
            except (TypeError, ValueError):
                takes_ctx = True
        self._instructions = instructions
        self._system = system
        self._instructions_async = is_async
        self._instructions_takes_ctx = takes_ctx

    def _set_tools(self, tools: Sequence[Any]) -> None:
        toolset = Toolset()
        providers: list[Any] = []
        for item in tools:
            if isinstance(item, Toolset):
                for t in item:
                    toolset.add(t)
            elif not isinstance(item, Tool) and hasattr(item, "list_tools"):
                providers.append(item)
            else:
                toolset.add(item)
        self._toolset = toolset
        self._providers = providers
        self._tool_map: dict[str, Tool] = {t.name: t for t in toolset}
        self._definitions: list[ToolDefinition] = toolset.definitions

    # ---- hot reload -------------------------------------------------------------------

    def reload(
        self,
        source: str | None = None,
        *,
        instructions: Instructions | _Unset | None = _UNSET,
        tools: Sequence[Any] | _Unset = _UNSET,
        model_settings: ModelSettings | Mapping[str, Any] | _Unset | None = _UNSET,
        model: str | Model | _Unset = _UNSET,
        output_type: Any = _UNSET,
    ) -> None:
        """Change the agent's definition in place; sessions and checkpoints are kept.

        Pass the parts that change (``instructions``, ``tools``,
        ``model_settings``, ``model``, ``output_type``), or ``source``: a
        ``"package.module:name"`` or ``"path/to/file.py:name"`` whose module is
        loaded afresh from disk and whose ``name`` is an :class:`Agent` (or a
        function returning one) to take the definition from. Every run that
        starts afterwards, in any session, uses the new definition; runs
        already in flight finish with the old one. Everything is validated
        before anything changes, so a bad reload leaves the agent as it was.
        """
        if source is not None:
            fresh = _load_agent(source)
            instructions, tools = fresh._instructions, [*fresh._toolset, *fresh._providers]
            model_settings, model = fresh.model_settings, fresh._model_spec
            output_type = fresh.output_type
        # Build everything on a scratch agent first: a bad value raises before any change.
        scratch = Agent.__new__(Agent)
        scratch._set_model(self._model_spec if isinstance(model, _Unset) else model)
        scratch._set_instructions(
            self._instructions if isinstance(instructions, _Unset) else instructions
        )
        scratch._set_tools(
            [*self._toolset, *self._providers] if isinstance(tools, _Unset) else tools
        )
        settings = (
            self.model_settings
            if isinstance(model_settings, _Unset)
            else as_model_settings(model_settings)
        )
        output = self._output if output_type is _UNSET else OutputSpec(output_type)
        # Swap in one step (no await in between: a run starting now sees old or new, not a mix).
        if not isinstance(model, _Unset):
            self._model, self._model_spec = scratch._model, scratch._model_spec
        self._instructions = scratch._instructions
        self._system = scratch._system
        self._instructions_async = scratch._instructions_async
        self._instructions_takes_ctx = scratch._instructions_takes_ctx
        self._toolset, self._providers = scratch._toolset, scratch._providers
        self._tool_map, self._definitions = scratch._tool_map, scratch._definitions
        self.model_settings = settings
        if output_type is not _UNSET:
            self._output, self.output_type = output, output_type

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
        message_history: Sequence[Message] | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run the agent on ``prompt`` until it answers (or pauses for an approval).

        ``session`` names a stored conversation: its history is loaded first
        and this run's messages are added when it finishes. Or
        ``message_history`` gives the conversation this run continues (a list
        of :class:`Message`, e.g. a client's chat so far), stored nowhere; not
        both. ``deps`` reaches tools and instructions as ``ctx.deps``.
        ``model_settings`` override the agent's for this run. ``run_id`` names
        the run (letters, digits, ``. _ : -``; generated if left out), also in
        its checkpoints. ``resume`` continues a paused run (see :meth:`resume`).
        """
        run = await self._start(
            prompt,
            self._run_settings(model_settings, False),
            session=session,
            message_history=message_history,
            deps=deps,
            resume=resume,
            approvals=approvals,
            run_id=run_id,
        )
        return await result_of(run.events())

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
        message_history: Sequence[Message] | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """:meth:`run` from synchronous code.

        Each thread keeps one event loop for all its ``run_sync`` calls (closed
        when the thread ends); RuntimeError if called where an event loop is
        running (``await agent.run(...)`` there).
        """
        return run_in_thread_loop(
            self.run(
                prompt,
                session=session,
                message_history=message_history,
                deps=deps,
                model_settings=model_settings,
                resume=resume,
                approvals=approvals,
                run_id=run_id,
            ),
            "Agent.run_sync()",
        )

    async def stream(
        self,
        prompt: str | None = None,
        *,
        session: str | None = None,
        message_history: Sequence[Message] | None = None,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        run_id: str | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run like :meth:`run`, yielding events as they happen; the last is ``Done``.

        Stopping the iteration early abandons the run: nothing is added to the
        session's history. ``await result_of(agent.stream(...))`` returns the
        run's result once the events are drained.
        """
        run = await self._start(
            prompt,
            self._run_settings(model_settings, True),
            session=session,
            message_history=message_history,
            deps=deps,
            resume=resume,
            approvals=approvals,
            run_id=run_id,
        )
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

    # ---- recovery ---------------------------------------------------------------------

    def _checkpointer(self) -> Checkpointer:
        if self.checkpointer is None:
            raise ConfigError(
                f"agent {self.name!r} has no checkpointer: create it with "
                "Agent(..., checkpointer=Checkpointer(store)) to recover runs"
            )
        return self.checkpointer

    async def unfinished_runs(self, *, min_idle: float = 0.0) -> list[str]:
        """Ids of this agent's checkpointed runs not running in this process (paused ones too).

        ``min_idle`` (seconds) leaves out runs checkpointed more recently than
        that: with several processes on one store, set it above your longest
        model or tool call so that runs still alive elsewhere are not taken.
        """
        ckpt = self._checkpointer()
        now = time.time()
        ids = []
        for run_id in await ckpt.runs():
            if run_id in ckpt.active:
                continue
            cp = await ckpt.load(run_id)
            if cp is not None and cp.agent == self.name and now - cp.at >= min_idle:
                ids.append(run_id)
        return ids

    async def recover(self, *, deps: Any = None, min_idle: float = 0.0) -> list[RunResult]:
        """Finish every run of this agent that a crash interrupted, from its last checkpoint.

        Runs continue concurrently; tools whose results were checkpointed are
        not called again. Runs paused for approval are returned as they are
        (``stop_reason == "approval_required"``; continue them with
        :meth:`resume_run`). A run that fails now is logged and left out.
        Runs in flight in this process are left alone; for other processes
        sharing the store see ``min_idle`` in :meth:`unfinished_runs`.
        """
        ids = await self.unfinished_runs(min_idle=min_idle)
        outcomes = await asyncio.gather(
            *(self.resume_run(i, deps=deps) for i in ids), return_exceptions=True
        )
        results: list[RunResult] = []
        for run_id, outcome in zip(ids, outcomes, strict=False):
            if isinstance(outcome, RunResult):
                results.append(outcome)
            elif isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                logger.warning("agent %r: recovering run %r failed: %r", self.name, run_id, outcome)
        return results

    async def resume_run(
        self,
        run_id: str,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        *,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Continue the checkpointed run ``run_id`` (after a restart, or one paused for approval).

        A paused run needs ``approvals`` for its pending calls, else it is
        returned paused again. ConfigError if the store has no such run.
        """
        return await result_of(
            self._resumed(run_id, approvals, deps, model_settings, streaming=False)
        )

    def stream_resumed(
        self,
        run_id: str,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        *,
        deps: Any = None,
        model_settings: ModelSettings | Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """:meth:`resume_run`, yielding the continued run's events as they happen (the last
        is ``Done``)."""
        return self._resumed(run_id, approvals, deps, model_settings, streaming=True)

    async def _resumed(
        self,
        run_id: str,
        approvals: Mapping[str, ApprovalDecision] | None,
        deps: Any,
        model_settings: ModelSettings | Mapping[str, Any] | None,
        *,
        streaming: bool,
    ) -> AsyncGenerator[AgentEvent, None]:
        ckpt = self._checkpointer()
        cp = await ckpt.load(run_id)
        if cp is None:
            raise ConfigError(
                f"no checkpoints of run {run_id!r} in {ckpt.store!r}: it finished, failed, or "
                "never existed"
            )
        if cp.agent != self.name:
            raise ConfigError(f"run {run_id!r} belongs to agent {cp.agent!r}, not {self.name!r}")
        state = state_of(cp)
        if state.session is not None and await self.history.has_run(state.session, run_id):
            # It finished and reached its session; only dropping its log was cut short.
            await ckpt.discard(run_id)
            output = self._output.parse(state.messages[-1].content) if state.messages else None
            yield Done(RunResult(output, state, "final", []))
            return
        if state.pending:
            if approvals is None and not all(p.id in state.decisions for p in state.pending):
                yield Done(RunResult(None, state, "approval_required", []))
                return
            run = await self._start(
                None,
                self._run_settings(model_settings, streaming),
                deps=deps,
                resume=state,
                approvals=approvals,
            )
        else:
            last = state.messages[-1] if state.messages else None
            mid_turn = last is not None and last.role == "assistant" and bool(last.tool_calls)
            run = await self._start(
                None,
                self._run_settings(model_settings, streaming),
                deps=deps,
                recovered=(state, mid_turn),
            )
        async with contextlib.aclosing(run.events()) as events:
            async for event in events:
                yield event

    # ---- internals --------------------------------------------------------------------

    def _run_settings(
        self, model_settings: ModelSettings | Mapping[str, Any] | None, streaming: bool
    ) -> RunSettings:
        """The frozen settings of one run: the agent's, with this run's overrides."""
        base = self._streaming if streaming else self._settings
        if model_settings is None:
            return base
        merged = base.model_settings.merged(as_model_settings(model_settings))
        return msgspec.structs.replace(base, model_settings=merged)

    async def _start(
        self,
        prompt: str | None,
        settings: RunSettings,
        *,
        session: str | None = None,
        message_history: Sequence[Message] | None = None,
        deps: Any = None,
        resume: RunResult | RunState | None = None,
        approvals: Mapping[str, ApprovalDecision] | None = None,
        run_id: str | None = None,
        recovered: tuple[RunState, bool] | None = None,
    ) -> _Run:
        loop = asyncio.get_running_loop()
        timeout = settings.run_timeout
        deadline = loop.time() + timeout if timeout is not None else None
        model = self._model if self._model is not None else self.model
        if recovered is not None:
            state = recovered[0]
        elif resume is not None:
            if prompt is not None:
                raise ConfigError("give either a prompt or resume=, not both")
            if session is not None or message_history is not None or run_id is not None:
                raise ConfigError(
                    "resume= continues the paused run in its own session, history and run id; "
                    "leave out session=, message_history= and run_id="
                )
            state = self._resumable(resume, approvals)
        else:
            if not isinstance(prompt, str):
                raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
            if message_history is not None:
                if session is not None:
                    raise ConfigError(
                        "give either session= (a stored conversation) or message_history= (a "
                        "conversation to continue, stored nowhere), not both"
                    )
                earlier = _checked_history(message_history)
            else:
                earlier = []
            if run_id is None:
                run_id = new_run_id()
            else:
                valid_run_id(run_id)
                ckpt = self.checkpointer
                if ckpt is not None and run_id in ckpt.active:
                    raise ConfigError(
                        f"run {run_id!r} is already running in this process; give each run "
                        "its own run_id"
                    )
            state = RunState(
                run_id=run_id,
                agent=settings.agent,
                session=session,
                messages=[Message("user", prompt)],
                history=earlier,
            )
        session = state.session
        if state.history:
            history = state.history
        elif session is not None:
            history = await self.history.load(session)
        else:
            history = []
        if self._providers:
            tools, definitions = await self._all_tools()
        else:
            tools, definitions = self._tool_map, self._definitions
        system = self._system
        ctx: RunContext[Any] | None = None
        if self._instructions is not None and not isinstance(self._instructions, str):
            ctx = RunContext(
                deps,
                agent=settings.agent,
                run_id=state.run_id,
                session=session,
                messages=state.messages,
                usage=state.usage,
            )
            system = await self._render_instructions(ctx)
        return _Run(
            settings,
            model=model,
            state=state,
            deps=deps,
            ctx=ctx,
            history=history,
            system=system,
            tools=tools,
            definitions=definitions,
            output=self._output,
            count_tokens=self._count_tokens,
            sessions=self.history,
            checkpointer=self.checkpointer,
            resuming=resume is not None or (recovered is not None and recovered[1]),
            recovered=recovered is not None,
            run_deadline=deadline,
            loop=loop,
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


def _checked_history(messages: Sequence[Message]) -> list[Message]:
    """``message_history`` as a new list (ConfigError naming the first item that is no Message)."""
    value: object = messages
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(
            f"message_history must be a list of openheim Message objects, got "
            f"{type(value).__name__}"
        )
    history = list(messages)
    for i, m in enumerate(history):
        if type(m) is not Message:
            raise ConfigError(
                f"message_history[{i}] is a {type(m).__name__}, not an openheim Message; "
                "build the conversation with Message.user(...), Message.assistant(...), ..."
            )
    return history


def _load_agent(source: str) -> Agent:
    """The agent ``source`` names (``"pkg.module:name"`` or ``"file.py:name"``), loaded afresh."""
    target, sep, attr = source.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"reload source {source!r} must be 'package.module:name' or 'path/to/file.py:name'"
        )
    if target.endswith(".py") or os.sep in target:
        spec = importlib.util.spec_from_file_location(f"_openheim_reload_{id(source)}", target)
    else:
        spec = importlib.util.find_spec(target)
    if spec is None or spec.loader is None:
        raise ConfigError(f"reload source {source!r}: cannot find module {target!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # a fresh module object: the file as it is now
    except FileNotFoundError:
        raise ConfigError(f"reload source {source!r}: no file {target!r}") from None
    value = getattr(module, attr, None)
    if callable(value) and not isinstance(value, Agent):
        value = value()
    if not isinstance(value, Agent):
        raise ConfigError(
            f"reload source {source!r}: {attr!r} is {type(value).__name__}, not an Agent "
            "(or a function returning one)"
        )
    return value
