"""The ``openheim`` commands that inspect and decide: sessions, approvals, models, check."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from openheim._cli_common import (
    EXIT_AGENT,
    EXIT_OK,
    EXIT_USAGE,
    build_agent,
    missing_module_message,
    run_to_end,
)
from openheim._cli_common import json_encoder as _json
from openheim._cli_common import load as _config
from openheim._cli_common import say as _say
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
            print(_json.encode({"runs": runs}).decode())
            return EXIT_OK
        for paused in runs:
            for call in paused.pending:
                print(f"{paused.run_id}\t{paused.agent}\t{call.id}\t{call.tool}({call.arguments})")
        if not runs:
            _say(f"no runs are waiting for approval (tenant {args.tenant!r})")
        return EXIT_OK
    if args.run_id is None:
        _say(f"approvals {args.action} needs a run id (`openheim approvals` lists them)")
        return EXIT_USAGE
    paused = next((p for p in runs if p.run_id == args.run_id), None)
    if paused is None:
        _say(
            f"no run {args.run_id!r} is waiting for approval (tenant {args.tenant!r}); "
            "`openheim approvals` lists those that are"
        )
        return EXIT_AGENT
    if args.reason is not None and args.action != "reject":
        _say("--reason goes with reject")
        return EXIT_USAGE
    from openheim.agent import Approval
    from openheim.agent.approvals import check_decisions, resume_paused

    pending = [call.id for call in paused.pending]
    decision = Approval(approved=args.action == "approve", reason=args.reason)
    # The calls named are decided; with none named, every pending call is.
    chosen = args.call_ids or pending
    decisions = {call_id: decision for call_id in chosen}
    unknown = [c for c in chosen if c not in pending]
    if unknown:
        _say(
            f"run {paused.run_id} has no pending call {unknown[0]!r} (pending: {', '.join(pending)})"
        )
        return EXIT_USAGE
    if len(decisions) < len(pending):
        left = [c for c in pending if c not in decisions]
        _say(
            f"run {paused.run_id} also waits on {', '.join(left)}: decide every pending call "
            f"(`openheim approvals approve|reject {paused.run_id} CALL_ID...`, or none named for all)"
        )
        return EXIT_USAGE
    check_decisions(paused, decisions)
    if paused.agent not in config.agents:
        _say(
            f"run {paused.run_id} belongs to agent {paused.agent!r}, which the config no longer has"
        )
        return EXIT_USAGE
    agent = build_agent(config, paused.agent, args.tenant)
    return run_to_end(agent, args.json, resume_paused(agent, paused.run_id, decisions))


# ---- actors ---------------------------------------------------------------------------


def cmd_actors(args: argparse.Namespace) -> int:
    """``actors dead-letters``: the messages the runtime's actors could not handle."""
    config = _config(args)
    letters = asyncio.run(_dead_letters(config.store.url, args.namespace))
    if args.json:
        print(_json.encode({"dead_letters": letters}).decode())
        return EXIT_OK
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.at))
        print(f"{letter.seq}\t{when}\t{letter.actor}\t{letter.error_type}: {letter.error}")
        print(f"\tmessage: {letter.message!r}")
    if not letters:
        _say(f"no dead letters in {config.store.url} (namespace {args.namespace!r})")
    return EXIT_OK


async def _dead_letters(url: str, namespace: str) -> list[Any]:
    from openheim.runtime import Runtime

    async with Runtime(store=url, namespace=namespace) as rt:
        return await rt.dead_letters()


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
            local = _local_settings(agent)
            asyncio.run(agent.aclose())
        except Exception as exc:
            failed(f"agent {name}", exc)
            continue
        took = time.perf_counter() - started
        listed = ", ".join(tools) or "no tools"
        print(f"agent {name}: ok (model {cfg.model}{local}; {listed}; built in {took:.1f} s)")
    for name in config.workflow_names():
        try:
            wf = config.build_workflow(name)
            asyncio.run(wf.aclose())
        except Exception as exc:
            failed(f"workflow {name}", exc)
            continue
        print(f"workflow {name}: ok ({len(wf.nodes)} node(s): {', '.join(wf.nodes)})")
    if failures:
        print(f"{failures} problem(s) found", file=sys.stderr)
        return EXIT_USAGE
    print("everything checked is ok")
    return EXIT_OK


def _local_settings(agent: Any) -> str:
    """What a loaded llama.cpp model runs with, as check prints it ('' for other models)."""
    model = agent.model
    engine = getattr(model, "engine", None)
    handle = getattr(engine, "h", None)
    if handle is None:
        return ""
    template = "plain template" if model.renderer.is_plain else "chat template"
    return f": n_ctx {handle.n_ctx}, n_parallel {handle.n_seq_max}, {template}"


async def _store_sessions(config: Config) -> int:
    history = open_history(config.store.url, "default")
    try:
        return len(await history.list_sessions())
    finally:
        await history.aclose()
