"""`openheim chat` through a pseudo-terminal (pexpect): streaming, Ctrl-C, approvals, commands."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ixhelpers import child_env

pexpect = pytest.importorskip("pexpect")


@pytest.fixture
def chat(project: Path, tmp_path: Path) -> Iterator[object]:
    env = child_env(
        PROMPT_TOOLKIT_NO_CPR="1",
        TERM="dumb",
        OPENHEIM_HISTORY_FILE=str(tmp_path / "history"),
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "openheim", "chat", "slow"],
        cwd=str(project.parent),
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    child.expect("you> ")
    yield child
    if child.isalive():
        child.terminate(force=True)
    child.close()


def send(child: object, line: str) -> None:
    # prompt_toolkit drops keys typed before it has put the terminal in raw mode.
    time.sleep(0.3)
    child.sendline(line)  # type: ignore[attr-defined]


def test_streams_the_answer_and_keeps_history(chat: object, tmp_path: Path) -> None:
    send(chat, "hello")
    chat.expect("slow> slow answer to hello word0")  # type: ignore[attr-defined]
    chat.expect("word19")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "/sessions")
    chat.expect(r"chat-\w+ \*")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    time.sleep(0.3)
    chat.sendcontrol("d")  # type: ignore[attr-defined]
    chat.expect(pexpect.EOF)  # type: ignore[attr-defined]
    assert "hello" in (tmp_path / "history").read_text()


def test_ctrl_c_cancels_the_turn_and_keeps_the_session(chat: object) -> None:
    send(chat, "/session mine")
    chat.expect("session: mine")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "sleep 30")
    time.sleep(0.5)
    chat.sendintr()  # type: ignore[attr-defined]
    chat.expect("cancelled")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "/session")
    chat.expect("session: mine")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "after")
    chat.expect("slow answer to after")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "/exit")
    chat.expect(pexpect.EOF)  # type: ignore[attr-defined]


def test_approval_prompt_once_always_and_reject(chat: object) -> None:
    send(chat, "delete /tmp/a")
    chat.expect(r"approve delete_file\(\{'path': '/tmp/a'\}\)\?")  # type: ignore[attr-defined]
    send(chat, "n")
    chat.expect("done: .*rejected")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "delete /tmp/b")
    chat.expect("approve delete_file")  # type: ignore[attr-defined]
    send(chat, "a")
    chat.expect("done: deleted /tmp/b")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "delete /tmp/c")  # "always" remembers: no prompt this time
    idx = chat.expect(["approve delete_file", "done: deleted /tmp/c"])  # type: ignore[attr-defined]
    assert idx == 1


def test_slash_commands_and_multiline_input(chat: object) -> None:
    send(chat, "/tools")
    chat.expect(r"delete_file \(needs approval\)")  # type: ignore[attr-defined]
    send(chat, "/model")
    chat.expect("model: ixtools:slow_model")  # type: ignore[attr-defined]
    send(chat, "/agent echo")
    chat.expect("agent: echo")  # type: ignore[attr-defined]
    chat.expect("you> ")  # type: ignore[attr-defined]
    send(chat, "first line\\")
    chat.expect(r"\.\.\. ")  # type: ignore[attr-defined]
    send(chat, "second line")
    chat.expect(r"echo> echo: first line\s+second line \(turn 1\)")  # type: ignore[attr-defined]
    send(chat, "/nope")
    chat.expect("unknown command /nope")  # type: ignore[attr-defined]
    send(chat, "/help")
    chat.expect("/sessions")  # type: ignore[attr-defined]


def test_run_streams_to_a_terminal(project: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "openheim", "run", "weather", "weather Riga"],
        cwd=str(project.parent),
        env=child_env(TERM="dumb"),
        encoding="utf-8",
        timeout=30,
    )
    child.expect(r"\[tool get_weather\]")
    child.expect("tool said: sunny in Riga")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
