"""Conversation history per session, and trimming it to a model's context window.

:class:`HistoryStore` is the seam the persistence layer fills (SQLite, Redis,
Postgres); :class:`InMemoryHistory` is the default. An agent loads a session's
history when a run starts and appends the run's messages (and usage) when the
run finishes, in one call: a run that fails, is cancelled or is paused for an
approval adds nothing, so a stored history never holds half a turn (a tool
call without its result).

Trimming works on whole *turns*: a user message and everything after it up to
the next user message. The oldest turns are dropped first; leading system
messages and the current turn are always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from openheim.messages import Message, Usage

__all__ = [
    "HistoryStore",
    "HistoryWindow",
    "InMemoryHistory",
    "estimate_tokens",
    "split_turns",
    "trim_history",
]

TokenCounter = Callable[[Message], int]
_encode = msgspec.json.encode


@runtime_checkable
class HistoryStore(Protocol):
    """Where sessions' conversations and usage are kept."""

    async def load(self, session: str) -> list[Message]:
        """The session's messages, oldest first (empty for a new session)."""
        ...

    async def append(
        self, session: str, messages: Sequence[Message], usage: Usage | None = None
    ) -> None:
        """Add one finished run's messages and the usage they cost, atomically."""
        ...

    async def usage(self, session: str) -> Usage:
        """Tokens and requests the session has used so far."""
        ...

    async def clear(self, session: str) -> None:
        """Forget the session."""
        ...


class InMemoryHistory:
    """A :class:`HistoryStore` in process memory (lost when the process ends)."""

    def __init__(self) -> None:
        self._messages: dict[str, list[Message]] = {}
        self._usage: dict[str, Usage] = {}

    async def load(self, session: str) -> list[Message]:
        return list(self._messages.get(session, ()))

    async def append(
        self, session: str, messages: Sequence[Message], usage: Usage | None = None
    ) -> None:
        self._messages.setdefault(session, []).extend(messages)
        if usage is not None:
            self._usage[session] = self._usage.get(session, Usage()) + usage

    async def usage(self, session: str) -> Usage:
        return self._usage.get(session, Usage())

    async def clear(self, session: str) -> None:
        self._messages.pop(session, None)
        self._usage.pop(session, None)

    @property
    def sessions(self) -> list[str]:
        return list(self._messages)


def estimate_tokens(message: Message) -> int:
    """About four characters per token, plus a little for the message's framing."""
    chars = len(message.content or "")
    for call in message.tool_calls:
        chars += len(call.name) + len(_encode(call.arguments))
    return chars // 4 + 4


def split_turns(messages: Sequence[Message]) -> list[list[Message]]:
    """``messages`` cut before each user message (a leading non-user run is its own turn)."""
    turns: list[list[Message]] = []
    for m in messages:
        if m.role == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


class HistoryWindow:
    """A history prepared for repeated trimming (token counts computed once).

    ``fit(budget)`` is the longest suffix of whole turns (plus the leading
    system messages) whose estimated tokens fit ``budget``.
    """

    __slots__ = ("_head", "_head_tokens", "_messages", "_starts", "_suffix")

    def __init__(self, history: Sequence[Message], count: TokenCounter = estimate_tokens) -> None:
        head = 0
        while head < len(history) and history[head].role == "system":
            head += 1
        self._messages = list(history)
        self._head = head
        self._head_tokens = sum(count(m) for m in history[:head])
        starts: list[int] = []
        for i in range(head, len(history)):
            if history[i].role == "user" or not starts:
                starts.append(i)
        sizes = [count(m) for m in history]
        # _suffix[k]: tokens from turn k's start to the end of the history.
        suffix = [0] * (len(starts) + 1)
        for k in range(len(starts) - 1, -1, -1):
            end = starts[k + 1] if k + 1 < len(starts) else len(history)
            suffix[k] = suffix[k + 1] + sum(sizes[starts[k] : end])
        self._starts = starts
        self._suffix = suffix

    @property
    def tokens(self) -> int:
        return self._head_tokens + self._suffix[0]

    def fit(self, budget: int) -> list[Message]:
        budget -= self._head_tokens
        for k, start in enumerate(self._starts):
            if self._suffix[k] <= budget:
                if k == 0:
                    return self._messages
                return self._messages[: self._head] + self._messages[start:]
        return self._messages[: self._head]


def trim_history(
    history: Sequence[Message], budget: int, count: TokenCounter = estimate_tokens
) -> list[Message]:
    """The newest whole turns of ``history`` that fit in ``budget`` tokens.

    Leading system messages are kept whatever the budget. To keep the current
    turn too, leave it out of ``history`` and subtract its tokens from ``budget``.
    """
    return HistoryWindow(history, count).fit(budget)
