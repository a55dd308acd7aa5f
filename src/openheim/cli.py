"""The ``openheim`` command line (also ``python -m openheim``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from openheim._version import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openheim",
        description="Build, run and serve LLM agents in production.",
    )
    parser.add_argument("--version", action="version", version=f"openheim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the example agent (what `make run` runs)")
    demo.add_argument("prompt", nargs="?", default=None, help="question for the example agent")
    demo.add_argument(
        "--model", default=None, help="path of a GGUF model (default: the demo model)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from openheim.demo import main as demo_main

        return demo_main(args.prompt, args.model)
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
