"""Run event logs on every backend: sequential ids, reading from an id, bounds and expiry."""

from __future__ import annotations

import asyncio
import time

import pytest

from openheim.errors import ConfigError, CorruptStateError
from openheim.stores import Store
from openheim.stores.events import EventLogInfo, RunEventLog


def _ev(i: int) -> bytes:
    return b'{"n":%d}' % i


async def test_ids_are_sequential_across_batches(store: Store) -> None:
    log = RunEventLog(store)
    assert await log.open("r1") == 0
    assert await log.append("r1", [_ev(1)]) == 1
    assert await log.append("r1", [_ev(2), _ev(3), _ev(4)]) == 4
    assert await log.append("r1", []) == 4
    assert await log.append("r1", [_ev(5)]) == 5
    assert await log.read("r1") == [(i, _ev(i)) for i in range(1, 6)]
    assert await log.info("r1") == EventLogInfo(1, 5, False)


async def test_read_from_an_id(store: Store) -> None:
    log = RunEventLog(store)
    await log.open("r")
    await log.append("r", [_ev(1), _ev(2), _ev(3)])
    await log.append("r", [_ev(4), _ev(5)])
    for after in range(0, 7):
        got = await log.read("r", after=after)
        assert got == [(i, _ev(i)) for i in range(after + 1, 6)], after


async def test_another_process_continues_the_ids(store: Store, other: Store) -> None:
    first = RunEventLog(store)
    await first.open("r")
    await first.append("r", [_ev(1), _ev(2)])
    # The first writer died; another process (its own connection) resumes the run.
    second = RunEventLog(other)
    assert await second.open("r") == 2
    assert await second.append("r", [_ev(3)]) == 3
    await second.close("r")
    assert [i for i, _ in await first.read("r")] == [1, 2, 3]
    assert await first.info("r") == EventLogInfo(1, 3, True)


async def test_oldest_events_are_dropped_past_max_events(store: Store) -> None:
    log = RunEventLog(store, max_events=10)
    await log.open("big")
    n = 0
    for size in (3, 1, 4, 1, 5, 9, 2, 6):
        n = await log.append("big", [_ev(n + k + 1) for k in range(size)])
    assert n == 31
    kept = await log.read("big")
    ids = [i for i, _ in kept]
    # The newest max_events events are all there, in order, ending at the last id,
    # and at most one batch more than that is kept.
    assert ids == list(range(ids[0], 32))
    assert 10 <= len(ids) < 10 + 9
    assert all(data == _ev(i) for i, data in kept)
    info = await log.info("big")
    assert info is not None
    assert info.first == ids[0]
    assert info.last == 31
    # A batch larger than the bound keeps its newest events.
    await log.open("huge")
    assert await log.append("huge", [_ev(i) for i in range(1, 26)]) == 25
    assert [i for i, _ in await log.read("huge")] == list(range(16, 26))


async def test_closed_logs_expire_and_open_ones_stay(store: Store) -> None:
    log = RunEventLog(store, retention=0.3)
    for run in ("done", "running"):
        await log.open(run)
        await log.append(run, [_ev(1), _ev(2)])
    await log.close("done")
    assert (await log.info("done")) == EventLogInfo(1, 2, True)

    async def gone() -> bool:
        return await log.info("done") is None

    deadline = time.monotonic() + 30
    while not await gone():
        assert time.monotonic() < deadline, "the closed log never expired"
        await asyncio.sleep(0.05)
    assert await log.read("done") == []
    assert await log.expire() >= 1  # the records go too, not only the key
    assert "events/done" not in await store.list_logs("events/")
    assert await log.read("running", after=1) == [(2, _ev(2))]
    assert await log.runs() == ["running"]


async def test_total_bound_drops_the_oldest_closed_runs(store: Store) -> None:
    log = RunEventLog(store, max_runs=3, retention=3600)
    for i in range(6):
        run = f"r{i}"
        await log.open(run)
        await log.append(run, [_ev(i)])
        await log.close(run)
    await log.open("live")
    await log.append("live", [_ev(0)])
    assert await log.expire() == 3
    assert await log.runs() == ["live", "r3", "r4", "r5"]
    assert sorted(await store.list_logs("events/")) == [
        "events/live",
        "events/r3",
        "events/r4",
        "events/r5",
    ]


async def test_reopening_continues_and_an_expired_run_starts_over(store: Store) -> None:
    log = RunEventLog(store, retention=3600)
    await log.open("paused")
    await log.append("paused", [_ev(1), _ev(2)])
    await log.close("paused")
    assert await log.open("paused") == 2  # resumed after an approval: ids continue
    assert await log.append("paused", [_ev(3)]) == 3
    assert (await log.info("paused")) == EventLogInfo(1, 3, False)
    await log.delete("paused")
    assert await log.info("paused") is None
    assert await log.open("paused") == 0


async def test_misuse_is_reported(store: Store) -> None:
    log = RunEventLog(store)
    with pytest.raises(ConfigError, match="open"):
        await log.append("never-opened", [b"x"])
    with pytest.raises(ConfigError, match="max_events"):
        RunEventLog(store, max_events=0)
    with pytest.raises(ConfigError, match="retention"):
        RunEventLog(store, retention=0)
    with pytest.raises(ConfigError, match="run id"):
        await log.open("")
    await store.put("events/bad", b"\x00")
    with pytest.raises(CorruptStateError, match="events/bad"):
        await log.read("bad")
    await store.delete("events/bad")
    await log.open("bad")  # a valid description now, but a record that is no batch
    await store.append("events/bad", b"garbage")
    with pytest.raises(CorruptStateError, match="record 1 of the event log 'events/bad'"):
        await log.read("bad")


async def test_runs_of_namespaces_do_not_meet(store: Store) -> None:
    a = RunEventLog(store)
    b = RunEventLog(store.namespace(store.ns + "-other"))
    await a.open("same")
    await a.append("same", [b"tenant a"])
    assert await b.info("same") is None
    assert await b.read("same") == []
    await b.open("same")
    await b.append("same", [b"tenant b"])
    assert await a.read("same") == [(1, b"tenant a")]
    assert await b.read("same") == [(1, b"tenant b")]
