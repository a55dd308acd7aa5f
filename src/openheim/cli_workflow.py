"""``openheim workflow ...``: run, inspect and steer durable workflow runs from a shell.

Every command names the workflow: a ``[workflows.NAME]`` of the config file
(``--config``; by default ./openheim.toml), whose runs live in the configured
store, or ``module:attribute`` (an ``oh.Workflow`` built with a store,
importable from the current directory)::

    openheim workflow run triage --input '{"text": "it crashes"}'
    openheim workflow approvals triage
    openheim workflow approve triage <approval id> --by alice
    openheim workflow history triage <run id>
    openheim workflow status triage <run id> --tenant acme

    python -m openheim.cli_workflow run myapp.flows:triage --input '{"text": "it crashes"}'
    python -m openheim.cli_workflow approvals myapp.flows:triage
    python -m openheim.cli_workflow approve myapp.flows:triage <approval id> --by alice
    python -m openheim.cli_workflow history myapp.flows:triage <run id>
    python -m openheim.cli_workflow fork myapp.flows:triage <run id> --checkpoint 3 --set '{...}'

Batch mode (runs on a queue, worked by ``openheim worker`` processes)::

    openheim worker --queue redis://host:6379/0 --workflows myapp.flows:triage
    openheim workflow submit myapp.flows:triage --queue redis://host:6379/0 --input runs.jsonl
    openheim workflow status|result|cancel myapp.flows:triage <run id> --queue redis://...
    openheim workflow approve myapp.flows:triage <approval id> --queue redis://...
    openheim workflow dead-letters --queue redis://host:6379/0
    openheim workflow dead-letters retry <dead letter id> --queue redis://host:6379/0

``add_parser(subparsers)`` and ``run(args)`` plug the same commands into the
``openheim`` CLI. Results are printed as JSON (one object per line), errors
as ``error: ...`` on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openheim.workflow.events import WorkflowResult

__all__ = ["add_parser", "add_worker_parser", "main", "run", "run_worker"]

_COMMANDS = (
    "run",
    "status",
    "resume",
    "cancel",
    "history",
    "fork",
    "approvals",
    "approve",
    "delete",
    "prune",
    "submit",
    "result",
    "dead-letters",
)


def _queue_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--queue",
        required=required,
        help="batch mode: the queue URL the run was submitted to (redis://... or nats://...)",
    )
    p.add_argument("--store", help="the store of the batch runs (default: the queue's own engine)")
    p.add_argument(
        "--queue-name", default="openheim", help="the queue's name on the server (default openheim)"
    )


def add_parser(
    sub: Any, parents: Sequence[argparse.ArgumentParser] = ()
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Add ``workflow`` and its commands to an argparse subparsers object.

    Returns the ``workflow`` parser and each command's own parser (``parents``
    add their options to every command, e.g. ``--config``).
    """
    parser: argparse.ArgumentParser = sub.add_parser(
        "workflow",
        help="run and steer durable workflow runs ([workflows.NAME] of the config)",
        description="run and steer durable workflow runs",
    )
    return parser, _fill(parser, parents)


