"""What only the NATS store has: KV key encoding, expiry headers, its streams, a server restart.

The conformance suite (test_conformance.py, the ``nats`` param) covers the
Store protocol itself; these tests look at how it sits on JetStream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openheim.errors import ConfigError, StorageError, VersionConflictError
from openheim.stores import open_store
from openheim.stores.nats import NatsStore

pytestmark = pytest.mark.nats

NATS_URL = os.environ.get("OPENHEIM_TEST_NATS_URL", "nats://127.0.0.1:4222")
BUCKET = "ohtest"


@pytest.fixture
async def store() -> AsyncIterator[NatsStore]:
    s = open_store(f"{NATS_URL}?bucket={BUCKET}", namespace=f"n-{uuid.uuid4().hex[:10]}")
    assert isinstance(s, NatsStore)
    try:
        yield s
    finally:
        try:
            for key in await s.list():
                await s.delete(key)
            for log in await s.list_logs():
                await s.delete_log(log)
        finally:
            await s.aclose()


async def test_any_key_is_a_valid_kv_key(store: NatsStore) -> None:
    keys = [
        "a.b.c",
        "with space",
        "star*and>gt",
        "équipe/日本",
        "=3D literally",
        "trailing.",
        ".leading",
        "tab\tnew\nline",
        "x" * 300,
    ]
    for i, key in enumerate(keys):
        assert await store.put(key, str(i).encode()) == 1
    for i, key in enumerate(keys):
        assert await store.get(key) == (str(i).encode(), 1)
    assert await store.list() == sorted(keys)
    assert await store.list("a.") == ["a.b.c"]
    assert await store.list("équipe/") == ["équipe/日本"]
    assert await store.get("a") is None  # "a.b.c" is not a hierarchy of "a"
    for log in ("run.1", "run 2", "run*3"):
        assert await store.append(log, b"r") == 1
    assert await store.list_logs("run") == ["run 2", "run*3", "run.1"]


async def test_keys_are_readable_with_the_kv_api(store: NatsStore) -> None:
    """The bucket is a plain JetStream KV bucket: nats-py (or `nats kv get`) reads it."""
    import nats

    await store.put("session/a b", b"hello")
    nc = await nats.connect(NATS_URL)
    try:
        kv = await nc.jetstream().key_value(BUCKET)
        ns = store.ns  # the test namespace only has safe characters
        entry = await kv.get(f"{ns}.session/a=20b")
        assert entry.value == b"hello"
        # A value written by a plain KV client has no version header: it reads as version 1.
        await kv.put(f"{ns}.foreign", b"from nats kv")
        assert await store.get("foreign") == (b"from nats kv", 1)
        assert await store.put("foreign", b"ours", expect_version=1) == 2
    finally:
        await nc.close()


async def test_expired_keys_read_as_absent_and_are_cleaned_up(store: NatsStore) -> None:
    await store.put("lease", b"held", ttl=0.5)
    await store.put("lease2", b"held", ttl=0.5, expect_version=0)
    await asyncio.sleep(0.8)
    assert await store.get("lease") is None
    with pytest.raises(VersionConflictError) as info:
        await store.put("lease2", b"again", expect_version=1)  # expired: it is absent
    assert info.value.actual == 0
    assert await store.delete("lease") is False
    assert await store.list() == []  # and list() purged both expired messages
    js_info = await _subjects(store)
    assert not any("lease" in subject for subject in js_info)
    # Re-created after expiry: a new key at version 1, with no ttl now.
    assert await store.put("lease", b"mine", expect_version=0) == 1
    await asyncio.sleep(0.6)
    assert await store.get("lease") == (b"mine", 1)


async def test_expired_keys_leave_the_stream(store: NatsStore) -> None:
    """No message stays behind for an expired key: its writer drops it, or sweep() does."""
    await store.put("short", b"x", ttl=0.3)
    await store.put("kept", b"y", ttl=0.3)
    await store.put("kept", b"y2")  # rewritten without ttl before it expired: stays
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if not any("short" in k for k in await _subjects(store)):
            break
        await asyncio.sleep(0.1)
    assert not any("short" in k for k in await _subjects(store))
    assert await store.get("kept") == (b"y2", 2)
    # A writer that is gone cannot drop its keys; sweep() does, for the whole bucket.
    gone = NatsStore(store.url, store.ns)
    await gone.put("orphan", b"z", ttl=0.3)
    await gone.aclose()
    await asyncio.sleep(0.5)
    assert any("orphan" in k for k in await _subjects(store))
    assert await store.sweep() >= 1
    assert not any("orphan" in k for k in await _subjects(store))
    assert await store.list() == ["kept"]


async def _subjects(store: NatsStore) -> dict[str, int]:
    js = await store._s.conn.jetstream()
    info = await js.stream_info(store._s.kv_stream, subjects_filter=store._kv + ">")
    return info.state.subjects or {}


async def test_delete_leaves_no_message_behind(store: NatsStore) -> None:
    await store.put("k", b"v")
    await store.put("k", b"w")
    assert await store.delete("k", expect_version=2) is True
    assert await _subjects(store) == {}
    await store.append("log", b"1")
    await store.trim_log("log", 1)  # a tombstone keeps the number...
    assert await store.append("log", b"2") == 2
    await store.delete_log("log")  # ...delete_log forgets it
    assert await store.list_logs() == []
    assert await store.append("log", b"again") == 1


async def test_two_processes_writing_the_same_key(store: NatsStore) -> None:
    """A second connection (another process) is refused when its cached view is stale."""
    other = NatsStore(store.url, store.ns)
    try:
        assert await store.put("k", b"1") == 1
        assert await other.put("k", b"2") == 2  # blind write: reads, then writes
        assert await store.put("k", b"3") == 3  # store's cache said 1: the server said no
        with pytest.raises(VersionConflictError):
            await other.put("k", b"x", expect_version=2)
        assert await store.append("l", b"a") == 1
        assert await other.append("l", b"b") == 2
        assert await store.append("l", b"c") == 3
        assert [s for s, _ in await other.read_log("l")] == [1, 2, 3]
        assert await other.read_log("l", after=2) == [(3, b"c")]
    finally:
        await other.aclose()


async def test_read_log_from_known_positions(store: NatsStore) -> None:
    """Short reads go record by record from a position this process saw; long ones scan."""
    other = NatsStore(store.url, store.ns)
    try:
        for i in range(1, 6):
            assert await store.append("l", f"r{i}".encode()) == i
        await store.append("noise", b"x")  # other subjects in between
        assert await other.append("l", b"r6") == 6
        assert await other.append("l", b"r7") == 7
        want = [(i, f"r{i}".encode()) for i in range(1, 8)]
        assert await store.read_log("l", after=3) == want[3:]  # from record 3's position
        assert await store.read_log("l", after=0) == want  # from the start
        assert await other.read_log("l", after=5) == want[5:]  # no position known: a scan
        await store.trim_log("l", 4)
        assert await store.read_log("l", after=2) == want[4:]
        assert await other.read_log("l", after=6) == want[6:]
        for i in range(8, 40):
            await other.append("l", f"r{i}".encode())
        got = await store.read_log("l", after=5)  # more than a few: a scan
        assert [n for n, _ in got] == list(range(6, 40))
    finally:
        await other.aclose()


async def test_bad_urls_and_values(store: NatsStore) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        open_store(f"{NATS_URL}?bucket=no.dots")
    with pytest.raises(ConfigError, match="max_payload"):
        await store.put("huge", b"x" * (2 << 20))  # the server's default max_payload is 1 MB


# -- a restart of a private server (the shared one is never restarted) -------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, data: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the private nats-server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_store_survives_a_server_restart(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(port, tmp_path)
    store = open_store(f"nats://127.0.0.1:{port}", namespace="restart")
    try:
        assert await store.put("k", b"v1") == 1
        assert [await store.append("log", b"r") for _ in range(3)] == [1, 2, 3]
        _stop(proc)
        proc = _start(port, tmp_path)
        # The same store object reconnects; data, versions and numbering carry on.
        assert await store.get("k") == (b"v1", 1)
        assert await store.put("k", b"v2", expect_version=1) == 2
        with pytest.raises(VersionConflictError):
            await store.put("k", b"stale", expect_version=1)
        assert await store.append("log", b"r") == 4
        assert [s for s, _ in await store.read_log("log")] == [1, 2, 3, 4]
        assert await store.list() == ["k"]
        assert await store.list_logs() == ["log"]
    finally:
        try:
            await store.aclose()
        finally:
            _stop(proc)


async def test_a_server_out_of_reach_is_a_clear_error_after_the_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from openheim.stores import _nats

    monkeypatch.setattr(_nats, "RETRY_DEADLINE", 1.5)
    conn = _nats.NatsConnection(f"nats://127.0.0.1:{_free_port()}")
    try:
        with pytest.raises(StorageError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:"):
            await asyncio.wait_for(conn.connect(), 30)  # (not for ever: the deadline holds)
    finally:
        await conn.close()
    assert [r for r in caplog.records if "trying again" in r.getMessage()]


async def test_a_server_that_comes_up_while_the_first_connect_waits_is_used(
    tmp_path: Path,
) -> None:
    port = _free_port()
    store = open_store(f"nats://127.0.0.1:{port}", namespace="late")
    pending = asyncio.ensure_future(store.put("k", b"v"))
    await asyncio.sleep(1.0)
    assert not pending.done()
    proc = _start(port, tmp_path)
    try:
        assert await asyncio.wait_for(pending, 60) == 1
        assert await store.get("k") == (b"v", 1)
    finally:
        try:
            await store.aclose()
        finally:
            _stop(proc)


async def test_writes_wait_out_a_restart(tmp_path: Path) -> None:
    """A write issued while the server is down completes once it is back, exactly once."""
    port = _free_port()
    proc = _start(port, tmp_path)
    store = open_store(f"nats://127.0.0.1:{port}", namespace="down")
    try:
        assert await store.append("log", b"before") == 1
        _stop(proc)
        pending = asyncio.ensure_future(store.append("log", b"during"))
        await asyncio.sleep(0.5)
        assert not pending.done()
        proc = _start(port, tmp_path)
        assert await asyncio.wait_for(pending, 60) == 2
        assert await store.read_log("log") == [(1, b"before"), (2, b"during")]
    finally:
        try:
            await store.aclose()
        finally:
            _stop(proc)


async def test_streams_lost_under_a_running_store_are_made_again() -> None:
    """A server that lost its streams (deleted, or restarted without its data): start afresh."""
    import nats

    bucket = f"lost{uuid.uuid4().hex[:8]}"
    store = open_store(f"{NATS_URL}?bucket={bucket}", namespace="x")
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    try:
        assert await store.put("k", b"v") == 1
        assert await store.append("l", b"r") == 1
        await js.delete_stream(f"KV_{bucket}")
        await js.delete_stream(f"OHLOG_{bucket}")
        assert await store.get("k") is None  # gone with the stream; no error, no hang
        assert await store.put("k", b"w", expect_version=0) == 1
        assert await store.append("l", b"again") == 1
        assert (await js.stream_info(f"KV_{bucket}")).state.messages == 1
    finally:
        for stream in (f"KV_{bucket}", f"OHLOG_{bucket}"):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        await nc.close()
        await store.aclose()
