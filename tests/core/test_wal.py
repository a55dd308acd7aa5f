"""The append-only log: grouped fsyncs, torn-tail recovery, threads and asyncio."""

from __future__ import annotations

import asyncio
import errno
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from openheim._core import LOG_VERSION, LogReader, LogWriter, crc32c, read_log
from openheim.errors import (
    ConfigError,
    CorruptStateError,
    IncompatibleStateError,
    LogClosed,
    LogTimeout,
    StorageError,
)

HEADER = 16  # file header bytes
RECORD_HEADER = 8


def framed(payload: bytes) -> bytes:
    """A record as the documented layout says it is stored."""
    size = struct.pack("<I", len(payload))
    return size + struct.pack("<I", crc32c(size + payload)) + payload


def file_header(version: int = LOG_VERSION) -> bytes:
    head = b"OHWL" + struct.pack("<HHI", version, 0, 0)
    return head + struct.pack("<I", crc32c(head))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "wal.log"


def write_log(path: Path, records: list[bytes]) -> None:
    with LogWriter(path) as w:
        for r in records:
            w.append_nowait(r)


# -- basics ----------------------------------------------------------------------------


def test_append_returns_sequence_numbers_and_reads_back(log: Path) -> None:
    with LogWriter(log) as w:
        assert (w.next_seq, w.durable_seq) == (0, -1)
        assert w.append(b"first") == 0
        assert w.durable_seq == 0
        assert w.append_nowait(b"") == 1
        assert w.append_nowait(bytearray(b"third")) == 2
        w.flush()
        assert w.durable_seq == 2
        assert w.next_seq == 3
    assert read_log(log) == [b"first", b"", b"third"]
    assert log.read_bytes() == file_header() + b"".join(
        framed(r) for r in (b"first", b"", b"third")
    )


def test_reader_reports_a_clean_end(log: Path) -> None:
    write_log(log, [b"a", b"bb"])
    with LogReader(log) as reader:
        assert not reader.done
        assert list(reader) == [b"a", b"bb"]
        assert reader.done
        assert reader.records == 2
        assert reader.valid_length == log.stat().st_size
        assert reader.truncated_bytes == 0
        assert reader.tail_error is None


def test_reopen_continues_the_sequence(log: Path) -> None:
    write_log(log, [b"a", b"b"])
    with LogWriter(str(log)) as w:
        assert (w.recovered_records, w.repaired_bytes, w.tail_error) == (2, 0, None)
        assert w.next_seq == 2
        assert w.durable_seq == 1
        assert w.append(b"c") == 2
    assert read_log(log) == [b"a", b"b", b"c"]


def test_large_records(log: Path) -> None:
    big = [os.urandom(n) for n in (300_000, 1, 2_000_000, 70_000)]
    write_log(log, big)
    assert read_log(log) == big


def test_empty_and_fresh_files(log: Path) -> None:
    log.write_bytes(b"")
    assert read_log(log) == []
    with LogWriter(log) as w:
        assert w.next_seq == 0
    assert log.read_bytes() == file_header()
    assert read_log(log) == []


def test_sync_false_still_reads_back(log: Path) -> None:
    with LogWriter(log, sync=False) as w:
        for i in range(100):
            w.append(b"%d" % i)
    assert read_log(log) == [b"%d" % i for i in range(100)]


def test_group_window(log: Path) -> None:
    with LogWriter(log, group_window=0.002) as w:
        seqs = [w.append_nowait(b"x") for _ in range(50)]
        w.flush()
        assert w.durable_seq == seqs[-1]
    assert len(read_log(log)) == 50