def _fill(
    parser: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser] = ()
) -> dict[str, argparse.ArgumentParser]:
    cmds = parser.add_subparsers(
        dest="wf_command",
        required=True,
        metavar="COMMAND",
        help="`openheim workflow COMMAND --help` describes one",
    )

    def command(name: str, help: str, run_id: bool = True) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help, parents=list(parents))
        p.add_argument(
            "workflow", help="the workflow: a [workflows.NAME] of the config, or module:attribute"
        )
        p.add_argument(
            "--tenant",
            help="the tenant whose runs these are (as `openheim serve` keeps them for its API key)",
        )
        p.add_argument("--namespace", help="the store namespace of the runs (instead of --tenant)")
        if run_id:
            p.add_argument("run_id", help="the run id")
        return p

    p = command("run", "run the workflow on an input until it ends or waits", run_id=False)
    p.add_argument("--input", default="{}", help="the input state fields, as JSON")
    p.add_argument("--run-id", dest="new_run_id", help="the id of the new run")
    _queue_options(command("status", "the state, status and pending approvals of a run"))
    command("resume", "continue a run from its last checkpoint")
    _queue_options(command("cancel", "cancel a run"))
    command("history", "the checkpoints of a run: what each step changed")
    p = command("fork", "start a new run from a checkpoint of a run, with edited state")
    p.add_argument("--checkpoint", type=int, help="the checkpoint id (default: the last)")
    p.add_argument("--set", dest="patch", default=None, help="state fields to change, as JSON")
    p.add_argument("--run", action="store_true", help="also run the fork")
    command("approvals", "the pending approvals", run_id=False)
    p = command("approve", "decide an approval and continue its run", run_id=False)
    p.add_argument("approval_id", help="the approval id (see `approvals`)")
    p.add_argument("--reject", action="store_true", help="reject instead of approving")
    p.add_argument("--by", help="who decides")
    p.add_argument("--reason", help="why (shown in the decision)")
    p.add_argument("--edits", default=None, help="state fields to change, as JSON")
    _queue_options(p)
    _queue_options(
        command("delete", "drop a finished run: its checkpoints, history, sub-runs, approvals")
    )
    p = command(
        "prune", "drop the finished runs whose last record is older than --older-than", run_id=False
    )
    p.add_argument(
        "--older-than",
        required=True,
        help="an age: seconds, or a number with s, m, h or d (7d: a week)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs, delete nothing")
    _queue_options(p)
    p = command("submit", "batch mode: submit one run per input line to a queue", run_id=False)
    p.add_argument(
        "--input",
        dest="input_file",
        required=True,
        help="a JSON-lines file: one object of input state fields per line ('-': stdin)",
    )
    p.add_argument("--no-wait", action="store_true", help="print the run ids and return")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    _queue_options(p, required=True)
    p = command("result", "batch mode: wait for a run to end (or wait) and print it")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    _queue_options(p, required=True)
    p = cmds.add_parser(
        "dead-letters",
        help="batch mode: list a queue's dead letters, or `retry ID` one",
        parents=list(parents),
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "retry"],
        default="list",
        help="list (default) or retry",
    )
    p.add_argument("dead_letter_id", nargs="?", help="the dead letter to retry")
    _queue_options(p, required=True)
    return dict(cmds.choices)


class _Usage(Exception):
    pass


