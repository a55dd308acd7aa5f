"""`openheim actors dead-letters`: the runtime's dead-letter log, read from the configured store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ixhelpers import child_env

from openheim.errors import ActorFailed
from openheim.runtime import ActorContext, RestartPolicy, Runtime

CONFIG = """
[store]
url = "sqlite:///{db}"
"""


def _oh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openheim", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _fail_once(db: Path, namespace: str) -> None:
    async def always_fails(msg: Any, ctx: ActorContext) -> None:
        raise ValueError(f"cannot handle {msg!r}")

    policy = RestartPolicy(retries=0, backoff=0.001, max_backoff=0.01, max_restarts=10, within=60)
    async with Runtime(store=f"sqlite:///{db}", namespace=namespace, restart=policy) as rt:
        ref = rt.spawn(always_fails, id="orders/7")
        with pytest.raises(ActorFailed):
            await ref.ask({"order": 7}, timeout=10)
        await rt.wait_idle()


def test_dead_letters_are_listed_from_the_configured_store(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    (tmp_path / "openheim.toml").write_text(CONFIG.format(db=db))

    empty = _oh("actors", "--json", cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"dead_letters": []}

    asyncio.run(_fail_once(db, "actors"))
    asyncio.run(_fail_once(db, "elsewhere"))

    listed = _oh("actors", "dead-letters", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)["dead_letters"]
    assert len(letters) == 1  # the other namespace's letter is not this runtime's
    assert letters[0]["actor"] == "orders/7"
    assert letters[0]["error_type"] == "ValueError"
    assert letters[0]["message"] == {"order": 7}

    text = _oh("actors", "--namespace", "elsewhere", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "orders/7" in text.stdout
    assert "ValueError: cannot handle" in text.stdout

    bad = _oh("actors", "forget", cwd=tmp_path)
    assert bad.returncode == 2
    assert "usage: openheim actors" in bad.stderr
