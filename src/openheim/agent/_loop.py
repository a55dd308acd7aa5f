"""The tool loop of one run: call the model, run the tools it asks for, repeat.

``_Run.events()`` is an async generator of the events ``agent.stream`` yields;
``agent.run`` drains the same generator, so both paths share one loop.

Timeouts are deadlines checked around each await of the loop (never around a
``yield``, so a slow stream consumer is not cut off): a model call gets
``min(model deadline, run deadline)``, a tool call ``min(tool deadline, run
deadline)``. When the run's deadline is the one that passes, the run raises
``RunTimeout``; a model deadline raises ``ModelTimeout``; a tool deadline
becomes an error result for the model ("timed out"), which can retry or
answer without it.

Cancellation needs no special code: the run's task is cancelled at whichever
await it is in; parallel tool calls are tasks cancelled and awaited in a
``finally``; nothing is written to the session's history until the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from openheim import telemetry
from openheim.agent._output import InvalidOutput, OutputSpec
from openheim.agent._settings import RunSettings
from openheim.agent.events import (
    AgentEvent,
    ApprovalRequired,
    Done,
    ToolCallArgsDelta,
    ToolCalled,
    ToolCallStarted,
    ToolResult,
    UsageEvent,
)
from openheim.agent.result import RunResult
from openheim.errors import (
    MaxIterationsError,
    ModelResponseError,
    ModelTimeout,
    OutputValidationError,
    RunTimeout,
    StopRun,
    ToolArgumentsError,
    ToolError,
)
from openheim.messages import Message, ToolCall, Usage
from openheim.models.base import (
    Model,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)
from openheim.sessions import HistoryWindow, TokenCounter
from openheim.snapshot import PendingApproval, RunState
from openheim.stores.history import HistoryStore
from openheim.tools._context import RunContext

if TYPE_CHECKING:
    from openheim.stores.checkpoint import Checkpointer
    from openheim.tools._tool import Tool

__all__ = ["_Run"]

logger = logging.getLogger("openheim.agent")
T = TypeVar("T")


class _Expired(Exception):
    """Our own deadline passed (as opposed to a TimeoutError raised by the callee)."""


if sys.version_info >= (3, 11):

    async def _bounded(aw: Awaitable[T], deadline: float) -> T:
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await aw
        except TimeoutError:
            if scope.expired():
                raise _Expired from None
            raise

else:  # pragma: no cover - Python 3.10

    async def _bounded(aw: Awaitable[T], deadline: float) -> T:
        future = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait(
                {future}, timeout=max(0.0, deadline - asyncio.get_running_loop().time())
            )
        except asyncio.CancelledError:
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise _Expired
        return future.result()


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic models
    if dump is not None:
        return dump(mode="json")
    return str(obj)


_encode_result = msgspec.json.Encoder(enc_hook=_jsonable).encode


def _as_text(value: Any) -> str:
    if type(value) is str:
        return value
    return _encode_result(value).decode()


def _error_text(exc: BaseException) -> str:
    if hasattr(exc, "errors") and hasattr(exc, "error_count"):  # pydantic ValidationError
        from openheim.tools._schema import describe_validation_error

        return describe_validation_error(exc)
    return str(exc)


class _Run:
    """One run of an agent (or the continuation of a paused one).

    Everything it needs is given here: the run's frozen :class:`RunSettings`,
    the resolved model, tools and system message, the session's history, and
    where to record the run (``sessions``, ``checkpointer``); it never reads
    the agent that started it.
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        model: Model,
        state: RunState,
        deps: Any,
        ctx: RunContext[Any] | None,
        history: list[Message],
        system: Message | None,
        tools: dict[str, Tool],
        definitions: list[ToolDefinition],
        output: OutputSpec,
        count_tokens: TokenCounter,
        sessions: HistoryStore | None,
        checkpointer: Checkpointer | None,
        resuming: bool,
        recovered: bool,
        run_deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.model = model
        self.state = state
        self.deps = deps
        self._ctx = ctx  # made on first need: most tools take no context
        self.model_settings: ModelSettings = settings.model_settings
        self.history = history
        self.system = system
        self.tools = tools
        self.definitions = definitions
        self.resuming = resuming
        self.recovered = recovered  # continuing from a checkpoint: the start is recorded
        self.run_deadline = run_deadline
        self.output = output
        self.count_tokens = count_tokens
        self.sessions = sessions
        self.checkpointer = checkpointer
        self.loop = loop
        self._pending: list[PendingApproval] = []
        self._results: dict[str, Message] = {}
        # Messages before the run's own: instructions, then the (trimmed) history.
        self._prefix: list[Message] = [system] if system is not None else []
        self._window: HistoryWindow | None = None
        window = model.context_window
        if history and window is not None:
            self._window = HistoryWindow(history, count_tokens)
            self._budget = (
                window
                - (self.model_settings.max_tokens or 0)
                - (count_tokens(system) if system is not None else 0)
            )
        else:
            self._prefix.extend(history)

    def _context(self) -> RunContext[Any]:
        ctx = self._ctx
        if ctx is None:
            state = self.state
            ctx = self._ctx = RunContext(
                self.deps,
                agent=self.settings.agent,
                run_id=state.run_id,
                session=state.session,
                messages=state.messages,
                usage=state.usage,
            )
        return ctx

    # ---- deadlines ------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> tuple[float | None, bool]:
        """The deadline of a call with ``timeout``, and whether it is the run's own."""
        run = self.run_deadline
        if timeout is None:
            return run, run is not None
        own = self.loop.time() + timeout
        if run is None or own < run:
            return own, False
        return run, True

    def _run_timeout(self) -> RunTimeout:
        return RunTimeout(
            f"agent {self.settings.agent!r}: run {self.state.run_id!r} exceeded its run_timeout "
            f"of {self.settings.run_timeout:g} s; raise run_timeout or make the model and tools faster"
        )

    # ---- the loop ---------------------------------------------------------------------

    async def events(self) -> AsyncGenerator[AgentEvent, None]:
        ckpt = self.checkpointer
        events = telemetry.agent_run(
            self._events(), self.settings.agent, self.state, self.model.name
        )
        if ckpt is None:
            # aclosing: a consumer that stops early ends the run now (model stream closed,
            # tool tasks cancelled), not when the garbage collector finds the generator.
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
            return
        run_id = self.state.run_id
        ckpt.active.add(run_id)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            raise  # cancelled or abandoned: the checkpoints stay, recover() can continue it
        except BaseException:
            # A failed run adds nothing to its session and is not recovered.
            try:
                await ckpt.discard(run_id)
            except Exception:  # pragma: no cover - the store is failing too
                logger.exception("could not drop the checkpoints of run %r", run_id)
            raise
        finally:
            ckpt.active.discard(run_id)

    def _paused(self) -> list[AgentEvent]:
        state = self.state
        state.pending = self._pending
        state.completed = self._results
        return [
            ApprovalRequired(list(self._pending)),
            Done(RunResult(None, state, "approval_required", self.history)),
        ]

    async def _events(self) -> AsyncGenerator[AgentEvent, None]:
        settings = self.settings
        state = self.state
        ckpt = self.checkpointer
        if self.resuming:
            if ckpt is not None and state.decisions and not self.recovered:
                # Decisions first: a crash inside an approved tool resumes, not asks again.
                await ckpt.save(state)
            async with contextlib.aclosing(
                self._tool_phase(state.messages[-1].tool_calls)
            ) as phase:
                async for event in phase:
                    yield event
            if self._pending:  # recovered mid-turn: calls that still need a decision
                events = self._paused()
                if ckpt is not None:
                    await ckpt.save(state, "paused")
                for event in events:
                    yield event
                return
            state.pending = []
            state.completed = {}
            state.decisions = {}
        elif ckpt is not None and not self.recovered:
            await ckpt.save(state)
        while True:
            if state.iterations >= settings.max_iterations:
                raise self._max_iterations()
            if self.run_deadline is not None and self.loop.time() >= self.run_deadline:
                raise self._run_timeout()
            request = ModelRequest(
                self._request_messages(),
                self.definitions,
                self.model_settings,
                self.output.schema,
                self.output.name,
            )
            state.iterations += 1
            if settings.streaming:
                response: ModelResponse | None = None
                stream = self._stream_model(request)
                items: Any = telemetry.chat_stream(stream, self.model.name, request)
                async with contextlib.aclosing(items):  # stopped early: the stream closes now
                    async for item in items:
                        if type(item) is ModelResponse:
                            response = item
                        else:
                            yield item
                assert response is not None
            else:
                call = self._request_model(request)
                response = await telemetry.chat(call, self.model.name, request)
            usage = response.usage
            if usage.requests == 0:
                usage = Usage(usage.input_tokens, usage.output_tokens, 1)
            state.usage = state.usage + usage
            yield UsageEvent(usage, state.usage)
            message = response.message
            calls = message.tool_calls
            if calls:
                if any(not c.id for c in calls):
                    calls = [
                        c if c.id else ToolCall(c.name, c.arguments, f"call_{state.iterations}_{i}")
                        for i, c in enumerate(calls)
                    ]
                    message = Message("assistant", message.content, calls)
                state.messages.append(message)
                if ckpt is not None:
                    await ckpt.save(state)
                async with contextlib.aclosing(self._tool_phase(calls)) as phase:
                    async for event in phase:
                        yield event
                if self._pending:
                    events = self._paused()
                    if ckpt is not None:
                        await ckpt.save(state, "paused")
                    for event in events:
                        yield event
                    return
                continue
            if message.role != "assistant":
                message = Message("assistant", message.content)
            state.messages.append(message)
            try:
                output = self.output.parse(message.content)
            except InvalidOutput as exc:
                if state.output_retries >= settings.output_retries:
                    raise OutputValidationError(
                        f"agent {settings.agent!r}: the model's final answer failed validation "
                        f"{state.output_retries + 1} time(s) (output_retries="
                        f"{settings.output_retries}); last error: {exc}"
                    ) from None
                state.output_retries += 1
                state.messages.append(
                    Message(
                        "user",
                        f"Your answer is not valid: {exc}. Reply with only a JSON document "
                        "that matches the required schema.",
                    )
                )
                continue
            result = RunResult(output, state, "final", self.history)
            if ckpt is not None:
                await ckpt.finish(state, self.sessions)
            elif state.session is not None and self.sessions is not None:
                await self.sessions.append(
                    state.session, state.messages, state.usage, run_id=state.run_id
                )
            yield Done(result)
            return

    def _request_messages(self) -> list[Message]:
        if self._window is None:
            return self._prefix + self.state.messages
        count = self.count_tokens
        budget = self._budget - sum(count(m) for m in self.state.messages)
        return self._prefix + self._window.fit(budget) + self.state.messages

    def _max_iterations(self) -> MaxIterationsError:
        last: list[str] = []
        for m in reversed(self.state.messages):
            if m.tool_calls:
                last = [c.name for c in m.tool_calls]
                break
        called = f"; the last turn called {', '.join(last)}" if last else ""
        return MaxIterationsError(
            f"agent {self.settings.agent!r} made {self.state.iterations} model requests "
            f"(max_iterations={self.settings.max_iterations}) without a final answer{called}. "
            "Raise max_iterations, or check that the tools' results let the model finish."
        )

    # ---- the model --------------------------------------------------------------------

    def _model_timeout(self, run_binding: bool) -> BaseException:
        if run_binding:
            return self._run_timeout()
        return ModelTimeout(
            f"model {self.model.name!r} did not answer within model_timeout="
            f"{self.settings.model_timeout:g} s",
            provider=self.model.name.partition(":")[0],
        )

    async def _request_model(self, request: ModelRequest) -> ModelResponse:
        deadline, run_binding = self._deadline(self.settings.model_timeout)
        if deadline is None:
            return await self.model.request(request)
        try:
            return await _bounded(self.model.request(request), deadline)
        except _Expired:
            raise self._model_timeout(run_binding) from None

    async def _stream_model(
        self, request: ModelRequest
    ) -> AsyncGenerator[TextDelta | ToolCallStarted | ToolCallArgsDelta | ModelResponse, None]:
        deadline, run_binding = self._deadline(self.settings.model_timeout)
        stream: AsyncIterator[Any] = self.model.stream(request)
        ids: dict[int, str] = {}
        got_response = False
        try:
            while True:
                try:
                    if deadline is None:
                        item = await stream.__anext__()
                    else:
                        item = await _bounded(stream.__anext__(), deadline)
                except StopAsyncIteration:
                    break
                except _Expired:
                    raise self._model_timeout(run_binding) from None
                kind = type(item)
                if kind is TextDelta:
                    yield item
                elif kind is ToolCallDelta:
                    if item.name is not None:
                        call_id = item.id or f"call_{self.state.iterations}_{item.index}"
                        ids[item.index] = call_id
                        yield ToolCallStarted(call_id, item.name)
                    if item.arguments_delta:
                        yield ToolCallArgsDelta(ids.get(item.index, ""), item.arguments_delta)
                elif kind is ModelResponse:
                    got_response = True
                    yield item
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        if not got_response:
            raise ModelResponseError(
                f"model {self.model.name!r}: its stream ended without a final response",
                provider=self.model.name.partition(":")[0],
            )

    # ---- tools ------------------------------------------------------------------------

    async def _tool_phase(self, calls: list[ToolCall]) -> AsyncGenerator[AgentEvent, None]:
        """Run ``calls``; leaves results in ``_results`` and undecided calls in ``_pending``."""
        state = self.state
        results: dict[str, Message] = dict(state.completed)
        pending: list[PendingApproval] = []
        runnable: list[tuple[Tool, ToolCall, dict[str, Any]]] = []
        for call in calls:
            if call.id in results:
                continue
            tool = self.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.tools) or "none"
                message = Message(
                    "tool",
                    f"Unknown tool {call.name!r}. Available tools: {known}.",
                    tool_call_id=call.id,
                    name=call.name,
                    is_error=True,
                )
            else:
                try:
                    arguments = tool.validate(call.arguments)
                except Exception as exc:
                    message = self._invalid_arguments(tool, call, exc)
                else:
                    if tool.requires_approval:
                        decision = state.decisions.get(call.id)
                        if decision is None:
                            pending.append(PendingApproval(call.id, call.name, call.arguments))
                            continue
                        if not decision.approved:
                            why = f": {decision.reason}" if decision.reason else "."
                            message = Message(
                                "tool",
                                f"The user rejected this call to {call.name!r}{why}",
                                tool_call_id=call.id,
                                name=call.name,
                                is_error=True,
                            )
                            results[call.id] = message
                            yield ToolResult(call.id, call.name, message.content or "", True)
                            continue
                    runnable.append((tool, call, arguments))
                    continue
            results[call.id] = message
            yield ToolResult(call.id, call.name, message.content or "", True)

        ckpt = self.checkpointer
        if len(runnable) == 1:
            tool, call, arguments = runnable[0]
            yield ToolCalled(call.id, call.name, arguments)
            message = await self._call_tool(tool, call, arguments)
            results[call.id] = message
            if ckpt is not None:  # once recorded, this call is never made again
                state.completed = results
                await ckpt.save(state)
            yield ToolResult(call.id, call.name, message.content or "", message.is_error)
        elif runnable:
            for _tool, call, arguments in runnable:
                yield ToolCalled(call.id, call.name, arguments)
            # aclosing: abandoned here, the calls still running are cancelled now.
            async with contextlib.aclosing(self._call_concurrently(runnable)) as finished:
                async for message in finished:
                    assert message.tool_call_id is not None
                    results[message.tool_call_id] = message
                    if ckpt is not None:
                        state.completed = results
                        await ckpt.save(state)
                    yield ToolResult(
                        message.tool_call_id,
                        message.name or "",
                        message.content or "",
                        message.is_error,
                    )
        if pending:
            self._pending = pending
            self._results = results
        else:
            self._pending = []
            state.completed = {}
            state.messages.extend(results[c.id] for c in calls)

    def _invalid_arguments(self, tool: Tool, call: ToolCall, exc: Exception) -> Message:
        details = _error_text(exc)
        count = self.state.tool_retries.get(tool.name, 0) + 1
        self.state.tool_retries[tool.name] = count
        if count > tool.retries:
            raise ToolArgumentsError(
                f"agent {self.settings.agent!r}: the model sent invalid arguments to tool "
                f"{tool.name!r} {count} time(s) (retries={tool.retries}); last error: {details}"
            )
        return Message(
            "tool",
            f"Invalid arguments for tool {tool.name!r}: {details}. "
            "Call it again with arguments that match its schema.",
            tool_call_id=call.id,
            name=call.name,
            is_error=True,
        )

    def _call_tool(
        self, tool: Tool, call: ToolCall, arguments: dict[str, Any]
    ) -> Awaitable[Message]:
        invoke = self._invoke_tool(tool, call, arguments)
        return telemetry.execute_tool(invoke, call.name, call.id, arguments, tool.description)

    async def _invoke_tool(self, tool: Tool, call: ToolCall, arguments: dict[str, Any]) -> Message:
        ctx = self._context().for_call(call, self.state.usage) if tool.takes_ctx else None
        timeout = tool.timeout if tool.timeout is not None else self.settings.tool_timeout
        deadline, run_binding = self._deadline(timeout)
        is_error = False
        try:
            if deadline is None:
                value = await tool.invoke(arguments, ctx)
            else:
                value = await _bounded(tool.invoke(arguments, ctx), deadline)
            content = _as_text(value)
        except _Expired:
            if run_binding:
                raise self._run_timeout() from None
            assert timeout is not None
            content = f"Tool {call.name!r} timed out after {timeout:g} s."
            is_error = True
        except StopRun:
            raise
        except ToolError as exc:
            content = str(exc) or f"Tool {call.name!r} failed."
            is_error = True
        except Exception as exc:
            logger.warning(
                "agent %r: tool %r (call %s) raised %s; the error goes back to the model",
                self.settings.agent,
                call.name,
                call.id,
                type(exc).__name__,
                exc_info=exc,
            )
            content = f"Tool {call.name!r} failed: {type(exc).__name__}: {exc}"
            is_error = True
        return Message("tool", content, tool_call_id=call.id, name=call.name, is_error=is_error)

    async def _call_concurrently(
        self, runnable: list[tuple[Tool, ToolCall, dict[str, Any]]]
    ) -> AsyncGenerator[Message, None]:
        """Results in completion order, at most ``tool_concurrency`` calls in flight."""
        limit = self.settings.tool_concurrency
        gate = asyncio.Semaphore(limit) if limit < len(runnable) else None
        done: asyncio.Queue[Message | BaseException] = asyncio.Queue()

        async def one(tool: Tool, call: ToolCall, arguments: dict[str, Any]) -> None:
            try:
                if gate is None:
                    done.put_nowait(await self._call_tool(tool, call, arguments))
                else:
                    async with gate:
                        done.put_nowait(await self._call_tool(tool, call, arguments))
            except BaseException as exc:
                done.put_nowait(exc)
                raise

        tasks = [asyncio.ensure_future(one(*item)) for item in runnable]
        try:
            for _ in tasks:
                item = await done.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
