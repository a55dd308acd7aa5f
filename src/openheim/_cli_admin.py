"""The ``openheim`` commands that inspect and decide: sessions, approvals, models, check."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from openheim.cli import (
    EXIT_AGENT,
    EXIT_OK,
    EXIT_USAGE,
    _config,
    _json,
    _say,
    build_agent,
    missing_module_message,
    run_to_end,
)
from openheim.config import Config, open_history

# ---- sessions -------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    config = _config(args)
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
        _say(f"sessions {args.action} needs a session id (`openheim sessions` lists them)")
        return EXIT_USAGE
    if args.action == "show":
        messages = asyncio.run(store.load(args.id))
        if not messages and args.id not in asyncio.run(store.list_sessions()):
            _say(f"no session {args.id!r}")
            return EXIT_AGENT
        if args.json:
            print(_json.encode({"id": args.id, "messages": messages}).decode())
        else:
            for m in messages:
                text = m.content or ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
                print(f"{m.role}: {text}")
        return EXIT_OK
    if not asyncio.run(store.load(args.id)):
        _say(f"no session {args.id!r}")
        return EXIT_AGENT
    asyncio.run(store.delete(args.id))
    print(f"deleted {args.id}")
    return EXIT_OK


# ---- approvals ------------------------------------------------------------------------


async def _paused_runs(config: Config, tenant: str) -> list[Any]:
    """The tenant's runs paused for approval, oldest first."""
    from openheim.agent.approvals import paused_runs
    from openheim.stores.checkpoint import Checkpointer

    history = open_history(config.store.url, tenant)
    return await paused_runs(Checkpointer(history.store))


def cmd_approvals(args: argparse.Namespace) -> int:
    config = _config(args)
    runs = asyncio.run(_paused_runs(config, args.tenant))
    if args.action == "list":
        if args.json:
            rows = [
                {
                    "run_id": cp.run_id,
                    "agent": cp.agent,
                    "session": cp.session,
                    "pending": cp.pending,
                }
                for cp in runs
            ]
            print(_json.encode({"runs": rows}).decode())
            return EXIT_OK
        for cp in runs:
            for call in cp.pending:
                print(f"{cp.run_id}\t{cp.agent}\t{call.id}\t{call.tool}({call.arguments})")
        if not runs:
            _say(f"no runs are waiting for approval (tenant {args.tenant!r})")
        return EXIT_OK
    if args.run_id is None:
        _say(f"approvals {args.action} needs a run id (`openheim approvals` lists them)")
        return EXIT_USAGE
    cp = next((c for c in runs if c.run_id == args.run_id), None)
    if cp is None:
        _say(
            f"no run {args.run_id!r} is waiting for approval (tenant {args.tenant!r}); "
            "`openheim approvals` lists those that are"
        )
        return EXIT_AGENT
    pending = {call.id for call in cp.pending}
    unknown = [c for c in args.call_ids if c not in pending]
    if unknown:
        _say(
            f"run {cp.run_id} has no pending call {unknown[0]!r} "
            f"(pending: {', '.join(sorted(pending))})"
        )
        return EXIT_USAGE
    if args.reason is not None and args.action != "reject":
        _say("--reason goes with reject")
        return EXIT_USAGE
    from openheim.agent import Approval

    decision = Approval(approved=args.action == "approve", reason=args.reason)
    decisions = {call_id: decision for call_id in (args.call_ids or sorted(pending))}
    if cp.agent not in config.agents:
        _say(f"run {cp.run_id} belongs to agent {cp.agent!r}, which the config no longer has")
        return EXIT_USAGE
    agent = build_agent(config, cp.agent, args.tenant)
    return run_to_end(agent, args.json, _resumed(agent, cp.run_id, decisions))


async def _resumed(agent: Any, run_id: str, decisions: dict[str, Any]) -> Any:
    """The resumed run as the events ``run_to_end`` reads (a resume does not stream)."""
    from openheim.agent import Done

    yield Done(await agent.resume_run(run_id, decisions))


# ---- models, check --------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    config = _config(args)
    rows = [
        {"agent": name, "model": a.model, "tools": a.tools} for name, a in config.agents.items()
    ]
    for name in config.agents:
        config.check_agent(name)  # tools import, model files exist: ConfigError exits 2
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


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    where = config.path.resolve() if config.path is not None else "no config file (the defaults)"
    print(f"config {where}: valid, {len(config.agents)} agent(s)")
    failures = 0

    def failed(what: str, exc: BaseException) -> None:
        nonlocal failures
        failures += 1
        if isinstance(exc, ModuleNotFoundError):
            text = missing_module_message(exc)
        else:
            text = (
                f"{type(exc).__name__}: {exc}" if not str(exc).startswith(str(where)) else str(exc)
            )
        print(f"{what}: FAILED: {text}")

    try:
        sessions = asyncio.run(_store_sessions(config))
        print(f"store {config.store.url}: ok ({sessions} session(s) of tenant 'default')")
    except Exception as exc:
        failed(f"store {config.store.url}", exc)
    try:
        keys = config.tenant_keys()
        print(f"server API keys: ok ({len(keys)} key(s))" if keys else "server API keys: none")
    except Exception as exc:
        failed("server API keys", exc)
    for name, cfg in config.agents.items():
        started = time.perf_counter()
        try:
            agent = config.build_agent(name, announce=lambda text: print(f"  {text}"))
            tools = [t.name for t in agent.tools]
            asyncio.run(agent.aclose())
        except Exception as exc:
            failed(f"agent {name}", exc)
            continue
        took = time.perf_counter() - started
        listed = ", ".join(tools) or "no tools"
        print(f"agent {name}: ok (model {cfg.model}; {listed}; built in {took:.1f} s)")
    if failures:
        print(f"{failures} problem(s) found", file=sys.stderr)
        return EXIT_USAGE
    print("everything checked is ok")
    return EXIT_OK


async def _store_sessions(config: Config) -> int:
    history = open_history(config.store.url, "default")
    try:
        return len(await history.list_sessions())
    finally:
        close = getattr(getattr(history, "store", None), "aclose", None)
        if close is not None:
            await close()
