"""The workflow HTTP routes on a real uvicorn server on loopback, driven by httpx.

The app in the server process is the routes of ``routes_for`` behind a small
middleware that takes the tenant from a header (where ``openheim serve``'s
Guard puts the authenticated tenant). Runs live in SQLite.
"""

from __future__ import annotations

import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from wfhelpers import uvicorn_app

APP = textwrap.dedent(
    """
    import os
    import msgspec
    from starlette.applications import Starlette
    import openheim as oh
    from openheim.server.routes.workflows import routes_for
    from openheim.workflow import Decision

    HERE = os.path.dirname(os.path.abspath(__file__))

    class Ticket(msgspec.Struct):
        text: str = ""
        kind: str = ""
        decision: Decision | None = None

    def effect(name):
        with open(os.path.join(HERE, "effects"), "a") as f:
            f.write(name + "\\n")

    triage = oh.Workflow("triage", state=Ticket, store=f"sqlite:///{HERE}/state.db")

    @triage.step
    def classify(t):
        effect("classify")
        return {"kind": "bug" if "crash" in t.text else "question"}

    triage.approval("review", payload=lambda t: {"text": t.text}, output="decision")

    @triage.step
    def publish(t):
        effect("publish")

    triage.edge("classify", "review")
    triage.edge("review", "publish")

    inner = Starlette(routes=routes_for({"triage": triage}))

    async def app(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            scope.setdefault("state", {})["tenant"] = headers.get(b"x-tenant", b"default").decode()
        await inner(scope, receive, send)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    (tmp_path / "wfhttpapp.py").write_text(APP)
    with uvicorn_app(tmp_path, "wfhttpapp:app", "/v1/workflows/triage/approvals") as (url, _):
        yield url, tmp_path


def _sse(client: httpx.Client, url: str, last: str | None = None) -> list[tuple[str, str, Any]]:
    headers = {"X-Tenant": "acme"}
    if last is not None:
        headers["Last-Event-ID"] = last
    out = []
    with client.stream("GET", url, headers=headers, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event_id = kind = ""
        for line in resp.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((event_id, kind, msgspec.json.decode(line[6:])))
                event_id = ""
    return out


def _until(client: httpx.Client, url: str, status: str) -> dict[str, Any]:
    for _ in range(1200):
        body: dict[str, Any] = client.get(url, headers={"X-Tenant": "acme"}).json()
        if body["status"] == status:
            return body
        time.sleep(0.02)
    raise AssertionError(f"{url} never reached {status!r}: {body}")


def test_submit_stream_decide_fork_cancel(server: tuple[str, Path]) -> None:
    url, tmp = server
    acme = {"X-Tenant": "acme"}
    base = url + "/v1/workflows/triage"
    with httpx.Client() as client:
        r = client.post(base + "/runs", json={"input": {"text": "it crashes"}}, headers=acme)
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        assert r.headers["location"] == f"/v1/workflows/triage/runs/{run_id}"

        events = _sse(client, f"{base}/runs/{run_id}/events")
        assert [(k, d.get("kind"), d.get("node")) for _, k, d in events[:-1]] == [
            ("checkpoint", "start", None),
            ("checkpoint", "step", "classify"),
            ("checkpoint", "approval", "review"),
        ]
        assert events[-1][1] == "waiting"
        assert events[-1][2]["pending"][0]["payload"] == {"text": "it crashes"}
        # Reconnecting with Last-Event-ID replays only what came after it.
        again = _sse(client, f"{base}/runs/{run_id}/events", last=events[0][0])
        assert [d["kind"] for _, k, d in again if k == "checkpoint"] == ["step", "approval"]

        # Another tenant sees nothing of it.
        globex = {"X-Tenant": "globex"}
        assert client.get(base + "/approvals", headers=globex).json() == {"approvals": []}
        assert client.get(f"{base}/runs/{run_id}", headers=globex).status_code == 404

        (pending,) = client.get(base + "/approvals", headers=acme).json()["approvals"]
        r = client.post(
            f"{base}/approvals/{pending['id']}", json={"approved": True, "by": "ann"}, headers=acme
        )
        assert r.status_code == 202, r.text
        done = _until(client, f"{base}/runs/{run_id}", "done")
        assert done["state"]["decision"]["by"] == "ann"
        r = client.post(f"{base}/approvals/{pending['id']}", json={"approved": False}, headers=acme)
        assert r.status_code == 409
        assert "already approved" in r.json()["error"]["message"]
        assert (tmp / "effects").read_text().split() == ["classify", "publish"]

        history = _sse(client, f"{base}/runs/{run_id}/events")
        after_classify = next(d["id"] for _, k, d in history if d.get("node") == "classify")
        r = client.post(
            f"{base}/runs/{run_id}/fork",
            json={"checkpoint": after_classify, "state": {"text": "forked"}},
            headers=acme,
        )
        assert r.status_code == 202, r.text
        fork_id = r.json()["run_id"]
        forked = _until(client, f"{base}/runs/{fork_id}", "waiting")
        assert forked["state"]["text"] == "forked"
        r = client.post(f"{base}/runs/{fork_id}/cancel", headers=acme)
        assert r.json()["status"] == "cancelled"
        r = client.post(f"{base}/runs/{fork_id}/resume", headers=acme)
        assert r.status_code == 409
        assert _until(client, f"{base}/runs/{run_id}", "done")["state"]["text"] == "it crashes"
        assert (tmp / "effects").read_text().split() == ["classify", "publish"]


def test_errors(server: tuple[str, Path]) -> None:
    url, _ = server
    base = url + "/v1/workflows/triage"
    with httpx.Client() as client:
        r = client.post(url + "/v1/workflows/nope/runs", json={})
        assert r.status_code == 404
        assert "no workflow 'nope' (workflows: triage)" in r.json()["error"]["message"]
        r = client.post(base + "/runs", json={"input": {"colour": "red"}})
        assert r.status_code == 400
        assert "unknown fields ['colour']" in r.json()["error"]["message"]
        r = client.post(base + "/runs", content=b"{not json")
        assert r.status_code == 400
        assert client.get(base + "/runs/nope").status_code == 404
        assert client.get(base + "/runs/nope/events").status_code == 404
        r = client.post(base + "/approvals/nope", json={"approved": True})
        assert r.status_code == 404
        r = client.post(base + "/runs", json={"input": {"text": "q"}, "wait": True})
        assert r.status_code == 200
        assert r.json()["status"] == "waiting"
