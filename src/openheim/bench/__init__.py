"""``openheim bench``: benchmarks users run on their own machines, shipped in the wheel.

- ``openheim bench local``: openheim's llama.cpp engine at each concurrency
  (aggregate tokens/s, time to first token, inter-token latency, requests/s,
  peak memory);
- ``openheim bench serve``: any OpenAI-compatible server, the same figures,
  from a streaming load generator in its own process;
- ``openheim bench overhead``: the framework's own costs beside pydantic-ai,
  LangGraph and autogen-core when they are installed;
- ``openheim bench compare A.json B.json``: the change between two runs.

Every command prints a table, and writes ``--json FILE`` (validated by
:func:`schema`) and ``--plot FILE.png`` (the ``plot`` extra).
"""

from __future__ import annotations

from openheim.bench._report import Figure, Report, load_report, schema

__all__ = ["Figure", "Report", "load_report", "main", "schema"]


def main(argv: list[str]) -> int:
    """Run ``openheim bench ARGV`` and return its exit code."""
    from openheim.bench._cli import parse, run
    from openheim.errors import ConfigError

    try:
        args = parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args)
    except ConfigError as exc:
        import sys

        print(f"openheim bench: {exc}", file=sys.stderr)
        return 2
