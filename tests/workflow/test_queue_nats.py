"""What only the NATS queue has: its streams and consumer, the MAX_DELIVERIES advisory, names.

The behaviour every queue shares is in test_queue_conformance.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest

from openheim.errors import ConfigError
from openheim.workflow.queues import Delivery, Task, open_queue
from openheim.workflow.queues.nats import DURABLE, NatsQueue

pytestmark = pytest.mark.nats

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def queue() -> AsyncIterator[NatsQueue]:
    q = open_queue(
        NATS_URL, name=f"n-{uuid.uuid4().hex[:10]}", visibility_timeout=1.0, max_deliveries=1
    )
    assert isinstance(q, NatsQueue)
    try:
        yield q
    finally:
        try:
            await q.purge()
        finally:
            await q.aclose()


async def test_streams_and_consumer_as_documented(queue: NatsQueue) -> None:
    await queue.put([Task(workflow="wf", run_id="r", task="0:a")])
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        info = await js.stream_info(queue.stream)
        assert info.config.retention == "workqueue"
        assert info.config.storage == "file"
        assert info.config.duplicate_window == pytest.approx(120.0)
        consumer = await js.consumer_info(queue.stream, DURABLE)
        assert consumer.config.ack_policy == "explicit"
        assert consumer.config.ack_wait == pytest.approx(1.0)
        assert consumer.config.max_deliver == 2  # max_deliveries + the one take() buries
        raw = await js.get_msg(queue.stream, info.state.first_seq)
        assert json.loads(raw.data or b"") == {"workflow": "wf", "run_id": "r", "task": "0:a"}
        assert (raw.headers or {}).get("Nats-Msg-Id") == "r/0:a"
    finally:
        await nc.close()


async def test_the_advisory_buries_what_a_dead_worker_was_burying(queue: NatsQueue) -> None:
    """The last delivery MaxDeliver allows went to a worker that died before moving it."""
    await queue.put([Task(workflow="wf", run_id="r", task="0:poison")])
    # Both deliveries MaxDeliver allows go to a bare client (the live queue sends no
    # pull until then): it gives the first back at once (a worker that released it:
    # no wait for AckWait), then dies holding the last one.
    nc = await nats.connect(NATS_URL)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(DURABLE, queue.stream)
        end = time.monotonic() + 60
        seen: list[int] = []
        while 2 not in seen and time.monotonic() < end:
            with contextlib.suppress(asyncio.TimeoutError):
                for m in await psub.fetch(1, timeout=0.5):
                    seen.append(m.metadata.num_delivered)
                    if m.metadata.num_delivered == 1:
                        await m.nak()
        assert seen, "no delivery in 60 s"
        assert seen[0] == 1, seen
        assert seen[-1] == 2, seen
        # After AckWait the server gives up on it (noticed when a worker pulls next) and
        # says so; the live queue buries it.
        end = time.monotonic() + 60
        while (await queue.stats()).dead_letters == 0 and time.monotonic() < end:
            assert await queue.take("live", 1, timeout=0.3) == []
    finally:
        await nc.close()
    (dead,) = await queue.dead_letters()
    assert dead.task.task == "0:poison"
    assert dead.deliveries == 2
    stats = await queue.stats()
    assert (stats.depth, stats.in_flight) == (0, 0)


async def test_names_and_handles() -> None:
    for bad in ("has.dot", "star*", "", "a b", "sl/ash"):
        with pytest.raises(ConfigError, match="queue name"):
            NatsQueue(NATS_URL, name=bad)
    q = NatsQueue(NATS_URL, name="never-used")
    with pytest.raises(ConfigError, match="not taken from a NATS queue"):
        await q.ack(Delivery(id="1", task=Task(workflow="w", run_id="r", task="t"), handle="x"))
    await q.aclose()


async def test_pulled_but_not_handed_out_goes_back_on_close(queue: NatsQueue) -> None:
    """A queue closed with pulled tasks in its buffer naks them: the next worker needn't wait."""
    await queue.put([Task(workflow="wf", run_id="r", task=f"0:n{i}") for i in range(3)])
    got = await queue.take("c", 1, timeout=1.0)
    assert len(got) == 1
    other = open_queue(NATS_URL, name=queue.name, visibility_timeout=300.0, max_deliveries=1)
    try:
        rest: list[Delivery] = []
        end = time.monotonic() + 30
        while len(rest) < 2 and time.monotonic() < end:
            rest += await other.take("d", 2, timeout=0.5)
        assert sorted(d.task.task for d in rest) == ["0:n1", "0:n2"]
    finally:
        await other.aclose()