def _load(ref: str, args: argparse.Namespace) -> Any:
    from openheim.workflow import Workflow

    if ":" not in ref:
        from openheim.config import load_config

        config = load_config(getattr(args, "config", None))
        if ref not in config.workflow_tables:
            where = str(config.path) if config.path is not None else "no config file"
            known = ", ".join(config.workflow_names()) or "none"
            raise _Usage(
                f"no workflow {ref!r} in {where} (workflows: {known}); name a "
                "[workflows.NAME] of the config (--config PATH) or give module:attribute"
            )
        return config.build_workflow(ref)
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise _Usage(f"name the workflow as module:attribute, got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise _Usage(f"cannot load workflow {ref!r}: {exc}") from None
    if not isinstance(obj, Workflow):
        raise _Usage(f"{ref!r} is a {type(obj).__name__}, not an oh.Workflow")
    return obj


def _json_arg(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _Usage(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Usage(f"{what} must be a JSON object of state fields, got {text!r}")
    return value


def _plain(obj: Any) -> Any:
    from openheim.workflow.events import to_builtins

    return to_builtins(obj)


def _result(res: WorkflowResult) -> dict[str, Any]:
    return res.to_builtins()


def _print(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


async def _dead_letters(args: argparse.Namespace) -> None:
    from openheim.workflow.queues import open_queue

    q = open_queue(args.queue, name=args.queue_name)
    try:
        if args.action == "retry":
            if not args.dead_letter_id:
                raise _Usage("name the dead letter to retry: dead-letters retry ID --queue URL")
            ok = await q.retry_dead_letter(args.dead_letter_id)
            if not ok:
                raise _Usage(
                    f"no dead letter {args.dead_letter_id!r} on queue {args.queue_name!r}; "
                    "`openheim workflow dead-letters --queue URL` lists them"
                )
            _print({"retried": args.dead_letter_id})
            return
        letters = await q.dead_letters()
        for dl in letters:
            _print(_plain(dl))
        if not letters:  # (stdout stays JSON lines: none)
            print(f"no dead letters on queue {args.queue_name!r}", file=sys.stderr)
    finally:
        await q.aclose()


def _read_inputs(path: str) -> list[dict[str, Any]]:
    try:
        from pathlib import Path

        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        hint = ""
        if path.lstrip().startswith(("{", "[")):
            hint = (
                "; --input takes a JSON-lines file (one object per line), or '-' to read "
                f"them from stdin: echo '{path}' | openheim workflow submit ... --input -"
            )
        raise _Usage(f"cannot read --input {path}: {exc.strerror or exc}{hint}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise _Usage(f"{path}:{n}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise _Usage(f"{path}:{n}: each line is a JSON object of state fields")
        out.append(value)
    return out


async def _batch(args: argparse.Namespace, wf: Any, ns: str) -> bool:
    """Batch-mode commands (``--queue``); False if this is not one."""
    cmd = args.wf_command
    if cmd == "submit":
        inputs = _read_inputs(args.input_file)
        handles = await wf.submit_many(
            inputs,
            queue=args.queue,
            store=args.store,
            namespace=ns,
            queue_name=args.queue_name,
            progress=not args.no_progress,
            wait=not args.no_wait,
            timeout=args.timeout,
        )
        for h in handles:
            _print({"run_id": h.run_id})
        return True
    if getattr(args, "queue", None) is None:
        return False
    if cmd in ("delete", "prune"):
        on = wf._on_batch(args.queue, args.store, args.queue_name, ns)
        await _housekeep(args, on)
        return True
    if cmd == "approve":
        await wf.approve(
            args.approval_id,
            not args.reject,
            by=args.by,
            reason=args.reason,
            edits=_json_arg(args.edits, "--edits"),
            queue=args.queue,
            store=args.store,
            namespace=ns,
            queue_name=args.queue_name,
        )
        _print({"approval_id": args.approval_id, "queued": True})
        return True
    h = wf.handle(
        args.run_id, queue=args.queue, store=args.store, namespace=ns, queue_name=args.queue_name
    )
    if cmd == "status":
        _print(_result(await h.status()))
    elif cmd == "result":
        _print(_result(await h.result(timeout=args.timeout)))
    elif cmd == "cancel":
        await h.cancel()
        _print({"run_id": args.run_id, "status": "cancelled"})
    return True


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _age(text: str) -> float:
    """``--older-than``: seconds, or a number with s, m, h or d."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:])
    try:
        value = float(t[:-1] if unit is not None else t)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise _Usage(
            f"--older-than {text!r} is not an age: give seconds, or a number with s, m, h "
            "or d (30m, 12h, 7d)"
        )
    return value * (unit or 1.0)


async def _housekeep(args: argparse.Namespace, wf: Any) -> None:
    if args.wf_command == "delete":
        await wf.delete(args.run_id)
        _print({"run_id": args.run_id, "deleted": True})
        return
    ids = await wf.prune(_age(args.older_than), dry_run=args.dry_run)
    for run_id in ids:
        _print({"run_id": run_id, "deleted": not args.dry_run})
    what = "would be deleted" if args.dry_run else "deleted"
    print(f"{len(ids)} finished run(s) {what}", file=sys.stderr)


async def _dispatch(args: argparse.Namespace) -> None:
    if args.wf_command == "dead-letters":
        await _dead_letters(args)
        return
    if args.namespace and args.tenant:
        raise _Usage("give --tenant or --namespace, not both")
    wf = _load(args.workflow, args)
    if getattr(args, "queue", None) is None and args.wf_command != "submit":
        if args.tenant:
            wf = wf.scoped(f"tenant/{args.tenant}")  # what the HTTP routes use for the tenant
        elif args.namespace:
            wf = wf.scoped(args.namespace)
    try:
        ns = f"tenant/{args.tenant}" if args.tenant else (args.namespace or "default")
        if await _batch(args, wf, ns):
            return
        cmd = args.wf_command
        if cmd == "run":
            res = await wf.run(_json_arg(args.input, "--input"), run_id=args.new_run_id)
            _print(_result(res))
        elif cmd == "status":
            _print(_result(await wf.status(args.run_id)))
        elif cmd == "resume":
            _print(_result(await wf.resume(args.run_id)))
        elif cmd == "cancel":
            await wf.cancel(args.run_id)
            _print({"run_id": args.run_id, "status": "cancelled"})
        elif cmd == "history":
            for cp in await wf.history(args.run_id):
                _print(_plain(cp))
        elif cmd == "fork":
            new_id = await wf.fork(args.run_id, args.checkpoint, _json_arg(args.patch, "--set"))
            if args.run:
                _print(_result(await wf.resume(new_id)))
            else:
                _print({"run_id": new_id, "forked_from": args.run_id})
        elif cmd in ("delete", "prune"):
            await _housekeep(args, wf)
        elif cmd == "approvals":
            for a in await wf.approvals():
                _print(_plain(a))
        elif cmd == "approve":
            res = await wf.approve(
                args.approval_id,
                not args.reject,
                by=args.by,
                reason=args.reason,
                edits=_json_arg(args.edits, "--edits"),
            )
            _print(_result(res) if res is not None else {"approval_id": args.approval_id})
    finally:
        await wf.aclose()


# -- openheim worker ---------------------------------------------------------------------


def add_worker_parser(
    sub: Any, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """Add ``worker`` (batch mode's worker process) to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="run batch-mode workflow tasks from a queue (any number, on any host)",
        description=(
            "Take the tasks of batch runs from a queue, run them and checkpoint each; "
            "SIGTERM drains (running tasks finish or are given back) and exits."
        ),
        parents=list(parents),
    )
    p.add_argument("--queue", required=True, help="redis://host:6379/0 or nats://host:4222")
    p.add_argument(
        "--workflows",
        required=True,
        help="the workflows to run, comma-separated: module:attribute or [workflows.NAME]",
    )
    p.add_argument("--store", help="where the runs live (default: the queue's own engine)")
    p.add_argument("--queue-name", default="openheim", help="the queue's name (default openheim)")
    p.add_argument("--concurrency", type=int, default=64, help="tasks run at once (default 64)")
    p.add_argument(
        "--take",
        type=int,
        help="tasks taken per pull (default: --concurrency, at most 128); fewer keep more "
        "than one group of steps in flight: more steps/s from one worker, at more CPU "
        "per step",
    )
    p.add_argument(
        "--cache-mb",
        type=float,
        default=128.0,
        help="memory for the states of the runs in flight, kept between their steps "
        "(default 128); a run whose state was dropped is read back from its log",
    )
    p.add_argument(
        "--deadline-every",
        type=float,
        default=5.0,
        help="seconds between looks for approvals of the queue's runs whose deadline "
        "passed (default 5)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish after SIGTERM (default 30)",
    )
    p.add_argument(
        "--visibility-timeout",
        type=float,
        default=30.0,
        help="seconds before a silent worker's task goes to another (default 30)",
    )
    p.add_argument(
        "--max-deliveries", type=int, default=5, help="deliveries before a dead letter (5)"
    )
    p.add_argument(
        "--stats-every",
        type=float,
        default=30.0,
        help="print the queue's depth, redeliveries and dead letters every S seconds (0: never)",
    )
    p.add_argument(
        "--stats", action="store_true", help="print the queue's statistics once and exit"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (0: any free port; "
        "needs prometheus-client)",
    )
    p.add_argument(
        "--metrics-addr",
        default="0.0.0.0",
        help="the address --metrics-port listens on (default 0.0.0.0)",
    )
    return p


async def _watch_queue(
    args: argparse.Namespace, queue: Any, worker: Any, gauges: bool, done: asyncio.Event
) -> None:
    """Poll the queue's stats once per tick for both readers: the metrics' gauges
    (depth, in flight, redeliveries, dead letters; every 5 s, from the start) and the
    ``--stats-every`` line (printed at the first poll ``stats_every`` s after the last),
    until ``done`` is set (no line after the worker's last one)."""
    from openheim import telemetry

    show = args.stats_every if args.stats_every > 0 else None
    ticks = [t for t in (show, 5.0 if gauges else None) if t is not None]
    if not ticks:
        return
    tick = min(ticks)
    shown = time.monotonic()
    first = gauges
    while True:
        if not first:
            await asyncio.sleep(tick)
        first = False
        try:
            stats = await queue.stats()
        except Exception as exc:  # the queue may be restarting: try again next tick
            print(f"queue stats unavailable: {exc}", file=sys.stderr, flush=True)
            continue
        if done.is_set():
            return
        if gauges:
            telemetry.record_queue(args.queue_name, stats)
        if show is not None and time.monotonic() - shown >= show - 1e-3:
            shown = time.monotonic()
            line = dict(_plain(stats), queue=args.queue_name)
            _print({"stats": line, "worker": _plain(worker.stats)})


async def _work(args: argparse.Namespace) -> None:
    import signal

    from openheim.workflow import Worker
    from openheim.workflow._worker import tune_gc

    refs = [r.strip() for r in args.workflows.split(",") if r.strip()]
    if not refs:
        raise _Usage("--workflows names at least one workflow (module:attribute)")
    wfs = [_load(ref, args) for ref in refs]
    if args.concurrency < 1:
        raise _Usage(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.take is not None and args.take < 1:
        raise _Usage(f"--take must be at least 1, got {args.take}")
    if not args.cache_mb > 0:
        raise _Usage(f"--cache-mb must be positive, got {args.cache_mb:g}")
    if not args.deadline_every > 0:
        raise _Usage(f"--deadline-every must be positive, got {args.deadline_every:g}")
    metrics = None
    if args.metrics_port is not None and not args.stats:
        from openheim import telemetry

        metrics = telemetry.serve_metrics(args.metrics_port, args.metrics_addr)
    worker = Worker(
        wfs,
        args.queue,
        store=args.store,
        queue_name=args.queue_name,
        concurrency=args.concurrency,
        take=args.take,
        cache_mb=args.cache_mb,
        deadline_every=args.deadline_every,
        visibility_timeout=args.visibility_timeout,
        max_deliveries=args.max_deliveries,
    )
    queue = worker.queue
    try:
        if args.stats:
            _print(dict(_plain(await queue.stats()), queue=args.queue_name))
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        tune_gc()  # (this process only runs the worker)
        started: dict[str, Any] = {
            "worker": worker.consumer,
            "queue": args.queue,
            "workflows": sorted(worker.graphs),
            "concurrency": worker.concurrency,
            "take": worker.take_count,
            "cache_mb": args.cache_mb,
        }
        if metrics is not None:
            started["metrics"] = f"http://{args.metrics_addr}:{metrics.port}/metrics"
        _print(started)

        done = asyncio.Event()
        watcher = asyncio.ensure_future(
            _watch_queue(args, queue, worker, metrics is not None, done)
        )
        try:
            stats = await worker.run(drain_timeout=args.drain_timeout)
        finally:
            # (a poll of the queue in flight may outlive the cancel: the flag stops it)
            done.set()
            watcher.cancel()
            await asyncio.wait([watcher], timeout=5)
        _print({"stopped": worker.consumer, **_plain(stats)})
    finally:
        for wf in wfs:
            await wf.aclose()
        await worker.aclose()
        if metrics is not None:
            metrics.close()


def run_worker(args: argparse.Namespace) -> int:
    """Run a parsed ``worker`` command; the exit status."""
    from openheim.errors import ConfigError, OpenheimError

    try:
        asyncio.run(_work(args))
    except (_Usage, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OpenheimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``workflow`` command; the exit status."""
    from openheim.errors import ConfigError, OpenheimError

    try:
        asyncio.run(_dispatch(args))
    except (_Usage, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OpenheimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="openheim workflow", description="run and steer durable workflow runs"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=None, help="config file")
    _fill(parser, [common])
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
