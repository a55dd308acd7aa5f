"""Batch mode under faults: ``openheim worker`` processes SIGKILLed at random moments, and
restarts of the Redis or NATS server the queue and the runs live on.

Runs are the soak's six-step chain (``soakflows:bchain``): each step appends
``<tag> <step> <pid>`` to an fsynced file when it starts (the side effect a crash
may repeat) and sleeps 20-150 ms. Every server here is private (a free port, a
temporary directory): the shared Redis and NATS are never touched.

After every kill the runs' committed steps are read from the store and their
side-effect counts frozen: a committed step must never run again. At the end
every run must be done, holding each of the six steps exactly once and in
order (zero lost, zero duplicated).

``rows(scale)`` gives the soak table's rows (``soak_run.py`` picks this module up).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from soakflows import STEPS  # noqa: E402
from soaklib import Row, child_env, effect_counts  # noqa: E402

from openheim.testing.servers import PrivateServer  # noqa: E402

VISIBILITY = 2.0  # seconds before a killed worker's task goes to another


class Workers:
    """``openheim worker`` processes on one queue; output to files in ``folder``."""

    def __init__(self, url: str, queue: str, folder: Path, effects: Path) -> None:
        self.url = url
        self.queue = queue
        self.folder = folder
        self.env = child_env(SOAK_EFFECTS=str(effects), PYTHONPATH=str(folder))
        self.live: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        cmd = [sys.executable, "-m", "openheim", "worker", "--queue", self.url]
        cmd += ["--queue-name", self.queue, "--workflows", "soakflows:bchain"]
        cmd += ["--visibility-timeout", str(VISIBILITY), "--stats-every", "0"]
        out = self.folder / f"worker-{self.queue}-{self.started}.log"
        with out.open("wb") as f:
            p = subprocess.Popen(cmd, env=self.env, cwd=self.folder, stdout=f, stderr=f)
        self.live.append(p)
        # Ready once it prints its first stats line (it has loaded the workflows and
        # joined the queue): a kill is then a kill of a working worker, not of an import.
        end = time.monotonic() + 120
        while not out.read_bytes().startswith(b"{"):
            if p.poll() is not None:
                raise RuntimeError(f"worker exited with {p.returncode}: {out.read_text()}")
            if time.monotonic() > end:
                raise RuntimeError("worker did not start within 120 s")
            time.sleep(0.05)
        return p

    def kill(self, p: subprocess.Popen[bytes]) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.live.remove(p)

    def stop(self) -> list[int]:
        """SIGTERM every live worker (they drain); their exit codes."""
        for p in self.live:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.live:
            try:
                codes.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        self.live = []
        return codes


def _executed_by(path: Path, pid: int) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        tag, step, who = line.split()
        if who == str(pid):
            out.add((tag, step))
    return out


async def _committed(handles: dict[str, Any]) -> dict[str, list[str]]:
    """run tag -> the step names its log holds as committed, in order."""
    out = {}
    for tag, h in handles.items():
        try:
            history = await h.history()
        except Exception:
            out[tag] = []
            continue
        out[tag] = [c.node for c in history if c.kind == "step" and c.node]
    return out


class Ledger:
    """Frozen side-effect counts of committed steps, and what the final check found."""

    def __init__(self, effects: Path) -> None:
        self.effects = effects
        self.frozen: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []

    async def freeze(self, handles: dict[str, Any]) -> set[tuple[str, str]]:
        """Freeze the effect counts of every step committed now; the (tag, step)s of the
        runs read (runs whose six steps were all frozen before are not read again)."""
        todo = {t: h for t, h in handles.items() if (t, STEPS[-1]) not in self.frozen}
        committed = await _committed(todo)
        counts = effect_counts(self.effects)
        done = set()
        for tag, steps in committed.items():
            for s in steps:
                done.add((tag, s))
                self.frozen.setdefault((tag, s), counts[(tag, s)])
        return done

    async def check(self, handles: dict[str, Any], timeout: float) -> tuple[int, int, int]:
        """(runs done, lost, duplicated) once every run has had ``timeout`` s to finish."""
        done = lost = dup = 0
        for tag, h in handles.items():
            try:
                res = await h.result(timeout=timeout)
            except Exception as exc:
                lost += 1
                self.problems.append(f"{tag}: {type(exc).__name__}: {exc}"[:160])
                continue
            if res.status != "done" or res.state.log != list(STEPS):
                lost += 1
                self.problems.append(f"{tag}: {res.status} log={res.state.log}")
                continue
            done += 1
        committed = await _committed(handles)
        for tag, steps in committed.items():
            extra = sum(n - 1 for n in Counter(steps).values() if n > 1)
            if extra or (steps and steps != list(STEPS)):
                dup += max(extra, 1)
                self.problems.append(f"{tag}: committed steps {steps}")
        counts = effect_counts(self.effects)
        for key, n in self.frozen.items():
            if counts[key] != n:
                dup += 1
                self.problems.append(
                    f"{key} ran again after it was committed ({n} -> {counts[key]})"
                )
        return done, lost, dup


def _setup(kind: str, folder: Path) -> tuple[PrivateServer, str, Workers, Ledger, Path]:
    """A private ``kind`` server in ``folder`` (started), a fresh queue name on it, the
    worker pool for that queue, its ledger and the folder the side effects go to."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "soakflows.py", folder / "soakflows.py")
    effects = folder / "effects"
    server = PrivateServer(kind, folder)
    server.start()
    queue = f"soak{uuid.uuid4().hex[:8]}"
    return server, queue, Workers(server.url, queue, folder, effects), Ledger(effects), effects


