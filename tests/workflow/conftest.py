"""Fixtures for the workflow tests: a durable store URL on every backend, a fresh namespace each.

The PostgreSQL and NATS params carry the ``postgres`` / ``nats`` markers, so they fail when the
server is down (see tests/conftest.py); each test writes into its own
namespace and removes what it wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from wfhelpers import POSTGRES_URL, cleanup

from openheim.stores import Store, open_store

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Store]:
    """A store on each backend, in a namespace of its own."""
    kind = request.param
    ns = f"wf-{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        s = open_store("memory://", namespace=ns)
    elif kind == "sqlite":
        s = open_store(f"sqlite://{tmp_path}/state.db", namespace=ns)
    elif kind == "nats":
        s = open_store("nats://127.0.0.1:4222?bucket=ohtest", namespace=ns)
    else:
        s = open_store(POSTGRES_URL, namespace=ns)
    try:
        yield s
    finally:
        try:
            await cleanup(s)
        finally:
            await s.aclose()
