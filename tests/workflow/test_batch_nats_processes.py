"""The batch-mode process tests of test_batch_processes.py, on NATS JetStream, and a NATS restart.

``openheim worker`` processes SIGKILLed mid-step, paused past their claim,
drained by SIGTERM, an approval decided in another process: the same test
functions, with the ``queue`` fixture on nats://. Plus a restart of a private
nats-server mid-run (the shared server is never restarted).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from batchhelpers import NATS_URL, drop_namespace
from test_batch_processes import (
    _close_flows,
    effects,
    restart_mid_run,
    test_a_paused_worker_whose_task_was_taken_over_cannot_commit,
    test_a_worker_killed_mid_step_another_finishes_the_run,
    test_an_approval_decided_in_another_process_requeues_the_run,
    test_sigterm_drains_running_tasks_before_exiting,
    test_sigterm_past_the_drain_deadline_gives_tasks_back,
    workers,
)

from openheim.testing.servers import PrivateServer
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
    try:  # the queue, the runs and their checkpoints all live on this server
        _, stats = await restart_mid_run(server, name, effects)
    finally:
        server.stop()
    assert stats["committed"] >= 6
