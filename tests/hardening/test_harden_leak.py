"""The server keeps nothing per chat turn once its runs are forgotten.

A regression test for the soak's finding (RSS +1-2 KB per turn with a ``memory://``
store and ``run_retention = 1``): every ScriptedModel kept every ModelRequest it was
sent (with the request's messages), so a server answering from one grew forever.
The server runs in-process (its lifespan, httpx's ASGI transport); what is counted is
live objects, not RSS.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import httpx
import pytest

from openheim.config import load_config
from openheim.models import ModelRequest, ScriptedModel
from openheim.server._app import create_app

CONFIG = """\
[agents.echo]
model = "leakflows:echo_model"

[store]
url = "memory://"

[server]
max_concurrent_runs_per_tenant = 1000
run_retention = 1
"""

FLOWS = """\
from openheim.models import ScriptedModel


def echo_model() -> ScriptedModel:
    return ScriptedModel(lambda request: "ok", name="leak")
"""


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def _turns(client: httpx.AsyncClient, sessions: int, turns: int, tag: str) -> None:
    async def one(i: int) -> None:
        sid = f"{tag}-{i}"
        for t in range(turns):
            r = await client.post("/v1/agents/echo/runs", json={"input": f"t{t}", "session": sid})
            assert r.status_code == 200, r.text
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code in (200, 204)

    await asyncio.gather(*(one(i) for i in range(sessions)))


def test_served_turns_leave_no_model_requests_behind(tmp_path: Path) -> None:
    (tmp_path / "openheim.toml").write_text(CONFIG, encoding="utf-8")
    (tmp_path / "leakflows.py").write_text(FLOWS, encoding="utf-8")

    async def main() -> tuple[int, int, int]:
        app = create_app(load_config(tmp_path / "openheim.toml"))
        inner = app.app
        async with inner.router.lifespan_context(inner):
            model = inner.state.openheim.agent("default", "echo").model
            assert isinstance(model, ScriptedModel)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await _turns(client, 100, 12, "a")  # N = 1,200 turns (past the bound)
                first = _live(ModelRequest)
                await _turns(client, 100, 24, "b")  # 2N more
                after = _live(ModelRequest)
                return first, after, len(model.requests)

    first, after, kept = asyncio.run(main())
    assert kept == 1024  # the newest 1,024 requests, not all 3,600
    assert after <= first  # before the fix: 1,200 -> 3,600


def test_scripted_model_keeps_only_the_newest_requests() -> None:
    model = ScriptedModel(["a", "b", "c"], keep_requests=2)
    reqs = [ModelRequest(messages=[]) for _ in range(3)]

    async def go() -> None:
        for r in reqs:
            await model.request(r)

    asyncio.run(go())
    assert model.requests == reqs[1:]
    assert ScriptedModel(["a"]).requests == []


def test_scripted_model_numbers_requests_past_the_bound() -> None:
    model = ScriptedModel(["a"], keep_requests=0)

    async def go() -> str:
        await model.request(ModelRequest(messages=[]))
        try:
            await model.request(ModelRequest(messages=[]))
        except Exception as exc:
            return str(exc)
        return ""

    assert "request #2 asked for another" in asyncio.run(go())
    assert len(model.requests) == 0


def test_scripted_model_rejects_a_bad_bound() -> None:
    with pytest.raises(ValueError, match="keep_requests must be"):
        ScriptedModel(["a"], keep_requests=-1)
