"""The batch-mode process tests of test_batch_processes.py, on NATS JetStream, and a NATS restart.

``openheim worker`` processes SIGKILLed mid-step, paused past their claim,
drained by SIGTERM, an approval decided in another process: the same test
functions, with the ``queue`` fixture on nats://. Plus a restart of a private
nats-server mid-run (the shared server is never restarted).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from batchflows import slow
from batchhelpers import NATS_URL, drop_namespace
from privservers import PrivateServer
from test_batch_processes import (
    Workers,
    _close_flows,
    _executions,
    _wait_for,
    effects,
    test_a_paused_worker_whose_task_was_taken_over_cannot_commit,
    test_a_worker_killed_mid_step_another_finishes_the_run,
    test_an_approval_decided_in_another_process_requeues_the_run,
    test_sigterm_drains_running_tasks_before_exiting,
    test_sigterm_past_the_drain_deadline_gives_tasks_back,
    workers,
)

from openheim.workflow._batch import Batch

pytestmark = pytest.mark.nats

__all__ = [  # collected here again, with the nats:// queue fixture below
    "_close_flows",
    "effects",
    "test_a_paused_worker_whose_task_was_taken_over_cannot_commit",
    "test_a_worker_killed_mid_step_another_finishes_the_run",
    "test_an_approval_decided_in_another_process_requeues_the_run",
    "test_sigterm_drains_running_tasks_before_exiting",
    "test_sigterm_past_the_drain_deadline_gives_tasks_back",
    "workers",
]


@pytest.fixture
async def queue(effects: Path) -> AsyncIterator[tuple[str, str]]:
    name = f"t{uuid.uuid4().hex[:10]}"
    yield NATS_URL, name
    b = Batch(NATS_URL, queue_name=name)
    await b.queue.purge()
    await drop_namespace(b.store, name)
    await b.aclose()


async def test_a_nats_restart_mid_run_loses_no_task(tmp_path: Path, effects: Path) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    server = PrivateServer("nats", tmp_path)
    server.start()
    try:
        w = Workers(server.url, name, effects)
        try:
            proc = w.start("batchflows:slow", sleep=1.0)
            handles = [await slow.submit(None, queue=server.url, queue_name=name) for _ in range(6)]
            await asyncio.to_thread(_wait_for, lambda: len(_executions(effects)) >= 2)
            server.stop()  # the queue, the runs and their checkpoints all live on this server
            await asyncio.sleep(1.0)
            server.start()
            for h in handles:
                res = await h.result(timeout=60)
                assert res.status == "done"
                assert res.state.log[0] == "before"
                assert res.state.log[-1] == "after"
            assert proc.poll() is None  # the worker rode the restart out
            stats = w.finish(proc)
            assert stats["committed"] >= 6
        finally:
            w.close()
    finally:
        server.stop()
