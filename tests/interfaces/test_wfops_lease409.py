"""A resume sent while another process holds the run's lease is a 409 that says who holds
it, until when, and when to retry (Retry-After), and nothing is started in the background.

Two servers (in-process apps) on one SQLite store; the run's lease is held first by the
server driving it, then by a fake holder written with the lease API (a killed server's
lease that has not lapsed yet), then by nobody (the resume is taken, 202).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from openheim.config import load_config
from openheim.server._app import create_app
from openheim.stores.lease import Lease

FLOWS = """\
import asyncio

import msgspec


class S(msgspec.Struct):
    n: int = 0


async def slow(s: S) -> S:
    await asyncio.sleep(60)
    return S(s.n + 1)


async def fast(s: S) -> S:
    return S(s.n + 1)
"""

CONFIG = """\
[store]
url = "sqlite:///{db}"

[server]
shutdown_grace = 0.1
run_lease_ttl = 15

[workflows.lw]
state = "leaseflows:S"
edges = [["a", "b"]]

[[workflows.lw.nodes]]
name = "a"
step = "leaseflows:slow"

[[workflows.lw.nodes]]
name = "b"
step = "leaseflows:fast"
"""


def test_resume_inside_a_live_lease_is_a_clear_409(tmp_path: Path) -> None:
    (tmp_path / "leaseflows.py").write_text(FLOWS, encoding="utf-8")
    path = tmp_path / "openheim.toml"
    path.write_text(CONFIG.format(db=tmp_path / "state.db"), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        asyncio.run(_scenario(path))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("leaseflows", None)


async def _scenario(path: Path) -> None:
    a, b = create_app(load_config(path)), create_app(load_config(path))
    url = "/v1/workflows/lw/runs"
    async with b.app.router.lifespan_context(b.app):
        cb = httpx.AsyncClient(transport=httpx.ASGITransport(app=b), base_url="http://b")
        async with a.app.router.lifespan_context(a.app):
            ca = httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://a")
            r = await ca.post(url, json={"input": {}, "run_id": "r1"})
            assert r.status_code == 202, r.text
            # Server A drives it: B refuses, naming A's lease, and starts nothing.
            r = await cb.post(f"{url}/r1/resume")
            assert r.status_code == 409, r.text
            info = await a.app.state.openheim.workflows.get("lw", "default").lease("r1").info()
            assert info is not None
            msg = r.json()["error"]["message"]
            assert "is being driven by another process" in msg
            assert repr(info.holder) in msg
            assert "until" in msg
            assert "retry in" in msg
            assert 1 <= int(r.headers["Retry-After"]) <= 15
            assert b.app.state.openheim.workflows.in_flight() == []
        # A stopped (its run cancelled mid-step, lease released); a dead holder's lease
        # that has not lapsed yet, as a SIGKILLed server leaves it:
        wf = b.app.state.openheim.workflows.get("lw", "default")
        dead = Lease(wf.journal.store, "wfrun/r1", holder="deadhost:4242:0bad", ttl=15)
        assert await dead.acquire()
        r = await cb.post(f"{url}/r1/resume")
        assert r.status_code == 409, r.text
        msg = r.json()["error"]["message"]
        assert "'deadhost:4242:0bad'" in msg
        assert "nothing was resumed" in msg
        assert 10 <= int(r.headers["Retry-After"]) <= 15
        assert b.app.state.openheim.workflows.in_flight() == []
        status = (await cb.get(f"{url}/r1")).json()["status"]
        assert status == "running"
        # The lease gone (lapsed, or released): the resume is taken and driven here.
        await dead.release()
        r = await cb.post(f"{url}/r1/resume")
        assert r.status_code == 202, r.text
        assert len(b.app.state.openheim.workflows.in_flight()) == 1
