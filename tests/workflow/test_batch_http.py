"""Batch runs through the workflow HTTP routes of a real uvicorn server on loopback.

The server process serves the workflow (its store: the queue's own engine, Redis or
NATS); the runs are submitted to the queue and moved by a worker in the test's
process. Over HTTP: a run's status, its approval decided (the worker, not the server,
runs what follows), fork, cancel and resume (also of a failed run). Every step writes its name and process id to a file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from batchhelpers import NATS_URL, REDIS_URL, drop_namespace
from wfhelpers import uvicorn_app

from openheim.workflow import Worker
from openheim.workflow._batch import Batch

URLS = {"redis": REDIS_URL, "nats": NATS_URL}

FLOWS = textwrap.dedent(
    """
    import os
    import msgspec
    import openheim as oh
    from openheim.workflow import Decision

    HERE = os.path.dirname(os.path.abspath(__file__))

    class Ticket(msgspec.Struct):
        text: str = ""
        decision: Decision | None = None

    def effect(name):
        with open(os.path.join(HERE, "effects"), "a") as f:
            f.write(f"{name} {os.getpid()}\\n")

    def build(store):
        wf = oh.Workflow("bticket", state=Ticket, store=store)

        @wf.step
        def draft(t):
            effect("draft")

        wf.approval("review", output="decision")

        @wf.step
        def send(t):
            effect("send")
            if os.path.exists(os.path.join(HERE, "send-broken")):
                raise RuntimeError("the mail server is down")

        wf.edge("draft", "review")
        wf.edge("review", "send")
        return wf
    """
)

APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from openheim.server.routes.workflows import routes_for
    import bhttpflows

    inner = Starlette(routes=routes_for({"bticket": bhttpflows.build(os.environ["STORE"])}))

    async def app(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            scope.setdefault("state", {})["tenant"] = headers.get(b"x-tenant", b"default").decode()
        await inner(scope, receive, send)
    """
)


class Served:
    def __init__(self, url: str, folder: Path, pid: int, tenant: str, queue: str) -> None:
        self.url = url
        self.queue = queue  # the queue's URL (its engine holds the runs too)
        self.folder = folder
        self.pid = pid
        self.tenant = tenant
        self.base = f"{url}/v1/workflows/bticket"

    def effects(self) -> list[tuple[str, int]]:
        path = self.folder / "effects"
        if not path.exists():
            return []
        return [(n, int(p)) for n, p in (ln.split() for ln in path.read_text().splitlines())]


@pytest.fixture(params=[pytest.param(k, marks=getattr(pytest.mark, k)) for k in URLS])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    url = URLS[request.param]
    (tmp_path / "bhttpflows.py").write_text(FLOWS)
    (tmp_path / "bhttpapp.py").write_text(APP)
    with uvicorn_app(
        tmp_path, "bhttpapp:app", "/v1/workflows/bticket/approvals", {"STORE": url}
    ) as (
        http,
        proc,
    ):
        yield Served(http, tmp_path, proc.pid, f"t{uuid.uuid4().hex[:10]}", url)


