"""Helpers shared by the workflow tests (a module of its own: no clash with other conftests)."""

from __future__ import annotations


class Counter:
    """Counts executions per node name (a step calls ``hit(name)``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)
