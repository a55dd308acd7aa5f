"""What ``openheim init`` writes: a commented openheim.toml and an example tools module."""

from __future__ import annotations

CONFIG = """\
# openheim.toml: the agents, models, store and server of this project.
# Every `openheim` command reads it (or the file given with --config PATH).

# Providers: OpenAI-compatible or Anthropic endpoints. Keys are read from the
# environment variable named by api_key_env, never written here.
[providers.local]
type = "openai"                         # "openai" (any compatible server) or "anthropic"
base_url = "http://127.0.0.1:8080/v1"
api_key_env = "LOCAL_API_KEY"

# Agents. model is "openai:<model>", "anthropic:<model>", "llama:/path/model.gguf",
# "<provider>:<model>" for a provider above, or "module:attribute" naming a Model.
[agents.assistant]
model = "openai:gpt-4o-mini"
instructions = "You are a helpful assistant. Be brief."
tools = ["openheim_tools:get_time", "openheim_tools:delete_file"]   # module:function
model_settings = { temperature = 0.2 }
# MCP servers the agent may use:
# [[agents.assistant.mcp]]
# command = ["python", "my_mcp_server.py"]     # or: url = "http://127.0.0.1:9000/mcp"

# Where sessions are kept: sqlite:///path (default), memory://, redis://, postgresql://
[store]
url = "sqlite:///~/.openheim/state.db"

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
