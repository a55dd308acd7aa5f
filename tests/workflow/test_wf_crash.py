"""A real process SIGKILLed mid-run, resumed by a new process: no committed step runs again.

The child (``_wf_crash_child.py``) runs a 6-step workflow on SQLite or
PostgreSQL; every step records its execution in an fsynced file when it
starts. The parent kills the child with SIGKILL while a step is in flight,
reads which steps the store holds as committed, and resumes the run in a new
process. Committed steps never run again; the one in flight may run twice.
An approval waits across a killed process the same way: deciding it in
another process runs only the nodes after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from wfhelpers import POSTGRES_URL, cleanup

from openheim.stores import open_store

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wf_crash_child.py")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


def _url(kind: str, tmp: Path) -> str:
    if kind == "nats":
        return "nats://127.0.0.1:4222?bucket=ohtest"
    return f"sqlite://{tmp / 'state.db'}" if kind == "sqlite" else POSTGRES_URL


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _effects(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


async def _committed(url: str, ns: str, run_id: str) -> list[str]:
    """The steps whose results the store holds."""
    import _wf_crash_child

    wf = _wf_crash_child.chain(url, ns, os.devnull)
    try:
        return [c.node for c in await wf.history(run_id) if c.kind == "step" and c.node]
    finally:
        await wf.aclose()


async def _drop(url: str, ns: str) -> None:
    store = open_store(url, namespace=ns)
    try:
        await cleanup(store)
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
def test_sigkill_mid_run_then_resume_in_a_new_process(kind: str, tmp_path: Path) -> None:
    url = _url(kind, tmp_path)
    ns = f"crash-{uuid.uuid4().hex[:10]}"
    effects = tmp_path / "effects"
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    try:
        proc = _spawn(url, ns, str(effects), "run", run_id)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        # Kill while the third step is in flight (its effect written, its result not).
        deadline = time.monotonic() + 60
        while len(_effects(effects)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL

        committed = asyncio.run(_committed(url, ns, run_id))
        ran_before = Counter(_effects(effects))
        assert 2 <= len(committed) < 6, committed  # killed mid-run
        assert all(ran_before[s] == 1 for s in committed)

        out = _finish(_spawn(url, ns, str(effects), "resume", run_id))
        line = next(x for x in out.splitlines() if x.startswith("DONE"))
        _, state, status = line.split(" ", 2)
        assert status == "done"
        assert msgspec.json.decode(state)["log"] == ["s1", "s2", "s3", "s4", "s5", "s6"]
        ran = Counter(_effects(effects))
        for step in ["s1", "s2", "s3", "s4", "s5", "s6"]:
            # Committed before the kill: exactly once. The one in flight: at most twice.
            assert ran[step] == 1 if step in committed else 1 <= ran[step] <= 2, (step, ran)
        assert sum(ran.values()) <= 7
    finally:
        asyncio.run(_drop(url, ns))


@pytest.mark.parametrize("kind", BACKENDS)
def test_approval_across_a_killed_process(kind: str, tmp_path: Path) -> None:
    url = _url(kind, tmp_path)
    ns = f"gate-{uuid.uuid4().hex[:10]}"
    effects = tmp_path / "effects"
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    try:
        proc = _spawn(url, ns, str(effects), "gate", run_id)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "WAITING", proc.communicate(timeout=30)
        approval_id = line[1]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert Counter(_effects(effects)) == {"before": 1, "gate": 1}

        out = _finish(_spawn(url, ns, str(effects), "approve", run_id, approval_id))
        done = next(x for x in out.splitlines() if x.startswith("DONE"))
        _, state, status = done.split(" ", 2)
        assert status == "done"
        decoded = msgspec.json.decode(state)
        assert decoded["log"] == ["before", "after"]
        assert decoded["ok"]["approved"] is True
        assert decoded["ok"]["by"] == "parent"
        # Nothing before the approval ran again, the approval node included.
        assert Counter(_effects(effects)) == {"before": 1, "gate": 1, "after": 1}
    finally:
        asyncio.run(_drop(url, ns))