@pytest.mark.parametrize(
    "kwargs", [{"group_window": -1.0}, {"group_window": 11.0}, {"max_buffer": 0}]
)
def test_bad_options(log: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        LogWriter(log, **kwargs)  # type: ignore[arg-type]


def test_closed_writer(log: Path) -> None:
    w = LogWriter(log)
    w.append(b"a")
    w.close()
    w.close()  # idempotent
    assert w.closed
    with pytest.raises(LogClosed, match="closed"):
        w.append(b"b")
    with pytest.raises(LogClosed):
        w.append_nowait(b"b")
    w.wait_durable(0)  # already durable: fine after close
    w.flush()
    assert "closed" in repr(w)


def test_wait_for_a_record_never_appended(log: Path) -> None:
    with LogWriter(log) as w:
        with pytest.raises(ConfigError, match="no record 0"):
            w.wait_durable(0)
        w.append(b"x")
        with pytest.raises(ConfigError, match="no record 5"):
            w.wait_durable(5)
        with pytest.raises(ConfigError):
            w.wait_durable(-1)


def test_records_must_be_bytes_like(log: Path) -> None:
    with LogWriter(log) as w, pytest.raises(TypeError):
        w.append("text")  # type: ignore[arg-type]


def test_second_writer_is_refused(log: Path) -> None:
    with LogWriter(log) as w:
        with pytest.raises(StorageError, match="another LogWriter") as info:
            LogWriter(log)
        assert info.value.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        w.append(b"still fine")
    with LogWriter(log) as again:  # the lock goes with the first writer
        assert again.next_seq == 1


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        LogReader(tmp_path / "absent")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(StorageError) as info:
        LogWriter(tmp_path / "no-dir" / "log")
    assert info.value.errno == errno.ENOENT


# -- grouping ----------------------------------------------------------------------------


def test_held_records_go_out_in_one_batch(log: Path) -> None:
    with LogWriter(log) as w:
        w.append(b"warm-up")
        before = w.flush_count
        w._hold(True)
        seqs = [w.append_nowait(b"r%d" % i) for i in range(200)]
        assert w.durable_seq == 0
        assert w.flush_count == before
        w._hold(False)
        w.flush()
        assert w.flush_count == before + 1  # 200 records, one write + fsync
        assert w.durable_seq == seqs[-1]


def test_timeout_while_not_durable(log: Path) -> None:
    with LogWriter(log) as w:
        w._hold(True)
        with pytest.raises(LogTimeout, match="not durable within"):
            w.append(b"slow", timeout=0.05)
        with pytest.raises(LogTimeout):
            w.flush(timeout=0)
        w._hold(False)
        w.flush()
    assert read_log(log) == [b"slow"]  # the timed-out record was still written


def test_full_buffer_makes_appenders_wait(log: Path) -> None:
    w = LogWriter(log, max_buffer=100)
    w._hold(True)
    w.append_nowait(b"a" * 60)  # an empty buffer takes any record
    done = threading.Event()

    def more() -> None:
        w.append_nowait(b"b" * 60)  # 60 + 60 > 100: waits for room
        done.set()

    t = threading.Thread(target=more)
    t.start()
    assert not done.wait(0.2)  # held, so room can never appear
    w._hold(False)
    t.join()
    w.close()
    assert read_log(log) == [b"a" * 60, b"b" * 60]


def test_many_threads_lose_nothing_and_agree_on_order(log: Path) -> None:
    n_threads, per_thread = 16, 150
    got: dict[int, bytes] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(per_thread):
            rec = b"%d:%d" % (t, i)
            seq = w.append(rec) if i % 2 else w.append_nowait(rec)
            with lock:
                got[seq] = rec

    with LogWriter(log) as w:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        w.flush()
        assert w.flush_count >= 1
    records = read_log(log)
    assert len(records) == n_threads * per_thread
    assert records == [got[i] for i in range(len(records))]  # seq == position in the file
    for t in range(n_threads):  # each thread's records in the order it appended them
        mine = [r for r in records if r.startswith(b"%d:" % t)]
        assert mine == [b"%d:%d" % (t, i) for i in range(per_thread)]


# -- torn tails and corruption --------------------------------------------------------------

RECORDS = [b"alpha", b"", b"gamma" * 20, b"delta-delta"]


def test_truncated_at_every_offset_of_the_last_record(log: Path) -> None:
    write_log(log, RECORDS)
    full = log.read_bytes()
    start_last = len(full) - len(framed(RECORDS[-1]))
    for cut in range(start_last, len(full) + 1):
        log.write_bytes(full[:cut])
        with LogReader(log) as reader:
            got = list(reader)
            if cut == len(full):
                assert got == RECORDS
                assert reader.tail_error is None
                continue
            assert got == RECORDS[:-1]
            assert reader.valid_length == start_last
            assert reader.truncated_bytes == cut - start_last
            assert (reader.tail_error is None) == (cut == start_last)


def test_truncated_anywhere_keeps_a_prefix(log: Path) -> None:
    write_log(log, RECORDS)
    full = log.read_bytes()
    ends = [HEADER]
    for r in RECORDS:
        ends.append(ends[-1] + len(framed(r)))
    for cut in range(len(full) + 1):
        log.write_bytes(full[:cut])
        complete = sum(1 for e in ends[1:] if e <= cut)
        with LogReader(log) as reader:
            assert list(reader) == RECORDS[:complete]
            kept = ends[complete] if cut >= HEADER else 0
            assert reader.valid_length + reader.truncated_bytes == cut
            assert reader.valid_length == kept


def test_writer_truncates_a_torn_tail_then_appends(log: Path) -> None:
    write_log(log, RECORDS)
    full = log.read_bytes()
    log.write_bytes(full[:-3])
    with LogWriter(log) as w:
        assert w.recovered_records == 3
        assert w.repaired_bytes == len(framed(RECORDS[-1])) - 3
        assert w.tail_error is not None
        assert "cut short" in w.tail_error
        assert w.append(b"new") == 3
    assert read_log(log) == [*RECORDS[:-1], b"new"]
    with LogReader(log) as reader:
        list(reader)
        assert reader.truncated_bytes == 0


def test_garbage_after_the_last_record(log: Path) -> None:
    write_log(log, RECORDS)
    size = log.stat().st_size
    for garbage in (b"\x00" * 40, b"\xff" * 3, os.urandom(1000), b"\x05\x00\x00\x00abcdefgh"):
        with open(log, "r+b") as f:
            f.truncate(size)
            f.seek(size)
            f.write(garbage)
        with LogReader(log) as reader:
            assert list(reader) == RECORDS
            assert reader.truncated_bytes == len(garbage)
            assert reader.tail_error is not None


def test_huge_length_is_a_damaged_tail(log: Path) -> None:
    write_log(log, [b"ok"])
    with open(log, "ab") as f:
        f.write(struct.pack("<II", 0xFFFFFFFF, 0) + b"x" * 10)
    with LogReader(log) as reader:
        assert list(reader) == [b"ok"]
        assert reader.tail_error is not None
        assert "claims 4294967295 bytes" in reader.tail_error


def test_corruption_in_the_middle_ends_the_log_there(log: Path) -> None:
    write_log(log, RECORDS)
    data = bytearray(log.read_bytes())
    second = HEADER + len(framed(RECORDS[0]))
    third = second + len(framed(RECORDS[1]))
    data[third + RECORD_HEADER + 4] ^= 0x20  # a byte of the third record's payload
    log.write_bytes(bytes(data))
    with LogReader(log) as reader:
        assert list(reader) == RECORDS[:2]
        assert reader.tail_error == f"the record at offset {third} (100 bytes) fails its checksum"
        assert reader.truncated_bytes == len(data) - third
    with pytest.raises(CorruptStateError, match="repair=True drops those"):
        LogWriter(log, repair=False)
    assert log.read_bytes() == bytes(data)  # refused: untouched
    with LogWriter(log) as w:
        assert w.next_seq == 2
        assert w.repaired_bytes == len(data) - third
        w.append(b"after")
    assert read_log(log) == [*RECORDS[:2], b"after"]


@pytest.mark.parametrize("content", [b"O", b"OHW", b"OHWL\x01\x00", bytes(HEADER)])
def test_torn_file_header(log: Path, content: bytes) -> None:
    log.write_bytes(content)
    with LogReader(log) as reader:
        assert list(reader) == []
        assert reader.truncated_bytes == len(content)
        assert reader.tail_error is not None
    with LogWriter(log) as w:
        assert w.repaired_bytes == len(content)
        w.append(b"x")
    assert read_log(log) == [b"x"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"hello, this is not a log at all", "not an openheim log"),
        (b"PK\x03", "not an openheim log"),
        (file_header()[:-1] + b"\x00" + framed(b"x"), "header is damaged"),
    ],
)
def test_foreign_or_damaged_file_header(log: Path, content: bytes, match: str) -> None:
    log.write_bytes(content)
    with pytest.raises(CorruptStateError, match=match):
        LogReader(log)
    with pytest.raises(CorruptStateError, match=match):
        LogWriter(log)
    assert log.read_bytes() == content  # never "repaired"


