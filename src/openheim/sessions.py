"""Trimming a conversation to a model's context window.

The histories themselves (:class:`HistoryStore`, :class:`InMemoryHistory`,
``StoreHistory``) are in :mod:`openheim.stores.history`; the first two are
re-exported here.

Trimming works on whole *turns*: a user message and everything after it up to
the next user message. The oldest turns are dropped first; leading system
messages and the current turn are always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from openheim.messages import Message
from openheim.stores.history import HistoryStore, InMemoryHistory

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
