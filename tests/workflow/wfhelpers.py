"""Helpers shared by the workflow tests (a module of its own: no clash with other conftests)."""

from __future__ import annotations

import getpass
import os

from openheim.stores import Store

POSTGRES_URL = os.environ.get(
    "OPENHEIM_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)


async def cleanup(store: Store) -> None:
    """Remove every key and log of the store's namespace."""
    for key in await store.list():
        await store.delete(key)
    for log in await store.list_logs():
        await store.delete_log(log)


class Counter:
    """Counts executions per node name (a step calls ``hit(name)``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)
