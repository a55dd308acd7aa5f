"""``openheim chat``: an interactive REPL over a configured agent (prompt_toolkit + rich).

Text streams as the model writes it; tool calls are shown as they run; tools
that need approval ask (approve once, always for this chat, or reject).
Enter sends; Esc then Enter, or a trailing backslash, continues on a new
line. Ctrl-C cancels the current turn (the session keeps its history as it was
before the turn); Ctrl-D or /exit leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from rich.console import Console
from rich.markup import escape

from openheim.config import Config, open_history
from openheim.errors import ConfigError, OpenheimError

HELP = """\
/help             this help
/agent [NAME]     show or switch the agent (keeps the session)
/model            the current agent's model
/tools            the current agent's tools
/session [ID]     show or switch the session
/sessions         the stored sessions
/new              start a new session
/clear            clear the screen
/workflows        the configured workflows ([workflows.NAME])
/wf NAME [JSON]   run workflow NAME on the input fields JSON; shows its steps
/approvals        the workflow approvals waiting for a decision
/approve ID [WHY] approve a workflow approval; the run goes on here
/reject ID [WHY]  reject it (WHY is recorded and shown to the run)
/exit             leave (or Ctrl-D)
Enter sends; Esc Enter or a trailing \\ adds a line; Ctrl-C cancels a turn."""


def _new_session() -> str:
    return "chat-" + uuid.uuid4().hex[:8]


class Repl:
    def __init__(
        self, config: Config, agent: str | None, session: str | None, history_file: str | None
    ) -> None:
        if not config.agents:
            raise ConfigError(
                "no agents are configured; write an openheim.toml (`openheim init`) or pass --config"
            )
        self.config = config
        self.store = open_history(config.store.url, "default")
        self.agent_name = agent or next(iter(config.agents))
        self.console = Console(highlight=False, soft_wrap=True)
        self.agent = self._build(self.agent_name)
        self.session = session or _new_session()
        self.always: set[str] = set()
        self._workflows: dict[str, Any] = {}  # built on first use
        path = Path(history_file or Path.home() / ".openheim" / "history").expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        self.prompt: PromptSession[str] = PromptSession(
            history=FileHistory(str(path)), key_bindings=keys
        )

    def say(self, text: str) -> None:
        self.console.print(text)

    def _build(self, name: str) -> Any:
        return self.config.build_agent(
            name,
            history=self.store,
            checkpointer=True,
            announce=lambda text: self.say(f"[dim]{escape(text)}[/]"),
        )

    async def read(self) -> str:
        lines = [await self.prompt.prompt_async("you> ")]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(await self.prompt.prompt_async("... "))
        return "\n".join(lines)

    async def main(self) -> int:
        self.say(
            f"[bold]openheim chat[/] · agent [cyan]{escape(self.agent_name)}[/] · session "
            f"[cyan]{escape(self.session)}[/] · /help for commands"
        )
        while True:
            try:
                text = await self.read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not text.strip():
                continue
            if text.startswith("/"):
                if not await self.command(text.strip()):
                    break
                continue
            await self.turn(text)
        await self.agent.aclose()
        for wf in self._workflows.values():
            await wf.aclose()
        return 0

    # ---- commands -------------------------------------------------------------------

    async def command(self, line: str) -> bool:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.say(escape(HELP))
        elif name == "/agent":
            if not arg:
                self.say(
                    f"agent: {escape(self.agent_name)} (configured: {', '.join(self.config.agents)})"
                )
            elif arg not in self.config.agents:
                self.say(
                    f"[red]no agent {escape(arg)!r}[/]; configured: {', '.join(self.config.agents)}"
                )
            else:
                await self.agent.aclose()
                self.agent_name = arg
                self.agent = self._build(arg)
                self.say(f"agent: {escape(arg)}")
        elif name == "/model":
            self.say(f"model: {escape(self.config.agents[self.agent_name].model)}")
        elif name == "/tools":
            tools = self.agent.tools
            if not tools:
                self.say("no tools")
            for t in tools:
                flag = " (needs approval)" if t.requires_approval else ""
                self.say(f"{escape(t.name)}{flag}: {escape(t.definition.description)}")
        elif name == "/session":
            if arg:
                self.session = arg
            self.say(f"session: {escape(self.session)}")
        elif name == "/sessions":
            ids = await self.store.list_sessions()
            for sid in ids:
                mark = " *" if sid == self.session else ""
                self.say(f"{escape(sid)}{mark}")
            if not ids:
                self.say("no stored sessions")
        elif name == "/new":
            self.session = _new_session()
            self.say(f"session: {escape(self.session)}")
        elif name == "/clear":
            self.console.clear()
        elif name in ("/workflows", "/wf", "/approvals", "/approve", "/reject"):
            with _ctrl_c_signals():  # Ctrl-C stops following the run; it stays resumable
                await self._cancellable(
                    self.workflow_command(name, arg),
                    "the run keeps its checkpoints: `openheim workflow resume` continues it",
                )
        else:
            self.say(f"[red]unknown command {escape(name)}[/]; /help lists them")
        return True

    # ---- workflows and their approvals -------------------------------------------------

    def _workflow(self, name: str) -> Any:
        wf = self._workflows.get(name)
        if wf is None:
            wf = self._workflows[name] = self.config.build_workflow(name)
        return wf

    async def workflow_command(self, name: str, arg: str) -> None:
        names = list(self.config.workflow_tables)
        if name == "/workflows":
            for wf_name in names:
                self.say(escape(wf_name))
            if not names:
                self.say("no workflows are configured ([workflows.NAME] in openheim.toml)")
            return
        if not names:
            self.say("[red]no workflows are configured[/] ([workflows.NAME] in openheim.toml)")
            return
        if name == "/wf":
            import msgspec

            wf_name, _, text = arg.partition(" ")
            if not wf_name:
                self.say(f"usage: /wf NAME [JSON input]; workflows: {escape(', '.join(names))}")
                return
            try:
                data = msgspec.json.decode(text) if text.strip() else {}
            except msgspec.DecodeError as exc:
                self.say(f"[red]the input is not valid JSON[/] ({escape(str(exc))})")
                return
            if not isinstance(data, dict):
                self.say("[red]the input must be a JSON object of state fields[/]")
                return
            await self._follow(self._workflow(wf_name).stream(data))
        elif name == "/approvals":
            found = [a for n in names for a in await self._workflow(n).approvals()]
            for a in found:
                self.say(
                    f"{escape(a.id)}  run {escape(a.run_id)}  node {escape(a.node)}  "
                    f"payload {escape(str(a.payload))}"
                )
            if not found:
                self.say("no pending approvals")
        else:
            approval_id, _, reason = arg.partition(" ")
            if not approval_id:
                self.say(f"usage: {name} ID [reason]; /approvals lists them")
                return
            wf, rec = await self._approval(names, approval_id)
            if wf is None or rec is None:
                self.say(f"[red]no approval {escape(approval_id)!r}[/]; /approvals lists them")
                return
            approved = name == "/approve"
            by = f"repl:{os.environ.get('USER') or 'user'}"
            await wf.approve(
                approval_id, approved, by=by, reason=reason.strip() or None, resume=False
            )
            verdict = "approved" if approved else "rejected"
            queue = await wf.queue_of(rec.root)
            if queue is not None:  # a batch run: the decision put it back on its queue
                self.say(
                    f"{escape(approval_id)} {verdict}; run {escape(rec.root)} goes on in the "
                    f"workers of {escape(queue)}"
                )
                return
            self.say(f"{escape(approval_id)} {verdict}; run {escape(rec.root)} goes on")
            await self._follow(wf.stream(resume=rec.root))

    async def _approval(self, names: list[str], approval_id: str) -> tuple[Any, Any]:
        for n in names:
            wf = self._workflow(n)
            got = await wf.journal.get_approval(approval_id)
            if got is not None and got[0].workflow in wf.definitions():
                return wf, got[0]
        return None, None

    async def _follow(self, events: Any) -> None:
        from openheim.workflow import (
            ApprovalRequested,
            NodeFinished,
            NodeStarted,
            RunFinished,
            RunStarted,
            TokenDelta,
        )

        async for ev in events:
            kind = type(ev)
            if kind is RunStarted:
                self.say(f"[dim]run {escape(ev.run_id)} of {escape(ev.workflow)}[/]")
            elif kind is NodeStarted:
                self.say(f"[dim]→ {escape(ev.node)}[/]")
            elif kind is NodeFinished:
                self.say(f"[dim]← {escape(ev.node)} {escape(str(ev.updates))}[/]")
            elif kind is TokenDelta:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
            elif kind is ApprovalRequested:
                a = ev.approval
                self.say(
                    f"[yellow]approval {escape(a.id)}[/] waits at {escape(a.node)}: "
                    f"{escape(str(a.payload))} (/approve or /reject it)"
                )
            elif kind is RunFinished:
                res = ev.result
                self.say(f"run {escape(res.run_id)}: {escape(res.status)}")
                self.say(escape(str(res.state)))

    # ---- one turn ---------------------------------------------------------------------

    async def turn(self, text: str) -> None:
        with _ctrl_c_signals():
            await self._cancellable(self._turn(text), "the session is unchanged")

    async def _cancellable(self, work: Any, unchanged: str) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(work)
        cancellable = True
        try:
            loop.add_signal_handler(signal.SIGINT, task.cancel)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Windows
            cancellable = False
        # prompt_toolkit can leave the tty raw, so a Ctrl-C may arrive as a byte, not a signal.
        watching = _watch_ctrl_c(loop, task)
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            sys.stdout.write("\n")
            self.say(f"[yellow]cancelled[/] ({unchanged})")
        except OpenheimError as exc:
            sys.stdout.write("\n")
            self.say(f"[red]{escape(type(exc).__name__)}: {escape(str(exc))}[/]")
        finally:
            if watching:
                loop.remove_reader(sys.stdin.fileno())
            if cancellable:
                loop.remove_signal_handler(signal.SIGINT)

    async def _turn(self, text: str) -> None:
        result = await self._stream(prompt=text)
        while result.stop_reason == "approval_required":
            decisions: dict[str, bool] = {}
            for call in result.pending:
                if call.tool in self.always:
                    decisions[call.id] = True
                    continue
                decisions[call.id] = await self._ask(call)
            result = await self._stream(resume=result, approvals=decisions)

    async def _ask(self, call: Any) -> bool:
        loop = asyncio.get_running_loop()
        # The prompt takes Ctrl-C itself while it is shown.
        loop.remove_signal_handler(signal.SIGINT)
        try:
            while True:
                answer = await self.prompt.prompt_async(
                    f"approve {call.tool}({call.arguments})? [y]es once / [a]lways / [n]o: "
                )
                choice = answer.strip().lower()[:1]
                if choice in ("y", "a", "n"):
                    break
        except KeyboardInterrupt:
            raise asyncio.CancelledError from None
        finally:
            task = asyncio.current_task()
            if task is not None:
                loop.add_signal_handler(signal.SIGINT, task.cancel)
        if choice == "a":
            self.always.add(call.tool)
        return choice != "n"

    async def _stream(self, **kwargs: Any) -> Any:
        from openheim.agent import Done, TextDelta, ToolCalled, ToolResult

        result = None
        wrote = False
        session = None if "resume" in kwargs else self.session
        async for event in self.agent.stream(kwargs.pop("prompt", None), session=session, **kwargs):
            kind = type(event)
            if kind is TextDelta:
                if not wrote:  # replies are labelled with the agent's name
                    sys.stdout.write(f"{self.agent_name}> ")
                sys.stdout.write(event.text)
                sys.stdout.flush()
                wrote = True
            elif kind is ToolCalled:
                if wrote:
                    sys.stdout.write("\n")
                    wrote = False
                self.say(f"[dim]→ {escape(event.name)}({escape(str(event.arguments))})[/]")
            elif kind is ToolResult:
                style = "red" if event.is_error else "dim"
                self.say(f"[{style}]← {escape(event.content[:200])}[/]")
            elif kind is Done:
                result = event.result
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()
        return result


def _watch_ctrl_c(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> bool:
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return False

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b""
        if b"\x03" in data:
            task.cancel()

    try:
        loop.add_reader(fd, readable)
    except (NotImplementedError, OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _ctrl_c_signals() -> Iterator[None]:
    """Let Ctrl-C raise SIGINT while a turn runs (prompt_toolkit may leave the tty raw)."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield
        return
    mode = list(saved)
    mode[3] |= termios.ISIG
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def run_repl(
    config: Config,
    agent: str | None = None,
    *,
    session: str | None = None,
    history_file: str | None = None,
) -> int:
    """Run the REPL until the user leaves; returns the exit code."""
    history_file = history_file or os.environ.get("OPENHEIM_HISTORY_FILE")
    repl = Repl(config, agent, session, history_file)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(repl.main())
    return 0