def test_newer_log_version_is_incompatible(log: Path) -> None:
    log.write_bytes(file_header(LOG_VERSION + 1) + framed(b"x"))
    with pytest.raises(IncompatibleStateError, match=f"version {LOG_VERSION + 1} not supported"):
        read_log(log)
    with pytest.raises(IncompatibleStateError):
        LogWriter(log)


# -- asyncio --------------------------------------------------------------------------------


async def test_many_concurrent_async_appends(log: Path) -> None:
    async with LogWriter(log) as w:
        seqs = await asyncio.gather(*(w.append_async(b"rec-%d" % i) for i in range(3000)))
        assert sorted(seqs) == list(range(3000))
        assert w.durable_seq == 2999
    records = read_log(log)
    assert [records[s] for s in seqs] == [b"rec-%d" % i for i in range(3000)]


async def test_async_appends_share_one_fsync(log: Path) -> None:
    async with LogWriter(log) as w:
        await w.append_async(b"warm-up")
        before = w.flush_count
        w._hold(True)
        tasks = [asyncio.ensure_future(w.append_async(b"%d" % i)) for i in range(500)]
        await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)
        w._hold(False)
        seqs = await asyncio.gather(*tasks)
        assert seqs == list(range(1, 501))
        assert w.flush_count == before + 1


