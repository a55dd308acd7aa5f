"""The ``openheim`` command line (also ``python -m openheim``).

Exit codes: 0 ok, 1 the agent failed (or paused for approval), 2 a usage or
configuration error (a missing optional package too).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openheim._cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    build_agent,
    missing_module_message,
    run_to_end,
)
from openheim._cli_common import load as _config
from openheim._cli_common import say as _say
from openheim._version import __version__
from openheim.errors import ConfigError


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser (options go anywhere in those)."""
    parser = argparse.ArgumentParser(
        prog="openheim",
        description="Build, run and serve LLM agents in production.",
    )
    parser.add_argument(
        "--version", action="version", version=f"openheim {__version__}", help="print the version"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="config file (default ./openheim.toml, then ~/.openheim/openheim.toml)",
    )
    tenant = argparse.ArgumentParser(add_help=False)
    tenant.add_argument(
        "--tenant", default="default", help="the tenant (session namespace; default 'default')"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="`openheim COMMAND --help` describes one"
    )
    demo = sub.add_parser("demo", help="run the example agent (what `make run` runs)")
    demo.add_argument("prompt", nargs="?", default=None, help="question for the example agent")
    demo.add_argument(
        "--model", default=None, help="path of a GGUF model (default: the demo model)"
    )

    init = sub.add_parser("init", help="write an example openheim.toml and tools module")
    init.add_argument("directory", nargs="?", default=".", help="where to write (default .)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="the example agent's model, e.g. llama:/path/model.gguf (default openai:gpt-4o-mini)",
    )

    run = sub.add_parser(
        "run", parents=[common, tenant, as_json], help="run an agent once on a prompt"
    )
    run.add_argument("agent", help="agent name from the config")
    run.add_argument("prompt", nargs="?", default=None, help="the prompt (default: stdin)")
    run.add_argument("--session", default=None, help="continue (or start) this session")

    chat = sub.add_parser("chat", parents=[common], help="interactive REPL")
    chat.add_argument("agent", nargs="?", default=None, help="agent (default: the first)")
    chat.add_argument("--session", default=None, help="session id (default: a new one)")
    chat.add_argument(
        "--history-file", default=None, help="input history file (default ~/.openheim/history)"
    )

    serve = sub.add_parser("serve", parents=[common], help="serve HTTP (and gRPC)")
    serve.add_argument("--host", default=None, help="address to listen on (default [server].host)")
    serve.add_argument(
        "--port", type=int, default=None, help="HTTP port (default [server].port, 8000)"
    )
    serve.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC on this port")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without API keys (anyone reaching it runs agents)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="log this level and above (info logs every request)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text or as one JSON object per line",
    )

    sessions = sub.add_parser(
        "sessions", parents=[common, tenant, as_json], help="list, show or delete sessions"
    )
    sessions.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show", "delete"],
        help="what to do (default list)",
    )
    sessions.add_argument("id", nargs="?", default=None, help="the session id (show, delete)")

    approvals = sub.add_parser(
        "approvals",
        parents=[common, tenant, as_json],
        help="list runs paused for approval; approve or reject their tool calls",
    )
    approvals.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "approve", "reject"],
        help="what to do (default list)",
    )
    approvals.add_argument(
        "run_id", nargs="?", default=None, help="the paused run (approve, reject)"
    )
    approvals.add_argument(
        "call_ids",
        nargs="*",
        default=[],
        metavar="CALL_ID",
        help="the tool calls to decide (default: every pending call of the run)",
    )
    approvals.add_argument(
        "--reason", default=None, help="why the calls are rejected (shown to the model)"
    )

    actors = sub.add_parser(
        "actors", parents=[common, as_json], help="the actor runtime's dead-letter log"
    )
    actors.add_argument(
        "action",
        nargs="?",
        default="dead-letters",
        choices=["dead-letters"],
        help="what to show (default dead-letters)",
    )
    actors.add_argument(
        "--namespace",
        default="actors",
        help="the runtime's namespace in the store (Runtime(namespace=...), default actors)",
    )

    sub.add_parser("models", parents=[common, as_json], help="configured agents and models")
    sub.add_parser(
        "check",
        parents=[common],
        help="validate the config, build every agent and load every model",
    )

    from openheim import cli_workflow

    _, workflow_commands = cli_workflow.add_parser(sub, [common])
    _WORKFLOW_COMMANDS.clear()
    _WORKFLOW_COMMANDS.update(workflow_commands)
    cli_workflow.add_worker_parser(sub, [common])  # batch mode's worker processes

    sub.add_parser(
        "bench",
        add_help=False,  # `openheim bench` has its own parser (openheim.bench)
        help="benchmarks: local model, a server, framework overhead; compare runs",
    )
    return parser, dict(sub.choices)


