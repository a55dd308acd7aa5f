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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openheim.workflow.events import WorkflowResult

__all__ = ["add_parser", "main", "run"]

_COMMANDS = ("run", "status", "resume", "cancel", "history", "fork", "approvals", "approve")


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
    command("status", "the state, status and pending approvals of a run")
    command("resume", "continue a run from its last checkpoint")
    command("cancel", "cancel a run")
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


async def _dispatch(args: argparse.Namespace) -> None:
    if args.namespace and args.tenant:
        raise _Usage("give --tenant or --namespace, not both")
    wf = _load(args.workflow, args)
    if args.tenant:
        wf = wf.scoped(f"tenant/{args.tenant}")  # what the HTTP routes use for the tenant
    elif args.namespace:
        wf = wf.scoped(args.namespace)
    try:
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
