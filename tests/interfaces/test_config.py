"""openheim.toml in process: validation messages, line finding, agents built from it, the store seam."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ixhelpers import write_project

from openheim.config import load_config, open_history
from openheim.errors import ConfigError
from openheim.messages import Message, Usage


def error_of(tmp_path: Path, text: str) -> str:
    path = write_project(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value).replace(str(path), "F")


def test_second_array_table_entry_gets_its_own_line(tmp_path: Path) -> None:
    text = (
        "[[server.api_keys]]\n"
        'tenant = "a"\n'
        'key_env = "A"\n'
        "\n"
        "[[server.api_keys]]\n"
        'tenant = "b"\n'
        'key_sha256 = "nothex"\n'
    )
    assert error_of(tmp_path, text) == (
        "F:7: server.api_keys[1].key_sha256: key_sha256 must be 64 hex digits (sha256 of the key)"
    )


def test_both_or_neither_key_source_is_an_error(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[[server.api_keys]]\ntenant = "a"\n')
    assert msg == "F:1: server.api_keys[0]: give exactly one of key_env and key_sha256"


def test_unknown_top_level_table_and_wrong_types(tmp_path: Path) -> None:
    assert error_of(tmp_path, "[servre]\nport = 1\n").startswith("F:1: servre: unknown key")
    msg = error_of(tmp_path, '[agents.x]\nmodel = "openai:m"\nmax_iterations = "many"\n')
    assert msg.startswith("F:3: agents.x.max_iterations: Expected `int`")
    assert error_of(tmp_path, '[agents.x]\ninstructions = "hi"\n').startswith(
        "F:1: agents.x: Object missing required field `model`"
    )


def test_provider_strings_and_provider_types(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[providers.p]\ntype = "grok"\n')
    assert msg.startswith("F:2: providers.p.type: unknown provider type 'grok'")
    path = write_project(
        tmp_path,
        '[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "NOPE_KEY"\n'
        '[agents.a]\nmodel = "local:qwen"\n',
    )
    model = load_config(path).build_agent("a").model
    assert model.name.endswith("qwen")
    assert "127.0.0.1:9" in str(getattr(model, "base_url", "")) or "127.0.0.1:9" in repr(
        vars(model)
    )


def test_agents_are_built_with_tools_and_settings(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        '[agents.w]\nmodel = "ixtools:echo_model"\ntools = ["ixtools:get_weather"]\n'
        "model_settings = { temperature = 0.5 }\nmax_iterations = 3\n",
    )
    agent = load_config(path).build_agent("w")
    assert [t.name for t in agent.tools] == ["get_weather"]
    assert agent.model_settings.temperature == 0.5
    assert agent.max_iterations == 3
    assert agent.run_sync("weather Oslo").output == "tool said: sunny in Oslo"


def test_missing_default_config_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config()
    assert config.path is None
    assert config.agents == {}


async def test_open_history_is_the_stores_history_per_tenant(tmp_path: Path) -> None:
    from openheim.stores.history import StoreHistory

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_history(url, "tenant-x")
    assert isinstance(store, StoreHistory)
    await store.append("s", [Message.user("hi")], Usage(1, 2, 1))
    assert await open_history(url, "tenant-x").list_sessions() == ["s"]
    assert await open_history(url, "tenant-y").list_sessions() == []
    assert (await store.usage("s")).requests == 1
    assert await store.delete("s")
    assert await store.load("s") == []
    await store.aclose()


def test_reload_modules_picks_up_edited_tool_code(tmp_path: Path) -> None:
    # The server calls Config.reload_modules() on SIGHUP; the edit below keeps the file's
    # size and lands within the same second, which the bytecode cache alone would miss.
    tools = tmp_path / "reload_tools_mod.py"
    source = "import openheim as oh\n\n@oh.tool\ndef version() -> str:\n    return 'v1'\n"
    tools.write_text(source)
    path = write_project(
        tmp_path, '[agents.a]\nmodel = "ixtools:echo_model"\ntools = ["reload_tools_mod:version"]\n'
    )
    config = load_config(path)
    first = config.build_agent("a")
    assert first.tools[0]() == "v1"
    tools.write_text(source.replace("v1", "v2"))
    # Without a reload the cached module stays.
    assert config.build_agent("a").tools[0]() == "v1"
    dropped = config.reload_modules()
    assert "reload_tools_mod" in dropped
    assert config.build_agent("a").tools[0]() == "v2"
    tools.write_text(source.replace("v1", "v3"))
    from openheim.config import _import_object

    fresh = _import_object("reload_tools_mod:version", config.folder, fresh=True)
    assert fresh() == "v3"


def test_config_folder_is_searched_after_installed_modules(tmp_path: Path) -> None:
    path = write_project(tmp_path, '[agents.a]\nmodel = "ixtools:echo_model"\n')
    load_config(path)
    assert str(tmp_path.resolve()) in sys.path
    assert sys.path.index(str(tmp_path.resolve())) > 0
    (tmp_path / "json.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="has the name of the installed module 'json'"):
        load_config(path).import_object("json:X")


def test_forget_modules_leaves_installed_packages_below_the_folder_alone() -> None:
    # A config file at the top of a checkout has the venv and src/ below its folder.
    import msgspec as before_msgspec

    import openheim.config as before_config
    from openheim.config import forget_modules

    folder = Path(before_config.__file__).resolve().parents[2]  # the checkout (src/..)
    assert forget_modules(folder) == []
    assert sys.modules["msgspec"] is before_msgspec
    assert sys.modules["openheim.config"] is before_config