async def _until(client: httpx.AsyncClient, url: str, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(1500):
        body = (await client.get(url)).json()
        if body.get("status") == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never reached {status!r}: {body}")


async def test_http_routes_steer_batch_runs_and_the_workers_run_them(served: Served) -> None:
    sys.path.insert(0, str(served.folder))
    sys.modules.pop("bhttpflows", None)  # (this test's own copy: its effects file)
    try:
        import bhttpflows
    finally:
        sys.path.remove(str(served.folder))
    wf = bhttpflows.build(served.queue)
    worker = Worker([wf], served.queue, queue_name=served.tenant, visibility_timeout=5)
    working = asyncio.ensure_future(worker.run(drain_timeout=2))
    # (the server keeps a tenant's runs in the store's namespace "tenant/<tenant>")
    ns = f"tenant/{served.tenant}"
    kw = {"queue": served.queue, "queue_name": served.tenant, "namespace": ns}
    me = os.getpid()
    try:
        async with httpx.AsyncClient(headers={"X-Tenant": served.tenant}) as client:
            h = await wf.submit(None, **kw)
            run = f"{served.base}/runs/{h.run_id}"
            waiting = await _until(client, run, "waiting")
            (pending,) = waiting["pending"]
            listed = (await client.get(served.base + "/approvals")).json()["approvals"]
            assert [a["id"] for a in listed] == [pending["id"]]

            r = await client.post(
                f"{served.base}/approvals/{pending['id']}", json={"approved": True, "by": "ann"}
            )
            assert r.status_code == 202, r.text
            assert r.json()["run_id"] == h.run_id
            done = await _until(client, run, "done")
            assert done["state"]["decision"]["by"] == "ann"
            assert (await h.result(timeout=10)).status == "done"
            # The worker ran both steps, once each; the server ran none.
            assert served.effects() == [("draft", me), ("send", me)]
            history = await wf.scoped(ns).history(h.run_id)
            assert [c.node for c in history if c.kind == "step"] == ["draft", "send"]

            # Forked over HTTP from after its first step: the fork is a batch run too.
            after_draft = next(c.id for c in history if c.node == "draft")
            r = await client.post(
                f"{run}/fork", json={"checkpoint": after_draft, "state": {"text": "v2"}}
            )
            assert r.status_code == 202, r.text
            fork_run = f"{served.base}/runs/{r.json()['run_id']}"
            (pending_fork,) = (await _until(client, fork_run, "waiting"))["pending"]
            r = await client.post(
                f"{served.base}/approvals/{pending_fork['id']}", json={"approved": True}
            )
            assert r.status_code == 202, r.text
            forked = await _until(client, fork_run, "done")
            assert forked["state"]["text"] == "v2"
            assert served.effects()[2:] == [("send", me)]
            # Forked from its end: done as it stands, nothing runs.
            r = await client.post(f"{run}/fork", json={"state": {"text": "v3"}})
            assert r.status_code == 202, r.text
            at_end = (await client.get(f"{served.base}/runs/{r.json()['run_id']}")).json()
            assert (at_end["status"], at_end["state"]["text"]) == ("done", "v3")

            # Cancelled over HTTP while it waits: deciding it then is refused, and
            # nothing more runs anywhere.
            h2 = await wf.submit(None, **kw)
            run2 = f"{served.base}/runs/{h2.run_id}"
            (pending2,) = (await _until(client, run2, "waiting"))["pending"]
            r = await client.post(run2 + "/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "cancelled"
            assert r.json()["pending"] == []
            assert (await client.get(served.base + "/approvals")).json() == {"approvals": []}
            r = await client.post(
                f"{served.base}/approvals/{pending2['id']}", json={"approved": True}
            )
            assert r.status_code == 409, r.text
            assert "was cancelled" in r.json()["error"]["message"]
            assert (await h2.status()).status == "cancelled"

            # Resume over HTTP of a batch run waiting on its approval: it stays a batch run.
            h3 = await wf.submit(None, **kw)
            run3 = f"{served.base}/runs/{h3.run_id}"
            (pending3,) = (await _until(client, run3, "waiting"))["pending"]
            r = await client.post(run3 + "/resume")
            assert r.status_code == 202, r.text
            assert (await client.get(run3)).json()["status"] == "waiting"
            r = await client.post(
                f"{served.base}/approvals/{pending3['id']}", json={"approved": False}
            )
            assert r.status_code == 202, r.text
            ended = await _until(client, run3, "done")
            assert ended["state"]["decision"]["approved"] is False
            # Every step ran once, in the worker; the server ran none.
            assert served.effects() == [
                ("draft", me),
                ("send", me),
                ("send", me),
                ("draft", me),
                ("draft", me),
                ("send", me),
            ]

            # Failed in its worker, then resumed over HTTP once the cause was fixed: the
            # failed step runs again, in the worker.
            (served.folder / "send-broken").touch()
            h4 = await wf.submit(None, **kw)
            run4 = f"{served.base}/runs/{h4.run_id}"
            (pending4,) = (await _until(client, run4, "waiting"))["pending"]
            r = await client.post(
                f"{served.base}/approvals/{pending4['id']}", json={"approved": True}
            )
            assert r.status_code == 202, r.text
            failed = await _until(client, run4, "failed")
            assert "the mail server is down" in failed["error"]
            (served.folder / "send-broken").unlink()
            r = await client.post(run4 + "/resume")
            assert r.status_code == 202, r.text
            await _until(client, run4, "done")
            history = await wf.scoped(ns).history(h4.run_id)
            assert [c.kind for c in history][-3:] == ["end", "retry", "step"]
            assert served.effects()[6:] == [("draft", me), ("send", me), ("send", me)]
    finally:
        worker.stop()
        await working
        await worker.aclose()
        await wf.aclose()
        b = Batch(served.queue, queue_name=served.tenant)
        await b.queue.purge()
        await drop_namespace(b.store, ns)
        await b.aclose()
