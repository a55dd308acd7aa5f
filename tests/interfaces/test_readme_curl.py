"""The README's curl examples run as written against a live server."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import Served, child_env, start_server, stop_server, write_project

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "sk-readme-example"
CONFIG = """\
[agents.assistant]
model = "ixtools:echo_model"

[store]
url = "memory://"

[[server.api_keys]]
tenant = "docs"
key_env = "OPENHEIM_API_KEY"
"""


def curl_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in re.split(r"\n\s*\n", block.replace("\\\n", " ")):
            if command.strip().startswith("curl "):
                commands.append(command.strip())
    return commands


@pytest.fixture(scope="module")
def docs_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: None
) -> Iterator[Served]:
    served = start_server(write_project(tmp_path_factory.mktemp("docs"), CONFIG), grpc=False)
    yield served
    stop_server(served)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[None]:
    import os

    old = os.environ.get("OPENHEIM_API_KEY")
    os.environ["OPENHEIM_API_KEY"] = KEY
    yield
    if old is None:
        del os.environ["OPENHEIM_API_KEY"]
    else:
        os.environ["OPENHEIM_API_KEY"] = old


def test_readme_has_curl_examples_for_the_main_routes() -> None:
    joined = "\n".join(curl_commands())
    for route in ("/v1/chat/completions", "/v1/models", "/v1/agents/", "/v1/sessions/"):
        assert route in joined


def test_readme_curl_examples_run(docs_server: Served) -> None:
    env = child_env(OPENHEIM_URL=docs_server.url, OPENHEIM_API_KEY=KEY)
    outputs = []
    for command in curl_commands():
        res = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, f"{command}\n{res.stdout}\n{res.stderr}"
        outputs.append(res.stdout)
    joined = "\n".join(outputs)
    assert json.loads(outputs[1])["choices"][0]["message"]["content"] == "echo: Hello (turn 1)"
    assert "data: [DONE]" in outputs[2]
    assert "openheim-run-id:" in joined.lower()
    assert '"output":"echo: Hello again (turn 2)"' in joined
