"""`openheim serve` on one shared store: tenants kept apart, runs that outlive the process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import CONFIG, Served, start_server, stop_server, write_project

from openheim.stores import open_store
from openheim.stores.history import StoreHistory


def sqlite_project(folder: Path, config: str = CONFIG) -> Path:
    """The interface tests' project on one SQLite file that every tenant shares."""
    db = folder / "state.db"
    return write_project(folder, config.replace('url = "memory://"', f'url = "sqlite:///{db}"'))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(sqlite_project(tmp_path_factory.mktemp("shared")))
    yield served
    stop_server(served)


def _texts(session: dict[str, object]) -> list[str]:
    messages = session["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages]


def test_tenants_sharing_one_store_do_not_meet(shared: Served) -> None:
    with shared.client("acme") as acme, shared.client("globex") as globex:
        # The same session id in both tenants, on one SQLite file.
        ra = acme.post("/v1/agents/echo/runs", json={"input": "acme secret", "session": "same"})
        rg = globex.post("/v1/agents/echo/runs", json={"input": "globex note", "session": "same"})
        assert ra.status_code == rg.status_code == 200
        assert _texts(acme.get("/v1/sessions/same").json()) == [
            "acme secret",
            "echo: acme secret (turn 1)",
        ]
        assert _texts(globex.get("/v1/sessions/same").json()) == [
            "globex note",
            "echo: globex note (turn 1)",
        ]
        acme.post("/v1/agents/echo/runs", json={"input": "only acme", "session": "acme-only"})
        assert globex.get("/v1/sessions/acme-only").status_code == 404
        assert globex.delete("/v1/sessions/acme-only").status_code == 404
        assert "acme-only" not in globex.get("/v1/sessions").json()["sessions"]
        assert "acme-only" in acme.get("/v1/sessions").json()["sessions"]
        run_id = ra.json()["run_id"]
        assert globex.get(f"/v1/runs/{run_id}").status_code == 404
        assert globex.get(f"/v1/runs/{run_id}/events").status_code == 404
        assert acme.get(f"/v1/runs/{run_id}").status_code == 200

    # In the file itself, each tenant's session sits in its own namespace.
    async def read() -> tuple[list[str], list[str]]:
        store = open_store(f"sqlite:///{shared.config.parent / 'state.db'}")
        try:
            a = await StoreHistory(store, "acme").load("same")
            g = await StoreHistory(store, "globex").load("same")
            return [m.content or "" for m in a], [m.content or "" for m in g]
        finally:
            await store.aclose()

    a, g = asyncio.run(read())
    assert a[0] == "acme secret"
    assert g[0] == "globex note"
    assert json.dumps(a).count("globex") == 0
