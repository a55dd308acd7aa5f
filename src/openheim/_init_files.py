"""What ``openheim init`` writes: a commented openheim.toml and an example tools module."""

from __future__ import annotations

_HEAD = """\
# openheim.toml: the agents, models, store and server of this project.
# Every `openheim` command reads it (or the file given with --config PATH).
# `openheim check` validates it, builds every agent and loads every model.

# Providers: OpenAI-compatible or Anthropic endpoints. Keys are read from the
# environment variable named by api_key_env, never written here.
[providers.local]
type = "openai"                         # "openai" (any compatible server) or "anthropic"
base_url = "http://127.0.0.1:8080/v1"
api_key_env = "LOCAL_API_KEY"

# Agents. model is "openai:<model>", "anthropic:<model>", "llama:/path/model.gguf",
# "<provider>:<model>" for a provider above, or "module:attribute" naming a Model.
"""

_REMOTE_AGENT = """\
[agents.assistant]
model = "{model}"
instructions = "You are a helpful assistant. Be brief."
tools = ["openheim_tools:get_time", "openheim_tools:delete_file"]   # module:function
model_settings = {{ temperature = 0.2 }}
"""

# A small local model follows a worked example far better than a description.
_LOCAL_AGENT = '''\
[agents.assistant]
model = "{model}"
instructions = """You tell the time in UTC with the get_time tool, then answer with its result.
User: What time is it?
Assistant: {{"tool": "get_time", "arguments": {{}}}}
User: Result of get_time: 2031-05-17T08:15:00+00:00
Assistant: {{"answer": "It is 2031-05-17T08:15:00+00:00 (UTC)."}}"""
tools = ["openheim_tools:get_time"]     # module:function, from this folder
# Sampling settings, and for llama: models the local ones: n_gpu_layers (-1 = all on
# the GPU), n_ctx, n_threads, n_parallel, n_batch, chat_template ("plain" or jinja).
model_settings = {{ temperature = 0.0, max_tokens = 64, n_ctx = 4096, n_parallel = 4, n_gpu_layers = 0 }}
'''

_TAIL = """\
# MCP servers the agent may use:
# [[agents.assistant.mcp]]
# command = ["python", "my_mcp_server.py"]     # or: url = "http://127.0.0.1:9000/mcp"

# Where sessions, checkpoints and paused runs are kept: sqlite:///path, memory://,
# redis://, postgresql://. Default: .openheim/state.db beside this file.
# [store]
# url = "sqlite:///~/.openheim/state.db"

[server]
host = "127.0.0.1"
port = 8000
max_body_bytes = 1048576                # larger requests get 413
max_concurrent_runs_per_tenant = 16     # more get 429 with Retry-After
shutdown_grace = 30                     # seconds in-flight runs get to finish on shutdown

# API keys map to tenants. Give the environment variable holding the key
# (key_env) or the key's sha256 hex digest (key_sha256); raw keys are refused.
[[server.api_keys]]
tenant = "default"
key_env = "OPENHEIM_API_KEY"
"""

DEFAULT_MODEL = "openai:gpt-4o-mini"


def config_text(model: str | None = None) -> str:
    """The openheim.toml ``openheim init`` writes, its example agent on ``model``."""
    model = model or DEFAULT_MODEL
    agent = _LOCAL_AGENT if model.startswith("llama:") else _REMOTE_AGENT
    quoted = model.replace("\\", "\\\\").replace('"', '\\"')
    return _HEAD + agent.format(model=quoted) + _TAIL


CONFIG = config_text()

TOOLS = '''\
"""Example tools for openheim.toml (`tools = ["openheim_tools:get_time"]`)."""

from datetime import datetime, timezone

import openheim as oh


@oh.tool
def get_time() -> str:
    """The current time in UTC (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@oh.tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (asks for approval first)."""
    return f"pretended to delete {path}"
'''