async def test_cancelled_waiter_keeps_its_record_and_others_proceed(log: Path) -> None:
    async with LogWriter(log) as w:
        w._hold(True)
        first = asyncio.ensure_future(w.append_async(b"cancelled"))
        second = asyncio.ensure_future(w.append_async(b"kept"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        w._hold(False)
        assert await second == 1
        assert first.cancelled()
    assert read_log(log) == [b"cancelled", b"kept"]


async def test_async_wait_and_flush(log: Path) -> None:
    async with LogWriter(log) as w:
        seqs = [w.append_nowait(b"%d" % i) for i in range(10)]
        await w.wait_durable_async(seqs[3])
        await w.flush_async()
        assert w.durable_seq == 9
        with pytest.raises(ConfigError):
            await w.wait_durable_async(10)
    assert w.closed


async def test_async_full_buffer_waits_for_room(log: Path) -> None:
    async with LogWriter(log, max_buffer=64) as w:
        w._hold(True)
        tasks = [asyncio.ensure_future(w.append_async(b"z" * 40)) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks)
        w._hold(False)
        assert sorted(await asyncio.gather(*tasks)) == [0, 1, 2, 3, 4]
    assert read_log(log) == [b"z" * 40] * 5


async def test_close_from_another_thread_settles_async_waiters(log: Path) -> None:
    w = LogWriter(log)
    w._hold(True)
    tasks = [asyncio.ensure_future(w.append_async(b"%d" % i)) for i in range(20)]
    await asyncio.sleep(0)
    closer = threading.Thread(target=w.close)  # close overrides the hold
    closer.start()
    seqs = await asyncio.gather(*tasks)
    closer.join()
    assert sorted(seqs) == list(range(20))
    assert len(read_log(log)) == 20
    with pytest.raises(LogClosed):
        await w.append_async(b"late")


async def test_async_waits_after_close(log: Path) -> None:
    w = LogWriter(log)
    seq = w.append_nowait(b"x")
    w.close()
    await w.wait_durable_async(seq)
    await w.flush_async()
    await w.aclose()
    with pytest.raises(LogClosed):
        await w.append_async(b"y")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_finished_event_loops_do_not_accumulate(log: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with LogWriter(log) as w:
        asyncio.run(w.append_async(b"warm-up"))
        before = open_fds()
        for i in range(20):  # each asyncio.run is a new loop that then closes
            asyncio.run(w.append_async(b"%d" % i))
        assert open_fds() <= before + 2
    assert len(read_log(log)) == 21


def test_several_event_loops_and_threads_share_a_writer(log: Path) -> None:
    per_loop = 300

    async def produce(w: LogWriter, tag: int) -> list[int]:
        return list(
            await asyncio.gather(*(w.append_async(b"%d-%d" % (tag, i)) for i in range(per_loop)))
        )

    results: dict[int, list[int]] = {}

    def run_loop(w: LogWriter, tag: int) -> None:
        results[tag] = asyncio.run(produce(w, tag))

    def run_blocking(w: LogWriter) -> None:
        for i in range(per_loop):
            w.append(b"t-%d" % i)

    with LogWriter(log) as w:
        threads = [threading.Thread(target=run_loop, args=(w, tag)) for tag in range(3)]
        threads.append(threading.Thread(target=run_blocking, args=(w,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = read_log(log)
    assert len(records) == 4 * per_loop
    for tag, seqs in results.items():
        assert [records[s] for s in seqs] == [b"%d-%d" % (tag, i) for i in range(per_loop)]


# -- a failing disk -------------------------------------------------------------------------

FAILING_DISK = """
import asyncio, errno, resource, signal, sys
from openheim._core import LogWriter
from openheim.errors import StorageError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
path = sys.argv[1]
w = LogWriter(path)
first = w.append(b"a" * 100)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
w._hold(True)
seqs = [w.append_nowait(b"b" * 100) for _ in range(20)]  # one batch of 2160 bytes


async def waiter():
    try:
        await w.append_async(b"c")
    except StorageError as exc:
        return exc.errno


async def main():
    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)
    w._hold(False)
    return await task


assert asyncio.run(main()) == errno.EFBIG
for call in (lambda: w.append(b"d"), lambda: w.wait_durable(seqs[0]), w.flush, w.close):
    try:
        call()
    except StorageError as exc:
        assert exc.errno == errno.EFBIG, exc
        assert "could not write to the log" in str(exc), exc
    else:
        raise AssertionError("the failed log accepted a call")
assert w.durable_seq == first
print("ok")
"""


def test_a_failed_write_stops_the_log_for_good(log: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    # The batch was cut off at the size limit: reopening drops the torn part.
    assert log.stat().st_size == 1000
    with LogWriter(log) as w:
        assert w.recovered_records >= 1
        assert w.repaired_bytes > 0
    assert read_log(log)[0] == b"a" * 100
