"""Hot reload: a new definition for every session's next turn; sessions are kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import openheim as oh
from openheim.errors import ConfigError
from openheim.models import ModelRequest, ScriptedModel
from openheim.stores import open_history


def _echo_model() -> ScriptedModel:
    """Answers with the system prompt, the tools it was offered and the temperature."""

    def reply(request: ModelRequest) -> str:
        system = request.messages[0].content if request.messages[0].role == "system" else ""
        tools = ",".join(sorted(t.name for t in request.tools))
        return f"{system}|{tools}|{request.settings.temperature}|{len(request.messages)}"

    return ScriptedModel(reply)


@oh.tool
def alpha() -> str:
    """Alpha."""
    return "a"


@oh.tool
def beta() -> str:
    """Beta."""
    return "b"


async def test_reload_in_code_keeps_sessions(tmp_path: Path) -> None:
    history = open_history(f"sqlite://{tmp_path}/s.db")
    agent = oh.Agent(
        _echo_model(),
        instructions="v1",
        tools=[alpha],
        model_settings={"temperature": 0.1},
        history=history,
    )
    assert (await agent.run("hi", session="a")).output == "v1|alpha|0.1|2"
    assert (await agent.run("hi", session="b")).output == "v1|alpha|0.1|2"
    agent.reload(instructions="v2", tools=[alpha, beta], model_settings={"temperature": 0.7})
    # Both sessions' next turn uses the new definition, with their history intact.
    assert (await agent.run("again", session="a")).output == "v2|alpha,beta|0.7|4"
    assert (await agent.run("again", session="b")).output == "v2|alpha,beta|0.7|4"
    agent.reload(tools=[beta])  # only what is given changes
    assert (await agent.run("more", session="a")).output == "v2|beta|0.7|6"
    await history.aclose()


def test_a_bad_reload_changes_nothing() -> None:
    agent = oh.Agent(_echo_model(), instructions="v1", tools=[alpha])
    with pytest.raises(ConfigError):
        agent.reload(instructions="v2", model_settings={"no_such_setting": 1})
    with pytest.raises(ConfigError):
        agent.reload(instructions=42)  # type: ignore[arg-type]
    assert [t.name for t in agent.tools] == ["alpha"]
    assert agent.run_sync("x").output == "v1|alpha|None|2"


async def test_reload_from_a_file_on_disk(tmp_path: Path) -> None:
    source = tmp_path / "my_agent.py"

    def write(instructions: str, tool_names: list[str]) -> None:
        tools = "\n".join(
            f"@oh.tool\ndef {n}() -> str:\n    '''{n}.'''\n    return '{n}'\n" for n in tool_names
        )
        source.write_text(
            textwrap.dedent(
                """
                import openheim as oh
                from openheim.models import ScriptedModel

                def reply(request):
                    tools = ",".join(sorted(t.name for t in request.tools))
                    return f"{request.messages[0].content}|{tools}|{len(request.messages)}"

                """
            )
            + tools
            + f"\nagent = oh.Agent(ScriptedModel(reply), instructions={instructions!r}, "
            f"tools=[{', '.join(tool_names)}])\n"
        )

    write("from disk v1", ["one"])
    agent = oh.Agent(_echo_model(), instructions="code")
    agent.reload(f"{source}:agent")
    assert (await agent.run("x", session="s")).output == "from disk v1|one|2"
    write("from disk v2", ["one", "two"])
    agent.reload(f"{source}:agent")
    res = await agent.run("y", session="s")
    assert res.output == "from disk v2|one,two|4"  # the session kept its first turn
    with pytest.raises(ConfigError, match="not an Agent"):
        agent.reload(f"{source}:oh")
    with pytest.raises(ConfigError, match="no file"):
        agent.reload(f"{tmp_path}/missing.py:agent")
