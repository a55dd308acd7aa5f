"""``RunContext``: what a tool or an instructions function learns about its run."""

from __future__ import annotations

from typing import Generic, TypeVar

from openheim.messages import Message, ToolCall, Usage

__all__ = ["RunContext"]

DepsT = TypeVar("DepsT")


class RunContext(Generic[DepsT]):
    """The run a tool call belongs to.

    Declare it as a tool's first parameter (``def f(ctx: RunContext[Db], ...)``)
    and the agent passes it in; it is not part of the tool's JSON schema.
    ``deps`` is what the caller gave ``agent.run(..., deps=...)``.
    """

    __slots__ = (
        "agent",
        "deps",
        "messages",
        "run_id",
        "session",
        "tool_call_id",
        "tool_name",
        "usage",
    )

    def __init__(
        self,
        deps: DepsT,
        *,
        agent: str = "",
        run_id: str = "",
        session: str | None = None,
        messages: list[Message] | None = None,
        usage: Usage | None = None,
        tool_call_id: str | None = None,
        tool_name: str | None = None,
    ) -> None:
        self.deps = deps
        self.agent = agent
        self.run_id = run_id
        self.session = session
        # The run's own messages so far (the prompt onwards), not the session history.
        self.messages: list[Message] = messages if messages is not None else []
        self.usage = usage if usage is not None else Usage()
        self.tool_call_id = tool_call_id
        self.tool_name = tool_name

    def for_call(self, call: ToolCall, usage: Usage) -> RunContext[DepsT]:
        """A copy for one tool call: its id and name, and the usage so far."""
        return RunContext(
            self.deps,
            agent=self.agent,
            run_id=self.run_id,
            session=self.session,
            messages=self.messages,
            usage=usage,
            tool_call_id=call.id,
            tool_name=call.name,
        )

    def __repr__(self) -> str:
        return (
            f"RunContext(agent={self.agent!r}, run_id={self.run_id!r}, "
            f"session={self.session!r}, tool_call_id={self.tool_call_id!r})"
        )
