"""Which errors a worker and a run handle wait out (a server going away or coming
back) and which they raise at once: one predicate, ``openheim.stores.is_transient``,
for every backend's client."""

from __future__ import annotations

import asyncio
import uuid

import nats.errors
import nats.js.errors
import pytest
import redis.exceptions
from batchflows import Doc
from batchhelpers import REDIS_URL

from openheim.errors import StorageError
from openheim.stores import is_transient
from openheim.workflow import Worker, Workflow


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        TimeoutError("slow"),
        asyncio.TimeoutError(),
        redis.exceptions.ConnectionError("gone"),
        redis.exceptions.TimeoutError("slow"),
        redis.exceptions.BusyLoadingError("loading"),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(),
    ],
    ids=lambda e: type(e).__module__ + "." + type(e).__name__,
)
def test_errors_of_a_server_going_away_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        StorageError("the Redis connection to redis://x was closed"),
        ValueError("bad"),
        redis.exceptions.ResponseError("WRONGTYPE"),
        nats.js.errors.NotFoundError(),
        KeyError("k"),
    ],
    ids=lambda e: type(e).__module__ + "." + type(e).__name__,
)
def test_refusals_and_given_up_stores_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


async def test_a_worker_whose_queue_was_closed_raises_instead_of_waiting_forever() -> None:
    """A closed queue refuses ``take`` with a StorageError (an OSError): the worker
    raises it at once instead of logging "queue unavailable" and trying again."""
    wf = Workflow("b-closedq", state=Doc)
    wf.step(lambda s: None, name="a")
    w = Worker([wf], REDIS_URL, queue_name=f"t{uuid.uuid4().hex[:10]}")
    try:
        await w.queue.aclose()
        with pytest.raises(StorageError, match="closed"):
            await asyncio.wait_for(w.run(drain_timeout=1), 10)
    finally:
        await w.aclose()
        await wf.aclose()


async def test_a_worker_whose_redis_is_out_of_reach_says_so_once_and_stops_on_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection refused: one warning (again every 30 s, not every retry), and stop()
    ends run() at once (nothing was taken, so nothing is given back)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wf = Workflow("b-unreached", state=Doc)
    wf.step(lambda s: None, name="a")
    w = Worker([wf], f"redis://127.0.0.1:{port}/0", queue_name="unreached")
    try:
        run = asyncio.ensure_future(w.run(drain_timeout=1))
        await asyncio.sleep(2.0)  # (four retries or so)
        assert not run.done()
        w.stop()
        stats = await asyncio.wait_for(run, 30)
        assert stats.taken == 0
        warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1
        assert "retrying" in warnings[0]
    finally:
        await w.aclose()
        await wf.aclose()
