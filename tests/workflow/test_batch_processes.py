"""Batch mode across processes: ``openheim worker`` processes killed, paused, drained; a
Redis restart mid-run (a private redis-server); an approval decided in another process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from batchflows import review, sleepy, slow
from batchhelpers import REDIS_URL, drop_namespace, private_redis

from openheim.workflow import Workflow
from openheim.workflow._batch import Batch

pytestmark = pytest.mark.redis

HERE = Path(__file__).parent


class Workers:
    """``openheim worker`` processes on one queue, started and stopped by the test."""

    def __init__(self, url: str, name: str, effects: Path) -> None:
        self.url = url
        self.name = name
        self.effects = effects
        self.procs: list[subprocess.Popen[str]] = []
        self.started: dict[str, Any] = {}  # the last started worker's first line

    def start(
        self, workflows: str, *, sleep: float = 3.0, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[str]:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            OH_BATCH_EFFECTS=str(self.effects),
            OH_BATCH_SLEEP=str(sleep),
        )
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openheim",
                "worker",
                "--queue",
                self.url,
                "--queue-name",
                self.name,
                "--workflows",
                workflows,
                "--visibility-timeout",
                "2",
                "--stats-every",
                "0",
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        first = p.stdout.readline()
        assert first.startswith("{"), first + (p.stderr.read() if p.stderr else "")
        self.started = json.loads(first)
        assert "b-" in self.started["workflows"][0]
        self.procs.append(p)
        return p

    def finish(self, p: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
        """SIGTERM ``p``; its exit status must be 0; returns its final stats line."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return next(x for x in reversed(lines) if "stopped" in x)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture(autouse=True)
async def _close_flows() -> AsyncIterator[None]:
    """The module-level workflows keep their queue connections: close them with the loop."""
    yield
    for wf in (slow, review, sleepy):
        await wf.aclose()


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    folder = tmp_path / "effects"
    folder.mkdir()
    return folder


@pytest.fixture
async def queue(effects: Path) -> AsyncIterator[tuple[str, str]]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield REDIS_URL, name
    b = Batch(REDIS_URL, queue_name=name)
    await b.queue.purge()
    await drop_namespace(b.store, name)
    await b.aclose()


@pytest.fixture
def workers(queue: tuple[str, str], effects: Path) -> Iterator[Workers]:
    w = Workers(queue[0], queue[1], effects)
    try:
        yield w
    finally:
        w.close()