# `openheim workflow COMMAND`'s own parsers (filled by _build_parser).
_WORKFLOW_COMMANDS: dict[str, argparse.ArgumentParser] = {}


def _parse(argv: list[str]) -> argparse.Namespace:
    """Options go anywhere: each command's parser reads its arguments intermixed.

    argparse cannot intermix across sub-parsers, so the command is found first
    (the first argument naming one) and the rest go to its own parser, which
    also prints its own usage on errors.
    """
    parser, commands = _build_parser()
    at = next((i for i, arg in enumerate(argv) if arg in commands), None)
    if at is None or any(a in ("-h", "--help", "--version") for a in argv[:at]):
        return parser.parse_args(argv)
    command, rest = argv[at], argv[:at] + argv[at + 1 :]
    if command == "bench":  # `openheim bench COMMAND ...` parses its own arguments
        return argparse.Namespace(command="bench", bench_argv=argv[at + 1 :])
    if command == "workflow":
        # One level deeper: `openheim workflow run NAME --input ...`, options anywhere.
        inner = next((i for i, arg in enumerate(rest) if arg in _WORKFLOW_COMMANDS), None)
        if inner is None or any(a in ("-h", "--help") for a in rest[:inner]):
            commands[command].parse_args(rest)  # its usage, or its help
            raise SystemExit(2)
        args = _WORKFLOW_COMMANDS[rest[inner]].parse_intermixed_args(
            rest[:inner] + rest[inner + 1 :]
        )
        args.wf_command = rest[inner]
    else:
        args = commands[command].parse_intermixed_args(rest)
    args.command = command
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    command = args.command
    if command is None:
        _build_parser()[0].print_help(sys.stdout)
        return EXIT_OK
    try:
        code: int = _COMMANDS[command](args)
        return code
    except ConfigError as exc:
        print(f"openheim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        print(f"openheim {command}: {missing_module_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# ---- init -----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from openheim._init_files import TOOLS, config_text

    model = args.model
    if model is not None and model.startswith("llama:"):
        gguf = Path(model[len("llama:") :]).expanduser()
        if not gguf.is_file():
            _say(f"--model {model}: no GGUF file at {gguf}")
            return EXIT_USAGE
        model = f"llama:{gguf.resolve()}"
    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / "openheim.toml": config_text(model), folder / "openheim_tools.py": TOOLS}
    existing = [str(p) for p in files if p.exists()]
    if existing and not args.force:
        _say(f"{', '.join(existing)} already exist; use --force to overwrite")
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
            _say("give a prompt, or pipe one on stdin")
            return EXIT_USAGE
        prompt = sys.stdin.read()
        if not prompt.strip():
            _say("the prompt on stdin is empty")
            return EXIT_USAGE
    agent = build_agent(config, args.agent, args.tenant)
    return run_to_end(agent, args.json, agent.stream(prompt, session=args.session))


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
        log_level=args.log_level,
        log_format=args.log_format,
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from openheim.bench import main as bench_main

    return bench_main(args.bench_argv)


def _cmd_workflow(args: argparse.Namespace) -> int:
    from openheim import cli_workflow

    return cli_workflow.run(args)


def _cmd_worker(args: argparse.Namespace) -> int:
    from openheim import cli_workflow

    return cli_workflow.run_worker(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from openheim.demo import main as demo_main

    return demo_main(args.prompt, args.model)


def _admin(name: str) -> Any:
    def command(args: argparse.Namespace) -> int:
        from openheim import _cli_admin

        handler: Any = getattr(_cli_admin, name)
        return int(handler(args))

    return command


_COMMANDS = {
    "demo": _cmd_demo,
    "init": _cmd_init,
    "run": _cmd_run,
    "chat": _cmd_chat,
    "serve": _cmd_serve,
    "sessions": _admin("cmd_sessions"),
    "approvals": _admin("cmd_approvals"),
    "actors": _admin("cmd_actors"),
    "models": _admin("cmd_models"),
    "check": _admin("cmd_check"),
    "workflow": _cmd_workflow,
    "worker": _cmd_worker,
    "bench": _cmd_bench,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
