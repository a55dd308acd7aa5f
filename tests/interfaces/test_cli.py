"""The `openheim` command through subprocesses: exit codes, --json, stdin, config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ixhelpers import child_env, write_project


def oh(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openheim", *args],
        cwd=cwd,
        env=child_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_prints_the_answer_when_piped(project: Path) -> None:
    res = oh("run", "echo", "hello there", cwd=project.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "echo: hello there (turn 1)\n"


def test_run_reads_the_prompt_from_stdin(project: Path) -> None:
    res = oh("run", "echo", cwd=project.parent, stdin="from stdin\n")
    assert res.returncode == 0, res.stderr
    assert "echo: from stdin" in res.stdout


def test_run_json_has_output_usage_stop_reason_and_session(project: Path) -> None:
    res = oh("run", "weather", "weather Oslo", "--json", "--session", "s1", cwd=project.parent)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["output"] == "tool said: sunny in Oslo"
    assert out["stop_reason"] == "final"
    assert out["session"] == "s1"
    assert out["usage"]["requests"] == 2
    assert out["run_id"]


def test_agent_failure_exits_1_with_the_error(project: Path) -> None:
    res = oh("run", "broken", "hi", "--json", cwd=project.parent)
    assert res.returncode == 1
    assert json.loads(res.stdout)["error"]["type"] == "ModelError"
    assert "the model is down" in res.stderr


def test_paused_run_reports_pending_approval(project: Path) -> None:
    res = oh("run", "slow", "delete /tmp/x", "--json", cwd=project.parent)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["stop_reason"] == "approval_required"
    assert out["pending"][0]["tool"] == "delete_file"
    res = oh("run", "slow", "delete /tmp/x", cwd=project.parent)
    assert res.returncode == 1
    assert "delete_file needs approval" in res.stderr


def test_unknown_agent_is_a_usage_error(project: Path) -> None:
    res = oh("run", "nope", "hi", cwd=project.parent)
    assert res.returncode == 2
    assert "no agent 'nope'" in res.stderr
    assert "echo" in res.stderr


def test_bad_arguments_exit_2(project: Path) -> None:
    assert oh("run", cwd=project.parent).returncode == 2
    assert oh("frobnicate", cwd=project.parent).returncode == 2


@pytest.mark.parametrize(
    ("snippet", "line", "expected"),
    [
        ('[agents.a]\nmodel = "opena:gpt-4o"\n', 2, "agents.a.model: unknown provider 'opena'"),
        (
            '[server]\nport = 1\n\n[[server.api_keys]]\ntenant = "t"\nkey = "sk-raw"\n',
            6,
            "server.api_keys[0].key: raw API keys are not allowed",
        ),
        ('[agents.a]\nmodel = "openai:x"\ntools = ["ixtools:nope"]\n', 3, "agents.a.tools[0]"),
        ('[agents.a]\nmodel = "openai:x"\ncolour = "blue"\n', 3, "agents.a.colour: unknown key"),
        ('[server]\nhost = "x"\nport = "eighty"\n', 3, "server.port: Expected `int`"),
        ("[agents.a\nmodel=1\n", 1, "invalid TOML"),
    ],
)
def test_config_errors_name_file_line_and_key(
    tmp_path: Path, snippet: str, line: int, expected: str
) -> None:
    config = write_project(tmp_path, "# a comment\n" * 0 + snippet)
    res = oh("run", "a", "hi", "--config", str(config), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"{config}:{line}:" in res.stderr
    assert expected in res.stderr


def test_models_lists_the_configured_agents(project: Path) -> None:
    res = oh("models", "--json", cwd=project.parent)
    assert res.returncode == 0, res.stderr
    agents = {a["agent"]: a["model"] for a in json.loads(res.stdout)["agents"]}
    assert agents["echo"] == "ixtools:echo_model"
    text = oh("models", cwd=project.parent).stdout
    assert "weather\tixtools:echo_model\tixtools:get_weather" in text


def test_init_writes_a_working_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    res = oh("init", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "openheim.toml").is_file()
    assert (tmp_path / "openheim_tools.py").is_file()
    models = oh("models", cwd=tmp_path)
    assert models.returncode == 0, models.stderr
    assert "assistant\topenai:gpt-4o-mini" in models.stdout
    again = oh("init", cwd=tmp_path)
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert oh("init", "--force", cwd=tmp_path).returncode == 0


def test_sessions_commands(project: Path) -> None:
    # memory:// lives as long as the process: list works, and show/delete of an unknown id say so.
    res = oh("sessions", "list", "--json", cwd=project.parent)
    assert res.returncode == 0, res.stderr
    assert "sessions" in json.loads(res.stdout)
    missing = oh("sessions", "show", "nope", cwd=project.parent)
    assert missing.returncode == 1
    assert "no session 'nope'" in missing.stderr
    assert oh("sessions", "delete", cwd=project.parent).returncode == 2


def test_version_and_help(tmp_path: Path) -> None:
    assert oh("--version", cwd=tmp_path).stdout.startswith("openheim ")
    helptext = oh("--help", cwd=tmp_path).stdout
    for command in ("init", "run", "chat", "serve", "sessions", "models", "bench"):
        assert command in helptext


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    res = oh("bench", cwd=tmp_path)
    assert res.returncode == 2
    assert "benches/run.py" in res.stderr


def test_chat_without_agents_is_a_config_error(tmp_path: Path) -> None:
    config = write_project(tmp_path, "[store]\nurl = 'memory://'\n")
    res = oh("chat", "--config", str(config), cwd=tmp_path, stdin="")
    assert res.returncode == 2
    assert "no agents are configured" in res.stderr


def test_sessions_persist_across_processes_in_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = write_project(
        tmp_path,
        f'[agents.echo]\nmodel = "ixtools:echo_model"\n\n[store]\nurl = "sqlite:///{db}"\n',
    )
    first = oh("run", "echo", "one", "--session", "keep", "--config", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = oh("run", "echo", "two", "--session", "keep", "--config", str(config), cwd=tmp_path)
    assert second.stdout == "echo: two (turn 2)\n"
    listed = oh("sessions", "list", "--config", str(config), cwd=tmp_path)
    assert listed.stdout.split() == ["keep"]
    shown = oh("sessions", "show", "keep", "--json", "--config", str(config), cwd=tmp_path)
    roles = [m["role"] for m in json.loads(shown.stdout)["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    deleted = oh("sessions", "delete", "keep", "--config", str(config), cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert oh("sessions", "list", "--config", str(config), cwd=tmp_path).stdout == ""
    other = oh("sessions", "list", "--tenant", "t2", "--config", str(config), cwd=tmp_path)
    assert other.stdout == ""