async def _submit(handles: dict[str, Any], prefix: str, n: int, url: str, queue: str) -> None:
    """Submit ``n`` runs of the batch chain tagged ``{prefix}-{i}`` into ``handles``."""
    from soakflows import bchain

    for i in range(n):
        tag = f"{prefix}-{i}"
        handles[tag] = await bchain.submit(
            {"tag": tag}, queue=url, queue_name=queue, namespace=queue
        )


async def worker_kills(
    kind: str, trials: int, work: Path, *, runs_per_trial: int = 4, workers: int = 2
) -> dict[str, Any]:
    """``trials`` SIGKILLs of a random worker at a random moment while runs are in flight."""
    from soakflows import bchain

    server, queue, pool, ledger, effects = _setup(kind, work / f"batch-kill-{kind}")
    rng = random.Random(13)
    handles: dict[str, Any] = {}
    mid_step = 0
    repeated_in_flight = 0
    try:
        for _ in range(workers):
            pool.start()
        for trial in range(trials):
            await _submit(handles, f"b{trial}", runs_per_trial, server.url, queue)
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            victim = rng.choice(pool.live)
            pool.kill(victim)
            pool.start()
            committed = await ledger.freeze(handles)
            in_flight = _executed_by(effects, victim.pid) - committed
            if in_flight:
                mid_step += 1
        done, lost, dup = await ledger.check(handles, timeout=120 + 2 * VISIBILITY)
        counts = effect_counts(effects)
        repeated_in_flight = sum(n - 1 for n in counts.values() if n > 1)
        codes = pool.stop()
    finally:
        for p in list(pool.live):
            pool.kill(p)
        await bchain.aclose()
        server.stop()
    bad = lost + dup
    return {
        "tried": trials,
        "survived": trials if bad == 0 and done == len(handles) else 0,
        "bad": bad,
        "runs": len(handles),
        "done": done,
        "steps": done * len(STEPS),
        "kills_mid_step": mid_step,
        "repeated_in_flight": repeated_in_flight,
        "worker_exit_codes": sorted(set(codes)),
        "problems": ledger.problems,
    }


async def server_restarts(kind: str, trials: int, work: Path, runs: int = 8) -> dict[str, Any]:
    """``trials`` restarts (SIGTERM, 1 s down, start) of the private Redis or NATS server
    while runs are in flight; the workers must ride them out."""
    from soakflows import bchain

    server, queue, pool, ledger, _ = _setup(kind, work / f"batch-restart-{kind}")
    rng = random.Random(29)
    handles: dict[str, Any] = {}
    survived_restarts = 0
    try:
        workers = [pool.start(), pool.start()]
        for trial in range(trials):
            await _submit(handles, f"r{trial}", runs, server.url, queue)
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            server.stop()
            await asyncio.sleep(1.0)
            server.start()
            # (what the store held before the restart is on disk: AOF fsync always / JetStream)
            await ledger.freeze(handles)
            if all(w.poll() is None for w in workers):
                survived_restarts += 1
        done, lost, dup = await ledger.check(handles, timeout=120)
        alive = all(w.poll() is None for w in workers)
        pool.stop()
    finally:
        for p in list(pool.live):
            pool.kill(p)
        await bchain.aclose()
        server.stop()
    bad = lost + dup
    ok = bad == 0 and done == len(handles) and alive
    return {
        "tried": trials,
        "survived": survived_restarts if ok else 0,
        "bad": bad,
        "runs": len(handles),
        "done": done,
        "workers_alive": alive,
        "problems": ledger.problems,
    }


def _row(what: str, r: dict[str, Any], note: str) -> Row:
    if r["problems"]:
        note += f"; {r['problems'][0][:80]}"
    return Row("faults", what, r["tried"], r["survived"], r["bad"], note)


def _guarded(what: str, fn: Any) -> list[Row]:
    try:
        return [fn()]
    except Exception as exc:
        traceback.print_exc()
        return [Row("faults", what, 1, 0, 1, f"harness failed: {type(exc).__name__}: {exc}"[:120])]


def rows(scale: float, work: Path | None = None) -> list[Row]:
    """The batch rows of the soak table: worker SIGKILLs on Redis and on NATS, a Redis
    restart and a NATS restart mid-run. ``scale`` 1.0: 100 + 40 kills, 4 + 4 restarts."""
    work = work or Path(tempfile.mkdtemp(prefix="openheim-soak-batch-"))
    out: list[Row] = []
    for kind, n in (("redis", max(10, round(100 * scale))), ("nats", max(5, round(40 * scale)))):
        what = f"SIGKILL batch workers ({'Redis' if kind == 'redis' else 'NATS'})"

        def kill(kind: str = kind, n: int = n, what: str = what) -> Row:
            r = asyncio.run(worker_kills(kind, n, work))
            note = (
                f"{r['runs']} runs, {r['steps']} steps done; {r['kills_mid_step']} kills "
                f"mid-step; side effects repeated in flight: {r['repeated_in_flight']}"
            )
            if r["worker_exit_codes"] != [0]:
                note += f"; drained workers exited {r['worker_exit_codes']}"
            return _row(what, r, note)

        out += _guarded(what, kill)
    for kind in ("redis", "nats"):
        what = f"{'Redis' if kind == 'redis' else 'NATS'} restart mid-run"

        def restart(kind: str = kind, what: str = what) -> Row:
            r = asyncio.run(server_restarts(kind, max(2, round(4 * scale)), work))
            note = f"{r['runs']} runs, {r['done']} done; workers rode it out: {r['workers_alive']}"
            return _row(what, r, note)

        out += _guarded(what, restart)
    return out


if __name__ == "__main__":
    from soaklib import table

    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
    print(table(rows(scale), f"batch faults (scale {scale:g})"))