async def test_a_submitter_leaves_the_workers_settings_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AckWait is the consumer's, on the server: only a taker sets it, and the last one wins."""
    name = f"n-{uuid.uuid4().hex[:10]}"
    worker = open_queue(NATS_URL, name=name, visibility_timeout=2.0, max_deliveries=3)
    submitter = open_queue(NATS_URL, name=name)  # the defaults: 30 s, 5
    other = open_queue(NATS_URL, name=name, visibility_timeout=7.0, max_deliveries=3)
    assert isinstance(worker, NatsQueue)
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        await submitter.put([Task(workflow="wf", run_id="r", task="0:a")])  # made with defaults
        assert (await js.consumer_info(worker.stream, DURABLE)).config.ack_wait == 30.0
        assert len(await worker.take("w", 1, timeout=1.0)) == 1  # the worker's settings now
        assert (await js.consumer_info(worker.stream, DURABLE)).config.ack_wait == 2.0
        await submitter.put([Task(workflow="wf", run_id="r", task="0:b")])
        await submitter.stats()
        assert (await js.consumer_info(worker.stream, DURABLE)).config.ack_wait == 2.0
        assert not [r for r in caplog.records if "disagree" in r.message]
        await other.take("o", 1, timeout=1.0)  # a worker with other settings: it wins, loudly
        info = await js.consumer_info(worker.stream, DURABLE)
        assert (info.config.ack_wait, info.config.max_deliver) == (7.0, 4)
        assert [r for r in caplog.records if "disagree" in r.message]
    finally:
        await nc.close()
        await worker.purge()
        for q in (worker, submitter, other):
            await q.aclose()


async def test_streams_lost_under_a_running_queue_are_made_again(queue: NatsQueue) -> None:
    await queue.put([Task(workflow="wf", run_id="r", task="0:a")])
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        await js.delete_stream(queue.stream)
        await js.delete_stream(queue.dead_stream)
    finally:
        await nc.close()
    assert await queue.take("c", 1, timeout=0.5) == []  # lost with the stream
    assert await queue.put([Task(workflow="wf", run_id="r", task="0:b")]) == 1
    got: list[Delivery] = []
    end = time.monotonic() + 30
    while not got and time.monotonic() < end:
        got = await queue.take("c", 1, timeout=0.5)
    assert [d.task.task for d in got] == ["0:b"]


async def test_a_worker_stopped_while_its_server_is_out_of_reach_stops() -> None:
    """Its take waits on a connection that never comes: stop() gives it up and run()
    returns (before, a SIGTERM left `openheim worker` waiting for the server)."""
    import socket

    import msgspec

    import openheim as oh
    from openheim.workflow import Worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class State(msgspec.Struct):
        n: int = 0

    wf = oh.Workflow("unreached", state=State)

    @wf.step
    def only(state: State) -> dict[str, int]:
        return {"n": 1}

    w = Worker([wf], f"nats://127.0.0.1:{port}", queue_name="unreached")
    try:
        run = asyncio.ensure_future(w.run(drain_timeout=1))
        await asyncio.sleep(1.0)
        assert not run.done()  # still trying to connect
        w.stop()
        stats = await asyncio.wait_for(run, 30)
        assert stats.taken == 0
    finally:
        await w.aclose()
        await wf.aclose()
