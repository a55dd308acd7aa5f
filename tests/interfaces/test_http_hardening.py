"""Hostile and careless requests against `openheim serve` on loopback: each answer is a
JSON error with a 4xx status where the client is at fault, and nothing breaks the server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from ixhelpers import CONFIG, KEYS, Served, start_server, stop_server, write_project


@pytest.fixture(scope="module")
def proxy(server: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A second server whose [providers.up] is the first one, with one model listed."""
    config = (
        CONFIG
        + f"""
[agents.crash]
model = "ixtools:crashing_model"

[providers.up]
base_url = "{server.url}/v1"
api_key_env = "IX_ACME_KEY"
models = ["echo"]
"""
    )
    config = config.replace("max_body_bytes = 4096", "max_body_bytes = 1048576")
    served = start_server(write_project(tmp_path_factory.mktemp("proxy"), config), grpc=False)
    yield served
    stop_server(served)


def log_of(served: Served) -> str:
    return (served.config.parent / f"serve-{served.port}.log").read_text(errors="replace")


def is_json_error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    error: dict[str, object] = r.json()["error"]
    assert isinstance(error["message"], str)
    assert isinstance(error["type"], str)
    return error


# ---- proxied "<provider>:<model>" names ----------------------------------------------------


def test_only_listed_provider_models_are_proxied(proxy: Served) -> None:
    with proxy.client() as c:
        body = {"model": "up:echo", "messages": [{"role": "user", "content": "via proxy"}]}
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "echo: via proxy (turn 1)"
        # "weather" exists upstream, but is not listed in [providers.up].models.
        for name in ("up:weather", "up:anything-at-all"):
            error = is_json_error(c.post("/v1/chat/completions", json={**body, "model": name}), 404)
            assert error["code"] == "model_not_found"
        assert "up:echo" in {m["id"] for m in c.get("/v1/models").json()["data"]}


async def test_proxied_model_cache_is_bounded_and_closes_what_it_evicts(
    server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openheim.config import load_config
    from openheim.server._app import create_app
    from openheim.server._state import ServerState

    monkeypatch.setenv("IX_ACME_KEY", KEYS["acme"])
    config = write_project(
        server.config.parent / "lru",
        f'[providers.up]\nbase_url = "{server.url}/v1"\napi_key_env = "IX_ACME_KEY"\n'
        'models = ["echo", "weather", "slow"]\n',
    )
    state = ServerState(load_config(config), max_models=2)
    app = create_app(state.config, state)
    transport = httpx.ASGITransport(app=app)
    first = await state.provider_model("up:echo")
    await state.release_model(first)
    async with httpx.AsyncClient(transport=transport, base_url="http://lru") as c:
        for name in ("up:echo", "up:weather", "up:slow"):
            body = {"model": name, "messages": [{"role": "user", "content": "x"}]}
            assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
    assert state.cached_models() == ["up:weather", "up:slow"]
    assert first._http._client is None  # type: ignore[attr-defined]  # closed on eviction
    await state.aclose()


# ---- failures that are not OpenheimError ---------------------------------------------------

CRASH = {"model": "crash", "messages": [{"role": "user", "content": "x"}]}


def test_a_crashing_model_ends_a_chat_stream_with_an_error_chunk_and_done(proxy: Served) -> None:
    with proxy.client() as c:
        text = c.post("/v1/chat/completions", json={**CRASH, "stream": True}).text
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error"
    assert "RuntimeError" in error["message"]


def test_a_crashing_model_answers_json_500_and_is_logged(proxy: Served) -> None:
    with proxy.client() as c:
        error = is_json_error(c.post("/v1/chat/completions", json=CRASH), 500)
    assert error["type"] == "server_error"
    assert "RuntimeError" in str(error["message"])
    log = log_of(proxy)
    assert "Traceback" in log
    assert "RuntimeError: a bug in the model code" in log


# ---- bodies that do not parse ----------------------------------------------------------


def deep(n: int = 100_000) -> bytes:
    return b"[" * n + b"]" * n


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], '
            b'"tools": [{"function": {"name": "f", "parameters": {"a": ' + deep() + b"}}}]}",
        ),
        ("/v1/agents/echo/runs", b'{"input": "x", "extra": ' + deep() + b"}"),
        (
            "/v1/chat/completions",
            b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        ),
        ("/v1/agents/echo/runs", b'{"input": "caf\xe9"}'),
    ],
    ids=["nested-chat", "nested-run", "utf8-chat", "utf8-run"],
)
def test_unparseable_bodies_are_400(proxy: Served, path: str, body: bytes) -> None:
    with proxy.client() as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    error = is_json_error(r, 400)
    assert error["type"] == "invalid_request_error"
    assert len(str(error["message"])) < 300


# ---- session ids ---------------------------------------------------------------------------

BAD_SESSION_IDS = ["a/b", "../x", "a\x00b", "\x1b[31mred", "tab\there", "x" * 129, " lead", ""]


@pytest.mark.parametrize("sid", BAD_SESSION_IDS, ids=range(len(BAD_SESSION_IDS)))
def test_bad_session_ids_are_refused_at_creation_without_echo(proxy: Served, sid: str) -> None:
    with proxy.client() as c:
        r = c.post("/v1/agents/echo/runs", json={"input": "x", "session": sid})
        error = is_json_error(r, 400)
        assert error["param"] == "session"
        message = str(error["message"])
        assert "A-Z" in message  # says what is allowed
        assert sid not in message or not sid
        assert all(ch.isprintable() for ch in message)
        assert sid not in c.get("/v1/sessions").json()["sessions"]


def test_good_session_ids_work_and_bad_ones_are_400_when_read(proxy: Served) -> None:
    with proxy.client() as c:
        for sid in ("user-42", "a.b:c_d", "X" * 128):
            r = c.post("/v1/agents/echo/runs", json={"input": "x", "session": sid})
            assert r.status_code == 200, r.text
            assert c.get(f"/v1/sessions/{sid}").status_code == 200
            assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        long = "y" * 5000
        error = is_json_error(c.get(f"/v1/sessions/{long}"), 400)
        assert long not in str(error["message"])
        is_json_error(c.delete("/v1/sessions/%1b%5b31m"), 400)


def test_error_messages_do_not_echo_long_or_control_input(proxy: Served) -> None:
    name = "\x1b[2J" + "z" * 2000
    with proxy.client() as c:
        r = c.post("/v1/chat/completions", json={**CRASH, "model": name})
        error = is_json_error(r, 404)
        r2 = c.post("/v1/agents/" + "q" * 2000 + "/runs", json={"input": "x"})
        error2 = is_json_error(r2, 404)
    for e in (error, error2):
        message = str(e["message"])
        assert len(message) < 300
        assert "\x1b" not in message


# ---- the root, the docs and unknown routes ---------------------------------------------


def test_root_and_docs_need_no_key_and_point_to_the_openapi_document(server: Served) -> None:
    root = httpx.get(f"{server.url}/")
    assert root.status_code == 200
    assert root.json()["openapi"] == "/openapi.json"
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert 'href="/openapi.json"' in docs.text
    assert "/v1/chat/completions" in docs.text


def test_unknown_routes_and_methods_answer_the_json_error_shape(server: Served) -> None:
    with server.client() as c:
        error = is_json_error(c.get("/v1/nothing-here"), 404)
        assert "/openapi.json" in str(error["message"])
        is_json_error(c.post("/healthz"), 405)
        is_json_error(c.put("/v1/models"), 405)
    is_json_error(httpx.get(f"{server.url}/v1/nothing-here"), 401)
