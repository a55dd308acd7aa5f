"""The ``openheim`` command line (also ``python -m openheim``).

Exit codes: 0 ok, 1 the agent failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from openheim._version import __version__
from openheim.errors import ConfigError, OpenheimError

EXIT_OK, EXIT_AGENT, EXIT_USAGE = 0, 1, 2


def _jsonable(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_json = msgspec.json.Encoder(enc_hook=_jsonable)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openheim",
        description="Build, run and serve LLM agents in production.",
    )
    parser.add_argument("--version", action="version", version=f"openheim {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="config file (default ./openheim.toml, then ~/.openheim/openheim.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the example agent (what `make run` runs)")
    demo.add_argument("prompt", nargs="?", default=None, help="question for the example agent")
    demo.add_argument(
        "--model", default=None, help="path of a GGUF model (default: the demo model)"
    )

    init = sub.add_parser("init", help="write an example openheim.toml and tools module")
    init.add_argument("directory", nargs="?", default=".", help="where to write (default .)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")

    run = sub.add_parser("run", parents=[common], help="run an agent once on a prompt")
    run.add_argument("agent", help="agent name from the config")
    run.add_argument("prompt", nargs="?", default=None, help="the prompt (default: stdin)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--session", default=None, help="continue (or start) this session")
    run.add_argument("--tenant", default="default", help="session namespace (default 'default')")

    chat = sub.add_parser("chat", parents=[common], help="interactive REPL")
    chat.add_argument("agent", nargs="?", default=None, help="agent (default: the first)")
    chat.add_argument("--session", default=None, help="session id (default: a new one)")
    chat.add_argument("--history-file", default=None, help="input history file")

    serve = sub.add_parser("serve", parents=[common], help="serve HTTP (and gRPC)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--grpc-port", type=int, default=None)
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without API keys (anyone reaching it runs agents)",
    )

    sessions = sub.add_parser("sessions", parents=[common], help="list, show or delete sessions")
    sessions.add_argument("action", choices=["list", "show", "delete"])
    sessions.add_argument("id", nargs="?", default=None)
    sessions.add_argument("--tenant", default="default")
    sessions.add_argument("--json", action="store_true")

    models = sub.add_parser("models", parents=[common], help="configured agents and models")
    models.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    bench.add_argument("group", nargs="?", default="all")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    command = args.command
    if command is None:
        parser.print_help(sys.stdout)
        return EXIT_OK
    if command == "demo":
        from openheim.demo import main as demo_main

        return demo_main(args.prompt, args.model)
    try:
        handler = _COMMANDS[command]
        return handler(args)
    except ConfigError as exc:
        print(f"openheim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _config(args: argparse.Namespace) -> Any:
    from openheim.config import load_config

    return load_config(args.config)


# ---- init -----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from openheim._init_files import CONFIG, TOOLS

    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / "openheim.toml": CONFIG, folder / "openheim_tools.py": TOOLS}
    existing = [str(p) for p in files if p.exists()]
    if existing and not args.force:
        print(
            f"openheim: {', '.join(existing)} already exist; use --force to overwrite",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return EXIT_OK


# ---- run ------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            print("openheim: give a prompt, or pipe one on stdin", file=sys.stderr)
            return EXIT_USAGE
        prompt = sys.stdin.read()
        if not prompt.strip():
            print("openheim: the prompt on stdin is empty", file=sys.stderr)
            return EXIT_USAGE
    from openheim.config import open_history

    history = open_history(config.store.url, args.tenant)
    agent = config.build_agent(args.agent, history=history)
    try:
        return asyncio.run(_run(agent, prompt, args))
    except ConfigError:
        raise
    except OpenheimError as exc:
        _agent_failed(args, exc)
        return EXIT_AGENT


def _agent_failed(args: argparse.Namespace, exc: BaseException) -> None:
    if args.json:
        sys.stdout.write(
            _json.encode({"error": {"type": type(exc).__name__, "message": str(exc)}}).decode()
            + "\n"
        )
    print(f"openheim: {type(exc).__name__}: {exc}", file=sys.stderr)


async def _run(agent: Any, prompt: str, args: argparse.Namespace) -> int:
    from openheim.agent import Done, TextDelta, ToolCalled

    stream_text = not args.json and sys.stdout.isatty()
    result = None
    try:
        async for event in agent.stream(prompt, session=args.session):
            kind = type(event)
            if kind is TextDelta and stream_text:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif kind is ToolCalled and stream_text:
                sys.stderr.write(f"\n[tool {event.name}]\n")
            elif kind is Done:
                result = event.result
    finally:
        await agent.aclose()
    assert result is not None
    paused = result.stop_reason == "approval_required"
    if args.json:
        out: dict[str, Any] = {
            "output": result.output,
            "stop_reason": result.stop_reason,
            "usage": result.usage,
            "session": result.session,
            "run_id": result.run_id,
        }
        if paused:
            out["pending"] = result.pending
        sys.stdout.write(_json.encode(out).decode() + "\n")
        return EXIT_OK
    if paused:
        names = ", ".join(p.tool for p in result.pending)
        print(
            f"openheim: the run paused: {names} needs approval; use `openheim chat` "
            "or the HTTP API to approve",
            file=sys.stderr,
        )
        return EXIT_AGENT
    if stream_text:
        sys.stdout.write("\n")
    else:
        text = result.output if isinstance(result.output, str) else _json.encode(result.output)
        sys.stdout.write((text if isinstance(text, str) else text.decode()) + "\n")
    return EXIT_OK


# ---- chat, serve ------------------------------------------------------------------------


def _cmd_chat(args: argparse.Namespace) -> int:
    config = _config(args)
    from openheim.repl import run_repl

    return run_repl(config, args.agent, session=args.session, history_file=args.history_file)


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    from openheim.server import serve

    return serve(
        config,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        config_path=args.config,
        allow_unauthenticated=args.allow_unauthenticated,
    )


# ---- sessions, models, bench ---------------------------------------------------------


def _cmd_sessions(args: argparse.Namespace) -> int:
    config = _config(args)
    from openheim.config import open_history

    store = open_history(config.store.url, args.tenant)
    if args.action == "list":
        ids = asyncio.run(store.list_sessions())
        if args.json:
            print(_json.encode({"sessions": ids}).decode())
        else:
            for sid in ids:
                print(sid)
        return EXIT_OK
    if args.id is None:
        print(f"openheim: sessions {args.action} needs a session id", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "show":
        messages = asyncio.run(store.load(args.id))
        if not messages and args.id not in asyncio.run(store.list_sessions()):
            print(f"openheim: no session {args.id!r}", file=sys.stderr)
            return EXIT_AGENT
        if args.json:
            print(_json.encode({"id": args.id, "messages": messages}).decode())
        else:
            for m in messages:
                text = m.content or ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
                print(f"{m.role}: {text}")
        return EXIT_OK
    if not asyncio.run(store.load(args.id)):
        print(f"openheim: no session {args.id!r}", file=sys.stderr)
        return EXIT_AGENT
    asyncio.run(store.delete(args.id))
    print(f"deleted {args.id}")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = [
        {"agent": name, "model": a.model, "tools": a.tools} for name, a in config.agents.items()
    ]
    if args.json:
        print(_json.encode({"agents": rows, "providers": config.providers}).decode())
        return EXIT_OK
    if not rows:
        where = config.path or "no config file found"
        print(f"no agents configured ({where}); `openheim init` writes an example")
    for row in rows:
        tools = ", ".join(row["tools"]) or "no tools"
        print(f"{row['agent']}\t{row['model']}\t{tools}")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    here = Path.cwd()
    for folder in (here, *here.parents):
        script = folder / "benches" / "run.py"
        if script.is_file():
            os.execv(sys.executable, [sys.executable, str(script), args.group])
    print(
        "openheim: the benchmarks live in a source checkout (benches/run.py); run this "
        "from inside a clone of the openheim repository",
        file=sys.stderr,
    )
    return EXIT_USAGE


_COMMANDS = {
    "init": _cmd_init,
    "run": _cmd_run,
    "chat": _cmd_chat,
    "serve": _cmd_serve,
    "sessions": _cmd_sessions,
    "models": _cmd_models,
    "bench": _cmd_bench,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
