"""`openheim serve` on a real uvicorn: /metrics after runs, JSON logs with run context, redaction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from openheim.testing.serve import free_port, start_serve, stop_process

HERE = Path(__file__).parent
KEY = "sk-tenant-telemetry-test-key-42"

CONFIG = """\
[agents.tel]
model = "teltools:model"
tools = ["teltools:lookup", "teltools:leaky"]

[store]
url = "memory://"

[[server.api_keys]]
tenant = "acme"
key_env = "TEL_ACME_KEY"
"""


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("telserve")
    shutil.copy(HERE / "teltools.py", folder / "teltools.py")
    config = folder / "openheim.toml"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    env = dict(os.environ, TEL_ACME_KEY=KEY)
    env.pop("PYTHONPATH", None)
    log = folder / "serve.log"
    proc = start_serve(config, port=port, args=["--log-format", "json"], env=env, log=log)
    try:
        yield Served(proc, port, log)
    finally:
        stop_process(proc, 20)


def value(
    m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_change_after_a_run(served: Served) -> None:
    before = served.metrics()
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "scripted",
        "gen_ai_request_model": "tel",
    }
    with served.client() as c:
        run = c.post("/v1/agents/tel/runs", json={"input": "lookup paris", "session": "m1"})
        assert run.status_code == 200
        assert run.json()["output"] == "tool said: PARIS"
    after = served.metrics()
    # Two model calls (the tool call, then the answer), one tool call, one run.
    token_count = "gen_ai_client_token_usage_count"
    assert value(after, token_count, **genai, gen_ai_token_type="input") == (
        value(before, token_count, **genai, gen_ai_token_type="input") + 2
    )
    assert value(after, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") > (
        value(before, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output")
    )
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert value(after, duration, **genai, error_type="") == (
        value(before, duration, **genai, error_type="") + 2
    )
    tools = "openheim_tool_calls_total"
    assert value(after, tools, tool="lookup", outcome="ok") == (
        value(before, tools, tool="lookup", outcome="ok") + 1
    )
    runs = "openheim_agent_runs_total"
    assert value(after, runs, agent="tel", status="final") == (
        value(before, runs, agent="tel", status="final") + 1
    )
    # The app's own metrics are still there.
    assert any(name == "openheim_http_requests_total" for name, _ in after)


def test_json_logs_carry_the_run_and_hide_credentials(served: Served) -> None:
    before = served.metrics()
    with served.client() as c:
        run = c.post("/v1/agents/tel/runs", json={"input": "leak", "session": "sess-9"}).json()
    assert run["status"] == "finished"
    after = served.metrics()
    errors = "openheim_tool_calls_total"
    assert value(after, errors, tool="leaky", outcome="error") == (
        value(before, errors, tool="leaky", outcome="error") + 1
    )
    deadline = time.monotonic() + 10
    while "leaky" not in served.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = served.log.read_text()
    assert "TELEMETRYleak" not in text
    assert KEY not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warnings = [r for r in records if "leaky" in r.get("message", "")]
    assert len(warnings) == 1, records
    w = warnings[0]
    assert w["level"] == "warning"
    assert w["run_id"] == run["run_id"]
    assert w["session"] == "sess-9"
    assert w["agent"] == "tel"
    assert "Authorization': 'Bearer ***'" in w["exc"]
    assert "x-api-key': '***'" in w["exc"]
