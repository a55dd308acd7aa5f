"""The HTTP server on a loopback port, driven by the official openai client and by httpx."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from ixhelpers import CONFIG, KEYS, Served, start_server, stop_server, write_project


def oa_client(server: Served, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[tenant], max_retries=0)


def sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str | None, str]]:
    """(id, event, data) for each SSE event."""
    ident = event = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield ident, event, "\n".join(data)
            ident = event = None
            data = []
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


# ---- OpenAI-compatible --------------------------------------------------------------


def test_openai_client_non_streaming(server: Served) -> None:
    res = oa_client(server).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello"}]
    )
    assert res.choices[0].message.content == "echo: hello (turn 1)"
    assert res.choices[0].finish_reason == "stop"
    assert res.usage is not None
    assert res.usage.total_tokens > 0


def test_openai_client_sends_history_to_the_agent(server: Served) -> None:
    res = oa_client(server).chat.completions.create(
        model="echo",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "echo: first"},
            {"role": "user", "content": "second"},
        ],
    )
    assert res.choices[0].message.content == "echo: second (turn 2)"


def test_openai_client_streaming(server: Served) -> None:
    stream = oa_client(server).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 1
    assert "".join(pieces) == "echo: one two three (turn 1)"
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0


def test_stream_ends_with_done(server: Served) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with server.client() as c:
        text = c.post("/v1/chat/completions", json=body).text
    assert text.rstrip().endswith("data: [DONE]")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_client_tools_are_returned_to_the_client(server: Served) -> None:
    client = oa_client(server)
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather Lima"}]
    res = client.chat.completions.create(model="echo", messages=messages, tools=[WEATHER_TOOL])
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"city": "Lima"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"},
    ]
    again = client.chat.completions.create(model="echo", messages=messages, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == "tool said: rainy"


def test_client_tools_streaming(server: Served) -> None:
    stream = oa_client(server).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "weather Quito"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, args, finish = None, "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                args += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "lookup"
    assert json.loads(args) == {"city": "Quito"}
    assert finish == "tool_calls"


def test_structured_output(server: Served) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "length": {"type": "integer"}},
        "required": ["answer", "length"],
    }
    res = oa_client(server).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "abc"}],
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    )
    assert json.loads(res.choices[0].message.content or "") == {"answer": "abc", "length": 3}


def test_agent_runs_its_own_tools_server_side(server: Served) -> None:
    res = oa_client(server).chat.completions.create(
        model="weather", messages=[{"role": "user", "content": "weather Bern"}]
    )
    assert res.choices[0].message.content == "tool said: sunny in Bern"


def test_unknown_model_is_404(server: Served) -> None:
    with pytest.raises(openai.NotFoundError):
        oa_client(server).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )


def test_models_lists_agents(server: Served) -> None:
    ids = {m.id for m in oa_client(server).models.list()}
    assert {"echo", "weather", "slow", "broken"} <= ids


# ---- agent runs and sessions ------------------------------------------------------------


def test_run_json_and_session_roundtrip(server: Served) -> None:
    with server.client() as c:
        r = c.post("/v1/agents/echo/runs", json={"input": "hi", "session": "roundtrip"})
        assert r.status_code == 200
        run = r.json()
        assert run["status"] == "finished"
        assert run["output"] == "echo: hi (turn 1)"
        r2 = c.post("/v1/agents/echo/runs", json={"input": "again", "session": "roundtrip"})
        assert r2.json()["output"] == "echo: again (turn 2)"
        got = c.get("/v1/sessions/roundtrip").json()
        assert [m["role"] for m in got["messages"]] == ["user", "assistant"] * 2
        assert c.get(f"/v1/runs/{run['run_id']}").json()["output"] == "echo: hi (turn 1)"
        assert "roundtrip" in c.get("/v1/sessions").json()["sessions"]
        assert c.delete("/v1/sessions/roundtrip").status_code == 204
        assert c.get("/v1/sessions/roundtrip").status_code == 404
        assert c.delete("/v1/sessions/roundtrip").status_code == 404


def test_failed_run_reports_its_error(server: Served) -> None:
    with server.client() as c:
        run = c.post("/v1/agents/broken/runs", json={"input": "hi"}).json()
    assert run["status"] == "failed"
    assert run["error"]["type"] == "ModelError"


def test_streamed_run_events_have_ids_and_end_with_done(server: Served) -> None:
    with (
        server.client() as c,
        c.stream(
            "POST", "/v1/agents/weather/runs", json={"input": "weather Rome", "stream": True}
        ) as r,
    ):
        events = list(sse(r.iter_lines()))
    ids = [int(e[0] or -1) for e in events]
    assert ids == list(range(len(events)))
    kinds = [e[1] for e in events]
    assert kinds[0] == "run_started"
    assert "tool_called" in kinds
    assert "tool_result" in kinds
    assert kinds[-1] == "done"
    assert json.loads(events[-1][2])["output"] == "tool said: sunny in Rome"


def test_last_event_id_resumes_a_dropped_stream(server: Served) -> None:
    with server.client() as c:
        with c.stream(
            "POST", "/v1/agents/slow/runs", json={"input": "sleep 0.5", "stream": True}
        ) as r:
            run_id = r.headers["openheim-run-id"]
            first = next(sse(r.iter_lines()))
        # The connection is gone; the run goes on and its events are buffered.
        assert first[0] == "0"
        with c.stream("GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "0"}) as r:
            rest = list(sse(r.iter_lines()))
        with c.stream("GET", f"/v1/runs/{run_id}/events") as r:
            everything = list(sse(r.iter_lines()))
    assert [e[0] for e in rest] == [str(i) for i in range(1, len(rest) + 1)]
    assert rest[-1][1] == "done"
    assert everything[1:] == rest
    text = "".join(json.loads(e[2])["text"] for e in rest if e[1] == "text_delta")
    assert text.startswith("slow answer to sleep 0.5")


# ---- auth, tenants, limits ------------------------------------------------------------


def test_missing_or_wrong_key_is_401(server: Served) -> None:
    r = httpx.get(f"{server.url}/v1/models")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer sk-wrong"})
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong").models.list()


def test_both_key_kinds_authenticate(server: Served) -> None:
    for tenant in ("acme", "globex"):
        with server.client(tenant) as c:
            assert c.get("/v1/models").status_code == 200


def test_tenants_cannot_see_each_others_sessions_or_runs(server: Served) -> None:
    with server.client("acme") as acme, server.client("globex") as globex:
        run = acme.post("/v1/agents/echo/runs", json={"input": "secret", "session": "private"})
        run_id = run.json()["run_id"]
        assert globex.get("/v1/sessions/private").status_code == 404
        assert globex.delete("/v1/sessions/private").status_code == 404
        assert globex.get(f"/v1/runs/{run_id}").status_code == 404
        assert globex.get(f"/v1/runs/{run_id}/events").status_code == 404
        assert "private" not in globex.get("/v1/sessions").json()["sessions"]
        assert acme.get("/v1/sessions/private").status_code == 200


def test_large_bodies_get_413(server: Served) -> None:
    big = {"input": "x" * 5000}
    with server.client() as c:
        assert c.post("/v1/agents/echo/runs", json=big).status_code == 413

        def chunks() -> Iterator[bytes]:
            yield b'{"input": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        assert c.post("/v1/agents/echo/runs", content=chunks()).status_code == 413


def test_concurrent_runs_per_tenant_get_429(server: Served) -> None:
    with server.client() as c:
        streams = [
            c.stream("POST", "/v1/agents/slow/runs", json={"input": "sleep 2", "stream": True})
            for _ in range(2)
        ]
        try:
            for s in streams:
                r = s.__enter__()
                next(sse(r.iter_lines()))  # the run has started
            busy = c.post("/v1/agents/echo/runs", json={"input": "x"})
            assert busy.status_code == 429
            assert busy.headers["retry-after"] == "1"
            chat = c.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": "x"}]},
            )
            assert chat.status_code == 429
            with server.client("globex") as other:  # another tenant has its own budget
                assert other.post("/v1/agents/echo/runs", json={"input": "x"}).status_code == 200
        finally:
            for s in streams:
                s.__exit__(None, None, None)


def test_health_ready_metrics(server: Served) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "openheim_http_requests_total" in metrics
    assert "openheim_active_runs" in metrics


def test_openapi_covers_every_route(server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    expected = {
        ("get", "/"),
        ("get", "/docs"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/v1/models"),
        ("post", "/v1/chat/completions"),
        ("post", "/v1/agents/{name}/runs"),
        ("get", "/v1/runs/{run_id}"),
        ("get", "/v1/runs/{run_id}/events"),
        ("get", "/v1/runs/{run_id}/approvals"),
        ("post", "/v1/runs/{run_id}/approvals"),
        ("get", "/v1/sessions"),
        ("get", "/v1/sessions/{session_id}"),
        ("delete", "/v1/sessions/{session_id}"),
        # routes/workflows.py (the config's [workflows.NAME])
        ("post", "/v1/workflows/{name}/runs"),
        ("get", "/v1/workflows/{name}/runs/{run_id}"),
        ("delete", "/v1/workflows/{name}/runs/{run_id}"),
        ("get", "/v1/workflows/{name}/runs/{run_id}/events"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/cancel"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/resume"),
        ("post", "/v1/workflows/{name}/runs/{run_id}/fork"),
        ("get", "/v1/workflows/{name}/approvals"),
        ("post", "/v1/workflows/{name}/approvals/{approval_id}"),
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == expected
    from openheim.config import load_config
    from openheim.server._app import create_app

    monkeypatch.setenv("IX_ACME_KEY", KEYS["acme"])
    app = create_app(load_config(server.config))
    routes = app.app.routes
    served = {(m.lower(), r.path) for r in routes for m in r.methods if m != "HEAD"}
    assert served == expected


# ---- reload and shutdown --------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_agents_and_keeps_sessions(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    served = start_server(config, grpc=False)
    try:
        with served.client() as c:
            c.post("/v1/agents/echo/runs", json={"input": "keep me", "session": "kept"})
            assert "newcomer" not in {m["id"] for m in c.get("/v1/models").json()["data"]}
            config.write_text(CONFIG + '\n[agents.newcomer]\nmodel = "ixtools:echo_model"\n')
            os.kill(served.proc.pid, signal.SIGHUP)
            for _ in range(200):
                ids = {m["id"] for m in c.get("/v1/models").json()["data"]}
                if "newcomer" in ids:
                    break
                threading.Event().wait(0.05)
            assert "newcomer" in ids
            assert c.get("/v1/sessions/kept").status_code == 200
            out = c.post("/v1/agents/newcomer/runs", json={"input": "hi"}).json()["output"]
            assert out == "echo: hi (turn 1)"
    finally:
        stop_server(served)


def test_sigterm_lets_in_flight_runs_finish(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    served = start_server(config, grpc=False)
    result: dict[str, object] = {}

    def call() -> None:
        with served.client() as c:
            r = c.post("/v1/agents/slow/runs", json={"input": "sleep 1.5"})
            result["status"] = r.status_code
            result["body"] = r.json()

    t = threading.Thread(target=call)
    t.start()
    try:
        for _ in range(200):
            metrics = httpx.get(f"{served.url}/metrics").text
            if "openheim_active_runs 1.0" in metrics:
                break
            threading.Event().wait(0.02)
        served.proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert result["status"] == 200
        assert result["body"]["status"] == "finished"  # type: ignore[index]
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert served.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        stop_server(served)


async def test_provider_models_are_proxied(server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second app whose [providers.up] is the live server: "up:echo" goes through as a model.
    from openheim.config import load_config
    from openheim.server import create_app

    monkeypatch.setenv("IX_ACME_KEY", KEYS["acme"])
    folder = server.config.parent / "chain"
    config = write_project(
        folder,
        f'[providers.up]\nbase_url = "{server.url}/v1"\napi_key_env = "IX_ACME_KEY"\n'
        'models = ["echo"]\n',
    )
    app = create_app(load_config(config))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://chain") as c:
        body = {"model": "up:echo", "messages": [{"role": "user", "content": "via proxy"}]}
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: via proxy (turn 1)"
        body["model"] = "elsewhere:echo"
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 404
    await app.state.aclose()


def test_openapi_schemas_describe_real_answers(server: Served) -> None:
    # The document is generated from the wire structs: real answers validate against it.
    from jsonschema import Draft202012Validator

    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")

    def check(name: str, instance: object) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        Draft202012Validator(schema).validate(instance)

    with server.client() as c:
        body = {"model": "echo", "messages": [{"role": "user", "content": "doc"}]}
        check("ChatCompletion", c.post("/v1/chat/completions", json=body).json())
        check("Run", c.post("/v1/agents/echo/runs", json={"input": "x", "session": "doc"}).json())
        check("Run", c.post("/v1/agents/broken/runs", json={"input": "x"}).json())
        check("Session", c.get("/v1/sessions/doc").json())
        check("SessionList", c.get("/v1/sessions").json())
        check("ModelList", c.get("/v1/models").json())
        check("ErrorBody", c.get("/v1/sessions/none-such").json())
    with pytest.raises(Exception, match="is a required property"):
        check("ChatCompletion", {"id": "x"})