def _wait_for(pred: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _executions(effects: Path) -> list[tuple[str, str]]:
    path = effects / "runs.log"
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def _effect_files(effects: Path) -> list[tuple[str, str]]:
    return sorted(
        (p.name, p.read_text()) for p in effects.iterdir() if p.name.startswith("effect-")
    )


async def _submit(wf: Workflow, queue: tuple[str, str], **kw: Any) -> Any:
    return await wf.submit(
        kw.pop("input", None), queue=queue[0], queue_name=queue[1], namespace=queue[1], **kw
    )


async def test_a_worker_killed_mid_step_another_finishes_the_run(
    queue: tuple[str, str], workers: Workers, effects: Path
) -> None:
    first = workers.start("batchflows:slow")
    h = await _submit(slow, queue)
    await asyncio.to_thread(_wait_for, lambda: len(_executions(effects)) == 1)
    first.kill()  # SIGKILL in the middle of the `effect` step
    first.communicate()
    second = workers.start("batchflows:slow", sleep=0.2)
    res = await h.result(timeout=40)
    assert res.status == "done"
    runs = _executions(effects)
    # The step ran at most twice, with the same idempotency key both times...
    assert len(runs) == 2
    assert runs[0][1] == runs[1][1]
    assert runs[0][1] == f"{h.run_id}/1:effect/1"
    assert {pid for pid, _ in runs} == {str(first.pid), str(second.pid)}
    # ...so the side effect happened once (the second run found its key taken).
    done = _effect_files(effects)
    assert len(done) == 1
    assert done[0][1] == str(first.pid)
    assert res.state.log == ["before", f"effect by {second.pid}", "after"]
    stats = workers.finish(second)
    assert stats["committed"] >= 2
    history = await h.history()
    assert [cp.node for cp in history if cp.kind == "step"] == ["before", "effect", "after"]


async def test_a_paused_worker_whose_task_was_taken_over_cannot_commit(
    queue: tuple[str, str], workers: Workers, effects: Path
) -> None:
    stale = workers.start("batchflows:slow", sleep=4)
    h = await _submit(slow, queue)
    await asyncio.to_thread(_wait_for, lambda: len(_executions(effects)) == 1)
    stale.send_signal(signal.SIGSTOP)  # no heartbeat: its claim runs out
    try:
        fresh = workers.start("batchflows:slow", sleep=0.2)
        res = await h.result(timeout=40)
    finally:
        stale.send_signal(signal.SIGCONT)
    assert res.state.log == ["before", f"effect by {fresh.pid}", "after"]
    # The stale worker wakes up, finishes its step and tries to commit: refused.
    stale_stats = await asyncio.to_thread(_stats_after_refusal, workers, stale)
    assert stale_stats["refused"] == 1
    assert stale_stats["committed"] == 1  # `before` only
    fresh_stats = workers.finish(fresh)
    assert fresh_stats["refused"] == 0
    # One result for the step: a late ack produced no second record.
    history = await h.history()
    assert [cp.node for cp in history if cp.kind == "step"] == ["before", "effect", "after"]
    assert (await h.status()).state.log == res.state.log


def _stats_after_refusal(workers: Workers, p: subprocess.Popen[str]) -> dict[str, Any]:
    time.sleep(5)  # its sleep (4 s) ends, its commit is tried
    return workers.finish(p)


async def test_sigterm_drains_running_tasks_before_exiting(
    queue: tuple[str, str], workers: Workers, effects: Path
) -> None:
    w = workers.start("batchflows:slow", sleep=1.5, extra=("--drain-timeout", "20"))
    handles = [await _submit(slow, queue) for _ in range(3)]
    await asyncio.to_thread(_wait_for, lambda: len(_executions(effects)) == 3)
    t0 = time.monotonic()
    stats = await asyncio.to_thread(workers.finish, w)  # SIGTERM while the steps sleep
    assert time.monotonic() - t0 < 20
    assert stats["released"] == 0
    for h in handles:  # each `effect` step finished and was committed before the exit
        history = await h.history()
        assert "effect" in [cp.node for cp in history]
    # The runs' last steps are still queued: the next worker finishes them.
    w2 = workers.start("batchflows:slow", sleep=0.1)
    for h in handles:
        assert (await h.result(timeout=30)).status == "done"
    assert len(_executions(effects)) == 3  # nothing ran twice
    workers.finish(w2)


async def test_sigterm_past_the_drain_deadline_gives_tasks_back(
    queue: tuple[str, str], workers: Workers, effects: Path
) -> None:
    w = workers.start("batchflows:sleepy", sleep=30, extra=("--drain-timeout", "0.5"))
    handles = [await _submit(sleepy, queue) for _ in range(2)]
    b = Batch(queue[0], queue_name=queue[1])
    try:
        await asyncio.to_thread(_wait_for, lambda: _in_flight(b) == 2)
        t0 = time.monotonic()
        stats = await asyncio.to_thread(workers.finish, w)
        assert time.monotonic() - t0 < 10
        assert stats["released"] == 2
        q = await b.queue.stats()
        assert (q.depth, q.in_flight) == (2, 0)  # back on the queue at once, not lost
    finally:
        await b.aclose()
    w2 = workers.start("batchflows:sleepy", sleep=0.1)
    for h in handles:
        assert (await h.result(timeout=30)).status == "done"
    workers.finish(w2)


def _in_flight(b: Batch) -> int:
    return asyncio.run(_stats_in_new_loop(b.queue.url, b.queue.name))


async def _stats_in_new_loop(url: str, name: str) -> int:
    from openheim.workflow.queues import open_queue

    q = open_queue(url, name=name)
    try:
        return (await q.stats()).in_flight
    finally:
        await q.aclose()


async def test_an_approval_decided_in_another_process_requeues_the_run(
    queue: tuple[str, str], workers: Workers
) -> None:
    w = workers.start("batchflows:review")
    h = await _submit(review, queue)
    res = await h.result(timeout=30)
    assert res.status == "waiting"
    (pending,) = res.pending
    b = Batch(queue[0], queue_name=queue[1])
    try:
        stats = await b.queue.stats()
        assert (stats.depth, stats.in_flight) == (0, 0)  # a waiting run holds no queue entry
    finally:
        await b.aclose()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "openheim",
            "workflow",
            "approve",
            "batchflows:review",
            pending.id,
            "--by",
            "bob",
            "--queue",
            queue[0],
            "--queue-name",
            queue[1],
            "--namespace",
            queue[1],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    done = await h.result(timeout=30)
    assert done.status == "done"
    assert done.state.log == ["drafted", "sent"]
    assert done.state.decision["by"] == "bob"
    workers.finish(w)


async def restart_mid_run(
    server: Any, name: str, effects: Path, store: str | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """Six ``slow`` runs on ``server``'s queue (runs in ``store`` when given) and one
    worker; the server stops for 1 s once two steps ran. Every run must end done, from
    'before' to 'after', and the worker ride the restart out. Returns the handles and the
    worker's final stats."""
    w = Workers(server.url, name, effects)
    try:
        extra = ("--store", store) if store else ()
        kw = {"store": store} if store else {}
        proc = w.start("batchflows:slow", sleep=1.0, extra=extra)
        handles = [
            await slow.submit(None, queue=server.url, queue_name=name, **kw) for _ in range(6)
        ]
        await asyncio.to_thread(_wait_for, lambda: len(_executions(effects)) >= 2)
        server.stop()  # AOF on, fsync always / JetStream: what was acknowledged is on disk
        await asyncio.sleep(1.0)
        server.start()
        for h in handles:
            res = await h.result(timeout=60)
            assert res.status == "done"
            assert res.state.log[0] == "before"
            assert res.state.log[-1] == "after"
        assert proc.poll() is None  # the worker rode the restart out
        return handles, w.finish(proc)
    finally:
        w.close()


async def test_a_redis_restart_mid_run_loses_no_task(tmp_path: Path, effects: Path) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    with private_redis(tmp_path) as server:
        _, stats = await restart_mid_run(server, name, effects)
    assert stats["committed"] >= 6
    assert stats["errors"] == 0  # every claim, commit and settle waited for the server


async def test_a_redis_restart_mid_run_with_the_store_on_its_own_connection(
    tmp_path: Path, effects: Path
) -> None:
    """As above, with the runs in ``--store redis://.../1``: a RedisStore with its own
    client (and the generic backend's store calls: claim, commit, append), restarted with
    the queue. Every run ends done, every checkpoint is recorded once, every side effect
    happened once."""
    name = f"t{uuid.uuid4().hex[:10]}"
    with private_redis(tmp_path) as server:
        store_url = server.url.rsplit("/", 1)[0] + "/1"
        handles, stats = await restart_mid_run(server, name, effects, store=store_url)
        for h in handles:
            res = await h.result(timeout=60)
            assert len(res.state.log) == 3  # no step's updates applied twice
            nodes = [cp.node for cp in await h.history()]
            assert nodes == [None, "before", "effect", "after"], nodes
    assert len(_effect_files(effects)) == 6  # one side effect per run
    assert stats["committed"] >= 18
    assert stats["dead_lettered"] == 0
    assert stats["errors"] == 0  # every store call waited for the server


def _scrape(url: str) -> dict[str, float]:
    """The samples of a Prometheus text page, keyed by name{labels}."""
    import httpx

    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_worker_metrics_port_serves_queue_gauges_and_step_counts(
    queue: tuple[str, str], workers: Workers, effects: Path
) -> None:
    w = workers.start(
        "batchflows:slow", sleep=0.05, extra=("--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    )
    url = workers.started["metrics"]
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/metrics")
    handles = [await _submit(slow, queue) for _ in range(2)]
    for h in handles:
        assert (await h.result(timeout=30)).status == "done"
    name = queue[1]
    depth = f'openheim_queue_depth{{queue="{name}"}}'

    def gauges_seen() -> bool:
        got = _scrape(url)
        steps = sum(v for k, v in got.items() if k.startswith("openheim_workflow_steps_total"))
        return depth in got and steps >= 2 * len(slow.nodes)

    await asyncio.to_thread(_wait_for, gauges_seen, 30.0)
    got = _scrape(url)
    assert got[depth] >= 0
    assert f'openheim_queue_dead_letters{{queue="{name}"}}' in got
    workers.finish(w)  # SIGTERM: exits 0 and closes its metrics endpoint
