"""`openheim serve` on one shared store: tenants kept apart, runs that outlive the process."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ixhelpers import CONFIG, HERE, KEYS, Served, start_server, stop_server, write_project

from openheim.stores import open_store
from openheim.stores.history import StoreHistory

DURABLE_AGENTS = """
[agents.block]
model = "durabletools:block_model"
tools = ["durabletools:wait_for_file"]

[agents.buggy]
model = "durabletools:buggy_model"

[agents.chatty]
model = "durabletools:chatty_model"
"""


def sqlite_project(folder: Path, config: str = CONFIG, **server: object) -> Path:
    """The interface tests' project on one SQLite file that every tenant shares.

    ``server`` adds keys to its ``[server]`` table (``run_retention=1``, ...).
    """
    db = folder / "state.db"
    text = config.replace('url = "memory://"', f'url = "sqlite:///{db}"')
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
    text = text.replace("shutdown_grace = 5\n", "shutdown_grace = 5\n" + extra) + DURABLE_AGENTS
    path = write_project(folder, text)
    shutil.copy(HERE / "durabletools.py", folder / "durabletools.py")
    return path


def sse(lines: Iterator[str]) -> Iterator[tuple[int, str, dict[str, object]]]:
    """(id, event, data) for each SSE event."""
    ident, event = -1, ""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield ident, event, json.loads("\n".join(data))
            ident, event, data = -1, "", []
        elif line.startswith("id: "):
            ident = int(line[4:])
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


def poll(predicate: object, limit: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit} s")
        time.sleep(0.05)


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


# ---- Last-Event-ID ---------------------------------------------------------------------


def test_last_event_id_must_be_an_event_id_of_the_run(shared: Served) -> None:
    with shared.client() as c:
        with c.stream("POST", "/v1/agents/echo/runs", json={"input": "hi", "stream": True}) as r:
            run_id = r.headers["openheim-run-id"]
            events = list(sse(r.iter_lines()))
        last = events[-1][0]
        assert [e[0] for e in events] == list(range(last + 1))
        url = f"/v1/runs/{run_id}/events"
        for bad in ["-5", "-100", "-1", "0_3", "+1", " 1 ", "1.0", "abc", "٣", str(last + 1), "99"]:
            for how in ("header", "query"):
                if how == "header" and bad == " 1 ":
                    continue  # HTTP clients refuse to send it (and servers strip the spaces)
                if how == "header":
                    r = c.get(url, headers=[(b"Last-Event-ID", bad.encode())])
                else:
                    r = c.get(url, params={"after": bad})
                assert r.status_code == 400, (how, bad, r.text)
                error = r.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert error["type"] == "invalid_request_error"
                assert "not an event id" in error["message"]
        # Every real id works, and the stream goes on right after it.
        for after in range(last + 1):
            with c.stream("GET", url, headers={"Last-Event-ID": str(after)}) as r:
                assert r.status_code == 200
                rest = list(sse(r.iter_lines()))
            assert [e[0] for e in rest] == list(range(after + 1, last + 1))
            assert rest == events[after + 1 :]
        r = c.get(url, params={"after": "0"})
        assert [e[0] for e in sse(r.iter_lines())] == list(range(1, last + 1))


# ---- failures --------------------------------------------------------------------------


def test_a_model_bug_ends_the_stream_with_an_error_event(shared: Served) -> None:
    with (
        shared.client() as c,
        c.stream("POST", "/v1/agents/buggy/runs", json={"input": "x", "stream": True}) as r,
    ):
        run_id = r.headers["openheim-run-id"]
        events = list(sse(r.iter_lines()))
    assert events[-1][1] == "error"
    error = events[-1][2]["error"]
    assert isinstance(error, dict)
    assert error["type"] == "RuntimeError"
    # The client is told what kind of failure it was; the details go to the server log only.
    assert "server log" in error["message"]
    assert "list index" not in error["message"]
    with shared.client() as c:
        run = c.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "failed"
        assert run["error"]["message"] == error["message"]
        # Not streamed: the same answer.
        run = c.post("/v1/agents/buggy/runs", json={"input": "x"}).json()
        assert run["status"] == "failed"
        assert run["error"]["type"] == "RuntimeError"
    log = next(shared.config.parent.glob(f"serve-{shared.port}.log")).read_text()
    assert "Traceback" in log
    assert "RuntimeError: model bug: list index out of range" in log
    assert run_id in log


# ---- retention and bounds --------------------------------------------------------------


def test_finished_runs_expire_on_a_timer(tmp_path: Path) -> None:
    served = start_server(sqlite_project(tmp_path, run_retention=1), grpc=False)
    try:
        with served.client() as c:
            run = c.post("/v1/agents/echo/runs", json={"input": "short-lived"}).json()
            run_id = run["run_id"]
            assert c.get(f"/v1/runs/{run_id}").status_code == 200
            # No other run starts: the timer alone must expire it (memory and store).
            poll(
                lambda: c.get(f"/v1/runs/{run_id}").status_code == 404,
                what="the finished run expiring",
            )
            assert c.get(f"/v1/runs/{run_id}/events").status_code == 404
    finally:
        stop_server(served)


def test_events_are_bounded_per_run(tmp_path: Path) -> None:
    served = start_server(sqlite_project(tmp_path, max_run_events=40), grpc=False)
    try:
        with served.client() as c:
            run = c.post("/v1/agents/chatty/runs", json={"input": "words 500"}).json()
            assert run["status"] == "finished"
            assert run["output"].split()[-1] == "w499"
            r = c.get(f"/v1/runs/{run['run_id']}/events")
            kept = list(sse(r.iter_lines()))
        ids = [e[0] for e in kept]
        # 500 text deltas and more were sent; the newest ones are kept, ending with done.
        assert ids[-1] >= 500
        assert ids == list(range(ids[0], ids[-1] + 1))
        assert 40 <= len(kept) < 80
        assert kept[-1][1] == "done"
    finally:
        stop_server(served)


# ---- kill, restart, resume -------------------------------------------------------------


def _kill(served: Served) -> None:
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(30)


def _calls(gate: Path) -> int:
    calls = Path(f"{gate}.calls")
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_run_survives_sigkill_and_the_client_gets_the_rest(tmp_path: Path) -> None:
    config = sqlite_project(tmp_path, run_lease_ttl=1)
    gate = tmp_path / "gate.txt"
    first = start_server(config, grpc=False)
    seen: list[tuple[int, str, dict[str, object]]] = []
    try:
        with (
            first.client() as c,
            c.stream(
                "POST", "/v1/agents/block/runs", json={"input": f"block {gate}", "stream": True}
            ) as r,
        ):
            run_id = r.headers["openheim-run-id"]
            for event in sse(r.iter_lines()):
                seen.append(event)
                if event[1] == "tool_called":
                    break
        poll(lambda: _calls(gate) == 1, what="the tool starting")
    finally:
        _kill(first)  # mid-tool: the run is neither finished nor failed
    assert [e[0] for e in seen] == list(range(len(seen)))
    second = start_server(config, grpc=False)
    try:
        with second.client() as c:
            # The restarted server knows the run (from the store) before it finishes.
            poll(lambda: _calls(gate) == 2, what="the run resuming after the restart")
            assert c.get(f"/v1/runs/{run_id}").json()["status"] == "running"
            gate.write_text("opened after the restart")
            last = seen[-1][0]
            with c.stream(
                "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
            ) as r:
                assert r.status_code == 200
                rest = list(sse(r.iter_lines()))
            run = c.get(f"/v1/runs/{run_id}").json()
    finally:
        stop_server(second)
    assert [e[0] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    assert rest[-1][1] == "done"
    assert rest[-1][2]["output"] == "the file said: opened after the restart"
    assert any(e[1] == "tool_result" for e in rest)
    assert run["status"] == "finished"
    assert run["run_id"] == run_id
    assert _calls(gate) == 2  # the interrupted call ran again once, nothing more


def test_two_servers_on_one_store_resume_an_interrupted_run_once(tmp_path: Path) -> None:
    config = sqlite_project(tmp_path, run_lease_ttl=1)
    gate = tmp_path / "gate.txt"
    first = start_server(config, grpc=False)
    try:
        with (
            first.client() as c,
            c.stream(
                "POST", "/v1/agents/block/runs", json={"input": f"block {gate}", "stream": True}
            ) as resp,
        ):
            run_id = resp.headers["openheim-run-id"]
            for event in sse(resp.iter_lines()):
                if event[1] == "tool_called":
                    break
        poll(lambda: _calls(gate) == 1, what="the tool starting")
    finally:
        _kill(first)
    servers = [start_server(config, grpc=False), start_server(config, grpc=False)]
    try:
        poll(lambda: _calls(gate) >= 2, what="one server resuming the run")
        gate.write_text("done")
        outcomes = []
        for served in servers:
            with served.client() as c:
                poll(
                    lambda c=c: c.get(f"/v1/runs/{run_id}").json()["status"] == "finished",
                    what="the run finishing",
                )
                with c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
                    outcomes.append(list(sse(resp.iter_lines())))
        # A third server started now finds nothing to resume.
        third = start_server(config, grpc=False)
        stop_server(third)
    finally:
        for served in servers:
            stop_server(served)
    assert _calls(gate) == 2  # resumed exactly once
    for events in outcomes:
        assert [e[1] for e in events].count("done") == 1
        assert events[-1][2]["output"] == "the file said: done"
    assert outcomes[0] == outcomes[1]  # both servers serve the one stored log


# ---- approvals -------------------------------------------------------------------------


def _paused_run(c: httpx.Client, path: str) -> tuple[str, str]:
    run = c.post("/v1/agents/slow/runs", json={"input": f"delete {path}"}).json()
    assert run["status"] == "finished"
    assert run["stop_reason"] == "approval_required"
    [pending] = run["pending"]
    return run["run_id"], pending["id"]


def test_approvals_over_http(shared: Served) -> None:
    with shared.client("acme") as acme, shared.client("globex") as globex:
        run_id, call_id = _paused_run(acme, "report.txt")
        url = f"/v1/runs/{run_id}/approvals"
        listed = acme.get(url).json()
        assert listed == {
            "run_id": run_id,
            "status": "paused",
            "agent": "slow",
            "session": None,
            "pending": [
                {"id": call_id, "tool": "delete_file", "arguments": {"path": "report.txt"}}
            ],
        }
        # Another tenant sees no such run and cannot decide it.
        assert globex.get(url).status_code == 404
        assert (
            globex.post(url, json={"decisions": [{"id": call_id, "approved": True}]}).status_code
            == 404
        )
        # Bad decisions are 400s and change nothing.
        bodies: list[dict[str, Any]] = [
            {"decisions": []},
            {"decisions": [{"id": "nope", "approved": True}]},
            {"decisions": [{"id": call_id, "approved": True}, {"id": call_id, "approved": False}]},
            {"decisions": [{"id": call_id}]},
            {"nothing": 1},
        ]
        for bad in bodies:
            r = acme.post(url, json=bad)
            assert r.status_code == 400, (bad, r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert acme.get(url).json()["status"] == "paused"
        done = acme.post(url, json={"decisions": [{"id": call_id, "approved": True}]})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "finished"
        assert body["stop_reason"] == "final"
        assert body["output"] == "done: deleted report.txt"
        # Decided once: a second decision is refused, and nothing is pending.
        again = acme.post(url, json={"decisions": [{"id": call_id, "approved": True}]})
        assert again.status_code == 409
        assert acme.get(url).json() == {
            "run_id": run_id,
            "status": "finished",
            "agent": None,
            "session": None,
            "pending": [],
        }
        # The run's event stream holds both parts: the pause, then the continued run.
        with acme.stream("GET", f"/v1/runs/{run_id}/events") as r:
            kinds = [e[1] for e in sse(r.iter_lines())]
        assert kinds[0] == "run_started"
        assert "approval_required" in kinds
        assert "run_resumed" in kinds
        assert kinds.count("done") == 2
        assert kinds.index("run_resumed") > kinds.index("approval_required")


def test_rejections_reach_the_model_and_stream(shared: Served) -> None:
    with shared.client() as c:
        run_id, call_id = _paused_run(c, "keep.txt")
        decision = {"id": call_id, "approved": False, "reason": "keep it"}
        with c.stream(
            "POST",
            f"/v1/runs/{run_id}/approvals",
            json={"decisions": [decision], "stream": True},
        ) as r:
            assert r.status_code == 200
            events = list(sse(r.iter_lines()))
    assert events[0][1] == "run_resumed"
    assert events[-1][1] == "done"
    result = events[-1][2]["output"]
    assert isinstance(result, str)
    assert "keep it" in result
    assert "deleted keep.txt" not in result


def test_approvals_over_grpc(shared: Served) -> None:
    import grpc

    from openheim.server import openheim_pb2 as pb
    from openheim.server import openheim_pb2_grpc as pb_grpc

    def auth(tenant: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {KEYS[tenant]}")]

    channel = grpc.insecure_channel(f"127.0.0.1:{shared.grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    with channel:
        stub = pb_grpc.OpenheimStub(channel)  # type: ignore[no-untyped-call]
        events = list(
            stub.RunAgent(
                pb.RunAgentRequest(agent="slow", input="delete g.txt"), metadata=auth("acme")
            )
        )
        done = json.loads(events[-1].data)
        assert done["stop_reason"] == "approval_required"
        run_id = events[-1].run_id
        listed = stub.ListApprovals(pb.ListApprovalsRequest(run_id=run_id), metadata=auth("acme"))
        assert listed.status == "paused"
        assert listed.agent == "slow"
        [call] = listed.pending
        assert call.tool == "delete_file"
        assert json.loads(call.arguments) == {"path": "g.txt"}
        with pytest.raises(grpc.RpcError) as err:
            stub.ListApprovals(pb.ListApprovalsRequest(run_id=run_id), metadata=auth("globex"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        yes = pb.ApprovalDecision(id=call.id, approved=True)
        with pytest.raises(grpc.RpcError) as err:
            list(
                stub.DecideApprovals(
                    pb.DecideApprovalsRequest(run_id=run_id, decisions=[yes]),
                    metadata=auth("globex"),
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        bad = pb.ApprovalDecision(id="nope", approved=True)
        with pytest.raises(grpc.RpcError) as err:
            list(
                stub.DecideApprovals(
                    pb.DecideApprovalsRequest(run_id=run_id, decisions=[bad]),
                    metadata=auth("acme"),
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        resumed = list(
            stub.DecideApprovals(
                pb.DecideApprovalsRequest(run_id=run_id, decisions=[yes]), metadata=auth("acme")
            )
        )
        assert resumed[0].type == "run_resumed"
        assert resumed[-1].type == "done"
        assert json.loads(resumed[-1].data)["output"] == "done: deleted g.txt"
        assert [e.id for e in resumed] == list(range(resumed[0].id, resumed[0].id + len(resumed)))
        assert resumed[0].id == events[-1].id + 1
        with pytest.raises(grpc.RpcError) as err:
            list(
                stub.DecideApprovals(
                    pb.DecideApprovalsRequest(run_id=run_id, decisions=[yes]),
                    metadata=auth("acme"),
                )
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- agents built from openheim.toml -----------------------------------------------------


async def test_agents_from_the_config_are_checkpointed_in_its_store(tmp_path: Path) -> None:
    from openheim.agent.approvals import paused_runs
    from openheim.config import load_config, open_history

    config = load_config(sqlite_project(tmp_path))
    history = open_history(config.store_url, "acme")
    try:
        agent = config.build_agent("slow", history=history)
        assert agent.checkpointer is not None
        assert agent.checkpointer.store is history.store
        res = await agent.run("delete notes.txt")
        assert res.stop_reason == "approval_required"
        # The paused run is in the configured store, where another process finds it.
        other = open_history(config.store_url, "acme")
        try:
            from openheim.stores.checkpoint import Checkpointer

            [paused] = await paused_runs(Checkpointer(other.store))
            assert paused.run_id == res.run_id
        finally:
            await other.aclose()
        assert config.build_agent("slow", history=history, checkpointer=False).checkpointer is None
        assert config.build_agent("slow").checkpointer is None  # in-memory sessions: none
    finally:
        await history.aclose()


def test_a_server_leaves_a_live_cli_run_alone_and_resumes_a_dead_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ixhelpers import child_env

    config = sqlite_project(tmp_path, run_lease_ttl=1)
    gate = tmp_path / "gate.txt"
    cmd = [sys.executable, "-m", "openheim", "run", "block", f"block {gate}", "--tenant", "acme"]
    cli = subprocess.Popen(
        cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        poll(lambda: _calls(gate) == 1, what="the CLI run reaching its tool")
        served = start_server(config, grpc=False)
        try:
            # The server recovers every lease period (0.5 s here); the live CLI run holds its
            # lease, so the server must not start the tool a second time meanwhile.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert _calls(gate) == 1
                time.sleep(0.1)
            gate.write_text("from the CLI")
            out, err = cli.communicate(timeout=60)
            assert cli.returncode == 0, err
            assert b"the file said: from the CLI" in out
            assert _calls(gate) == 1
            # A CLI run killed mid-tool is resumed by the server once its lease expires.
            gate.unlink()
            Path(f"{gate}.calls").unlink()
            cli = subprocess.Popen(
                cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            poll(lambda: _calls(gate) == 1, what="the second CLI run reaching its tool")
            cli.kill()
            cli.communicate(timeout=30)
            poll(lambda: _calls(gate) == 2, what="the server resuming the dead CLI run")
            gate.write_text("resumed")

            async def unfinished() -> list[str]:
                from openheim.stores.checkpoint import Checkpointer

                store = open_store(f"sqlite:///{tmp_path / 'state.db'}", namespace="acme")
                try:
                    return await Checkpointer(store).runs()
                finally:
                    await store.aclose()

            poll(lambda: asyncio.run(unfinished()) == [], what="the resumed run finishing")
            assert _calls(gate) == 2
        finally:
            stop_server(served)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate(timeout=30)


# ---- the OpenAI-compatible endpoint stores nothing -------------------------------------


def test_chat_completions_pass_the_conversation_and_store_nothing(shared: Served) -> None:
    import openai

    async def stored() -> tuple[list[str], list[str]]:
        store = open_store(f"sqlite:///{shared.config.parent / 'state.db'}", namespace="acme")
        try:
            return await store.list(), await store.list_logs()
        finally:
            await store.aclose()

    before = asyncio.run(stored())
    client = openai.OpenAI(base_url=f"{shared.url}/v1", api_key=KEYS["acme"], max_retries=0)
    conversation: list[Any] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "second"},
    ]
    res = client.chat.completions.create(model="echo", messages=conversation)
    assert res.choices[0].message.content == "echo: second (turn 2)"
    chunks = client.chat.completions.create(model="echo", messages=conversation, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: second (turn 2)"
    # A streamed answer the client walks away from leaves nothing behind either.
    with shared.client() as c:
        body = {"model": "slow", "messages": [{"role": "user", "content": "sleep 0.5"}]}
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            next(r.iter_lines())
    poll(lambda: asyncio.run(stored()) == before, what="the store staying as it was")
    with shared.client() as c:
        assert not [s for s in c.get("/v1/sessions").json()["sessions"] if "chat" in s]


def test_two_decisions_at_once_continue_the_run_once(shared: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with shared.client() as c:
        run_id, call_id = _paused_run(c, "twice.txt")
    body = {"decisions": [{"id": call_id, "approved": True}]}

    def decide() -> int:
        with shared.client() as c:
            return c.post(f"/v1/runs/{run_id}/approvals", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: decide(), range(4)))
    assert codes == [200, 409, 409, 409]
    with shared.client() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as r:
        events = list(sse(r.iter_lines()))
    results = [e for e in events if e[1] == "tool_result"]
    assert [e[2]["content"] for e in results] == ["deleted twice.txt"]
    assert [e[1] for e in events].count("run_resumed") == 1


def test_a_decision_inside_another_holders_lease_is_a_clear_409(
    shared: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed server's lease on a paused run that has not lapsed: nothing is decided,
    and the 409 names the holder and how long to wait."""
    from openheim.config import load_config, open_history
    from openheim.stores.lease import Lease

    monkeypatch.setenv("IX_ACME_KEY", KEYS["acme"])
    config = load_config(shared.config)
    with shared.client("acme") as c:
        run_id, call_id = _paused_run(c, "leased.txt")
        url = f"/v1/runs/{run_id}/approvals"
        decision = {"decisions": [{"id": call_id, "approved": True}]}

        async def hold() -> tuple[Any, Lease]:
            history = open_history(config.store_url, "acme")
            lease = Lease(history.store, "run/" + run_id, holder="deadhost:4242:0bad", ttl=15)
            assert await lease.acquire()
            return history, lease

        history, lease = asyncio.run(hold())
        try:
            r = c.post(url, json=decision)
            assert r.status_code == 409, r.text
            msg = r.json()["error"]["message"]
            assert "'deadhost:4242:0bad'" in msg
            assert "nothing was decided" in msg
            assert c.get(url).json()["status"] == "paused"  # still decidable
        finally:

            async def free() -> None:
                await lease.release()
                await history.aclose()

            asyncio.run(free())
        done = c.post(url, json=decision)
        assert done.status_code == 200, done.text
        assert done.json()["output"] == "done: deleted leased.txt"
