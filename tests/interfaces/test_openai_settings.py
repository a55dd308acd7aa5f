"""The OpenAI-compatible endpoint running an agent on a local model (a tiny GGUF made here),
driven by the official openai client: the request's sampling settings win over the agent's,
and an answer cut by max_tokens is partial text with finish_reason "length", not an error."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import openai
import pytest
from ixhelpers import KEYS, Served, start_server, stop_server, write_project

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from openheim.testing.tiny_gguf import write_tiny_gguf

    folder = tmp_path_factory.mktemp("local")
    gguf = write_tiny_gguf(folder / "tiny.gguf")
    config = f"""\
[agents.tools]
model = "llama:{gguf}"
tools = ["ixtools:get_weather"]
model_settings = {{ max_tokens = 40 }}

[agents.plain]
model = "llama:{gguf}"
model_settings = {{ max_tokens = 40, temperature = 0.0 }}

[store]
url = "memory://"

[[server.api_keys]]
tenant = "acme"
key_env = "IX_ACME_KEY"

[[server.api_keys]]
tenant = "globex"
key_sha256 = "{hashlib.sha256(KEYS["globex"].encode()).hexdigest()}"
"""
    served = start_server(write_project(folder, config), grpc=False)
    yield served
    stop_server(served)


def client(served: Served) -> openai.OpenAI:
    # The client's default retries stay on: an error would show up as repeated requests.
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEYS["acme"])


def requests_served(served: Served) -> int:
    import httpx

    metrics = httpx.get(f"{served.url}/metrics").text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith("openheim_http_requests_total{")
        and 'endpoint="chat_completions"' in line
    )


@pytest.mark.parametrize("agent", ["tools", "plain"])
def test_max_tokens_cuts_the_answer_with_finish_reason_length(local: Served, agent: str) -> None:
    before = requests_served(local)
    res = client(local).chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "What is the weather?"}], max_tokens=3
    )
    assert requests_served(local) == before + 1  # one call: no error, so no retry
    choice = res.choices[0]
    assert choice.finish_reason == "length"
    assert isinstance(choice.message.content, str)
    assert res.usage is not None
    assert res.usage.completion_tokens == 3


def test_streamed_answer_cut_by_max_tokens_ends_with_length(local: Served) -> None:
    stream = client(local).chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    finish, usage = None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == 4


def ask(served: Served, **settings: object) -> str:
    res = client(served).chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "Say something"}],
        max_tokens=8,
        **settings,  # type: ignore[arg-type]
    )
    return res.choices[0].message.content or ""


def test_temperature_seed_and_top_p_are_honoured(local: Served) -> None:
    greedy = ask(local)  # the agent's temperature 0
    assert ask(local) == greedy
    hot = ask(local, temperature=1.5, seed=1)
    assert ask(local, temperature=1.5, seed=1) == hot  # the seed makes sampling repeatable
    others = {ask(local, temperature=1.5, seed=n) for n in range(2, 5)}
    assert others | {hot} != {greedy}  # sampling at temperature 1.5 moved off the greedy path
    # top_p keeps only the most likely token: sampling at any temperature is greedy again.
    assert ask(local, temperature=1.5, seed=1, top_p=1e-9) == greedy


def test_stop_ends_the_answer_before_the_stop_string(local: Served) -> None:
    text = ask(local)
    assert len(text) >= 4, text
    stop = text[2:4]
    cut = ask(local, stop=[stop])
    assert cut == text[: text.index(stop)]


def test_each_model_is_loaded_once_at_start_up_for_every_tenant(local: Served) -> None:
    log = (local.config.parent / f"serve-{local.port}.log").read_text()
    # Two agents, two tenants: each agent's model is loaded once, before the server is ready.
    assert log.count("loaded tiny.gguf") == 2, log
    assert "built for 2 tenant(s)" in log
    for tenant in ("acme", "globex"):
        res = openai.OpenAI(
            base_url=f"{local.url}/v1", api_key=KEYS[tenant]
        ).chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert res.usage is not None
        assert res.usage.completion_tokens == 2
    log = (local.config.parent / f"serve-{local.port}.log").read_text()
    assert log.count("loaded tiny.gguf") == 2  # nothing loaded lazily afterwards
