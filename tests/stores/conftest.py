"""A ``store`` fixture over every backend: memory, SQLite, Redis, PostgreSQL and NATS.

Each test gets a fresh namespace (and, on Redis, a fresh key prefix), and
everything it wrote is removed afterwards. The Redis, PostgreSQL and NATS params
carry the ``redis`` / ``postgres`` / ``nats`` markers, so they fail when the server is
down (see tests/conftest.py).
"""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from openheim.stores import Store, open_store

REDIS_URL = os.environ.get("OPENHEIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OPENHEIM_TEST_POSTGRES_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("OPENHEIM_TEST_NATS_URL", "nats://127.0.0.1:4222")

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


async def _cleanup(store: Store) -> None:
    for key in await store.list():
        await store.delete(key)
    for log in await store.list_logs():
        await store.delete_log(log)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Store]:
    kind = request.param
    ns = f"t-{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        s = open_store("memory://", namespace=ns)
    elif kind == "sqlite":
        s = open_store(f"sqlite://{tmp_path}/state.db", namespace=ns)
    elif kind == "redis":
        from openheim.stores.redis import RedisStore

        s = RedisStore(REDIS_URL, ns, prefix=f"ohtest-{ns}:")
    elif kind == "nats":
        s = open_store(NATS_URL + "?bucket=ohtest", namespace=ns)
    else:
        s = open_store(POSTGRES_URL, namespace=ns)
    try:
        yield s
    finally:
        try:
            await _cleanup(s)
            await _cleanup(s.namespace(ns + "-other"))
        finally:
            await s.aclose()


@pytest.fixture
async def other(store: Store) -> AsyncIterator[Store]:
    """A second connection to ``store``'s data and namespace, as another process would have.

    (On ``memory://`` there is only one process: the same data seen from a second handle.)
    """
    kind = type(store).__name__
    if kind == "MemoryStore":
        yield store.namespace(store.ns)
        return
    if kind == "RedisStore":
        from openheim.stores.redis import RedisStore

        assert isinstance(store, RedisStore)
        s: Store = RedisStore(store.url, store.ns, prefix=store.prefix)
    else:
        s = open_store(store.url, namespace=store.ns)
    try:
        yield s
    finally:
        await s.aclose()
