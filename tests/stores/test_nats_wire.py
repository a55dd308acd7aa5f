"""The lean NATS connection of the batch hot path (``stores._nats_wire``).

Its parser on frames split at every byte, a broken stream, header blocks; on
the NATS server on localhost: requests, subscriptions, credentials; and, through
a TCP proxy that cuts the lean connection at a chosen moment, what its callers
do when it is lost mid-request: the fused worker backend makes its commit again
through nats-py (committed once), the queue pulls again (the task comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openheim.stores._nats_wire import Wire, WireUnsupported, encode_headers, parse_headers
from openheim.testing.servers import PrivateServer

NATS_URL = os.environ.get("OPENHEIM_TEST_NATS_URL", "nats://127.0.0.1:4222")

# -- the parser, fed by hand -----------------------------------------------------------


def _stream(prefix: bytes) -> tuple[bytes, list[tuple[bytes, bytes, bytes | None, bytes]]]:
    """A server's side of a conversation, and the messages the subscription sees."""
    hdr = b"NATS/1.0\r\nOh-Seq: 7\r\nK: v\r\n\r\n"
    want = [
        (b"a.b", b"", None, b"hello"),
        (b"a.c", b"reply.x", None, b""),
        (b"a.d", b"$JS.ACK.S.C.1.2.3.4.0", hdr, b"world"),
        (b"a.e", b"", hdr, b"\r\nMSG not.a.frame 2 3\r\n"),  # a payload that looks like frames
    ]
    data = b"".join(
        [
            b'INFO {"server_id":"x","headers":true,"max_payload":1048576}\r\n',
            b"MSG a.b 2 5\r\nhello\r\n",
            b"+OK\r\n",
            b"MSG a.c 2 reply.x 0\r\n\r\n",
            b"PING\r\n",
            b"HMSG a.d 2 $JS.ACK.S.C.1.2.3.4.0 %d %d\r\n%sworld\r\n"
            % (len(hdr), len(hdr) + 5, hdr),
            b"HMSG " + prefix + b"1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",  # no responders
            b"MSG a.skipped 99 3\r\nabc\r\n",  # a subscription gone: dropped
            b"HMSG a.e 2 %d %d\r\n%s\r\nMSG not.a.frame 2 3\r\n\r\n"
            % (len(hdr), len(hdr) + 23, hdr),
            b"PONG\r\n",
        ]
    )
    return data, want


async def _fed(chunks: list[bytes]) -> tuple[Wire, list[Any], asyncio.Future[Any]]:
    w = Wire()
    got: list[Any] = []
    assert w.subscribe("a.>", lambda *m: got.append(m)) == 2
    fut = w.request("some.subject", b"ping")
    for chunk in chunks:
        w.data_received(chunk)
    return w, got, fut


async def test_the_parser_takes_frames_split_anywhere() -> None:
    w0 = Wire()
    data, want = _stream(w0._prefix)
    cuts = [[data]]
    cuts += [[data[:i], data[i:]] for i in range(1, len(data))]  # every split point
    cuts.append([data[i : i + 1] for i in range(len(data))])  # a byte at a time
    rnd = random.Random(7)
    for _ in range(200):
        points = sorted(rnd.sample(range(1, len(data)), 6))
        cuts.append([data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)])
    for chunks in cuts:
        w, got, fut = await _fed(chunks)
        assert got == want
        assert fut.done()
        hdr, payload = fut.result()
        assert parse_headers(hdr) == {"Status": "503"}
        assert payload == b""
        assert not w.closed
        assert b"PONG\r\n" in b"".join(w._out)  # the server's PING was answered
        assert w.info["max_payload"] == 1048576


async def test_a_broken_stream_closes_the_connection_and_fails_its_requests() -> None:
    for bad in (b"BOGUS\r\n", b"MSG a 2 notanumber\r\n", b"-ERR 'Stale Connection'\r\n"):
        w = Wire()
        fut = w.request("x", b"")
        w.data_received(b"MSG a.b 2 1\r\nx\r\n" + bad)
        assert w.closed
        assert w.lost.done()
        with pytest.raises(ConnectionError):
            fut.result()
        with pytest.raises(ConnectionError):
            w.request("x", b"")  # and nothing more is sent on it


async def test_a_request_without_an_answer_times_out() -> None:
    w = Wire(timeout=0.2)
    fut = w.request("x", b"")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fut, 5)
    assert w.in_flight == 0


async def test_header_blocks() -> None:
    block = encode_headers({"Nats-Msg-Id": "a-1", "Oh-Seq": "3"})
    assert block == b"NATS/1.0\r\nNats-Msg-Id: a-1\r\nOh-Seq: 3\r\n\r\n"
    assert parse_headers(block) == {"Nats-Msg-Id": "a-1", "Oh-Seq": "3"}
    assert parse_headers(b"NATS/1.0 404 Message Not Found\r\n\r\n") == {
        "Status": "404",
        "Description": "Message Not Found",
    }
    both = b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 5\r\n\r\n"
    assert parse_headers(both) == {
        "Status": "100",
        "Description": "Idle Heartbeat",
        "Nats-Last-Consumer": "5",
    }
    assert parse_headers(None) == {}


async def test_a_message_over_max_payload_is_refused_before_it_is_sent() -> None:
    w = Wire()
    w.max_payload = 10
    with pytest.raises(ValueError, match="max_payload"):
        w.request("x", b"y" * 11)
    assert w.in_flight == 0
    assert not w._out


def test_subject_tokens_of_ascii_text_escape_as_the_general_rule_does() -> None:
    from openheim.stores._nats import _UNSAFE, _escape, decode_token, encode_token

    rnd = random.Random(3)
    alphabet = [chr(c) for c in range(128)] + list("éü日本€")
    texts = ["wfclaim/r1/3:s3", "a.b*c>d e", "", "é/ü"]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(3000)]
    for text in texts:
        assert encode_token(text) == _UNSAFE.sub(_escape, text)
        assert decode_token(encode_token(text)) == text
    assert encode_token("wfclaim/r1/3:s3") == "wfclaim/r1/3=3As3"


# -- on the server ---------------------------------------------------------------------


@pytest.mark.nats
async def test_requests_and_subscriptions_on_the_server() -> None:
    w = await Wire.open(NATS_URL)
    try:
        subject = f"ohwire.{uuid.uuid4().hex}"
        got: list[Any] = []
        w.subscribe(subject + ".>", lambda *m: got.append(m))
        w.publish(subject + ".one", b"1", encode_headers({"K": "v"}))
        w.publish(subject + ".two", b"2", reply=b"r.x")
        hdr, data = await w.request("$JS.API.INFO", b"")  # JetStream answers
        assert hdr is None
        assert "memory" in json.loads(data)
        hdr, _ = await w.request(f"ohwire.{uuid.uuid4().hex}", b"")  # nobody: 503 at once
        assert parse_headers(hdr)["Status"] == "503"
        await w.ping()
        assert got == [
            (subject.encode() + b".one", b"", b"NATS/1.0\r\nK: v\r\n\r\n", b"1"),
            (subject.encode() + b".two", b"r.x", None, b"2"),
        ]
    finally:
        w.close()
    assert w.closed


@pytest.mark.nats
async def test_credentials_from_the_url(tmp_path: Path) -> None:
    server = PrivateServer("nats", tmp_path)
    server.argv += ["--user", "oh", "--pass", "s3cret"]
    server.start()
    try:
        w = await Wire.open(f"nats://oh:s3cret@127.0.0.1:{server.port}")
        _, data = await w.request("$JS.API.INFO", b"")
        assert "memory" in json.loads(data)
        w.close()
        with pytest.raises(WireUnsupported, match="credentials"):
            await Wire.open(server.url)
        with pytest.raises(WireUnsupported, match="refused"):
            await Wire.open(f"nats://oh:wrong@127.0.0.1:{server.port}")
    finally:
        server.stop()
    with pytest.raises(WireUnsupported):
        await Wire.open("tls://127.0.0.1:4222")


# -- lost mid-request: through a proxy that cuts the lean connection --------------------


class CuttingProxy:
    """Forwards TCP to the NATS server; once armed, cuts the lean connection (its CONNECT
    names ``openheim-wire``) right after forwarding a frame that contains ``cut_on``: the
    server gets the request, its answer never reaches the client."""

    def __init__(self, target: str, cut_on: bytes) -> None:
        self.target_port = int(target.rsplit(":", 1)[1])
        self.cut_on = cut_on
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def down() -> None:
            with contextlib.suppress(Exception):
                while data := await up_r.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        back = asyncio.ensure_future(down())
        wire = False
        try:
            while data := await reader.read(65536):
                wire = wire or b"openheim-wire" in data
                up_w.write(data)
                await up_w.drain()
                if wire and self.armed and self.cut_on in data:
                    self.armed = False
                    self.cuts += 1
                    writer.transport.abort()  # the answer is lost with the client side
                    await asyncio.sleep(0.3)  # the server handles what it got
                    break
        except ConnectionError:
            pass
        finally:
            back.cancel()
            with contextlib.suppress(BaseException):
                await back
            for w in (up_w, writer):
                w.close()
                with contextlib.suppress(BaseException):
                    await w.wait_closed()
            self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


@pytest.fixture
async def proxy() -> AsyncIterator[CuttingProxy]:
    p = CuttingProxy(NATS_URL, b"")
    await p.start()
    try:
        yield p
    finally:
        await p.close()


@pytest.mark.nats
async def test_a_commit_whose_lean_connection_is_cut_is_made_again_once(
    proxy: CuttingProxy,
) -> None:
    from openheim.workflow._backends import _Claim, _Commit
    from openheim.workflow._batch import Batch
    from openheim.workflow._nats_fused import NatsBackend

    name = f"w{uuid.uuid4().hex[:10]}"
    b = Batch(proxy.url, queue_name=name)
    backend = NatsBackend(b)
    try:
        store = b.scoped(name)
        await store.append("wf/r1", b"started")  # streams made, the log has a record
        ((t, committed, records),) = await backend.claim_many(
            [_Claim(name, "r1", "1:a", 1, "me", read=False, first=True)]
        )
        assert (t, committed, records) == (1, None, [])
        assert await backend.s.conn.wire() is not None  # the lean connection is up
        proxy.cut_on = b"ohlog."  # the commit's append reaches the server, no answer
        proxy.armed = True
        ((ok, _, records),) = await backend.commit_many(
            [_Commit(name, "r1", "1:a", t, b"result", 1)]
        )
        assert proxy.cuts == 1
        # Made again through nats-py with the same Nats-Msg-Id: the server's duplicate
        # of the write it had stored, not a conflict; the record is in the log once.
        assert ok
        assert records == [(2, b"result")]
        assert await store.read_log("wf/r1") == [(1, b"started"), (2, b"result")]
        other = NatsBackend(Batch(NATS_URL, queue_name=name))
        try:  # another worker's later delivery reads it, committed, up to its mark
            ((t2, committed, got),) = await other.claim_many([_Claim(name, "r1", "1:a", 1, "b")])
            assert (t2 > 1, committed, got) == (True, None, [(2, b"result")])
        finally:
            await other.aclose()
            await other.batch.aclose()
    finally:
        await backend.aclose()
        s = b.store.namespace(name)
        for key in await s.list():
            await s.delete(key)
        await s.delete_log("wf/r1")
        await b.queue.purge()
        await b.aclose()


@pytest.mark.nats
async def test_a_pull_whose_lean_connection_is_cut_gets_its_task_later(
    proxy: CuttingProxy,
) -> None:
    from openheim.workflow.queues import Task
    from openheim.workflow.queues.nats import NatsQueue

    q = NatsQueue(proxy.url, name=f"w{uuid.uuid4().hex[:10]}", visibility_timeout=1.0)
    try:
        await q.put([Task(workflow="w", run_id="r", task="0:a")])
        proxy.cut_on = b"$JS.API.CONSUMER.MSG.NEXT"
        proxy.armed = True
        got = await q.take("c", 1, timeout=0.5)
        assert proxy.cuts == 1
        end = asyncio.get_running_loop().time() + 20
        while not got and asyncio.get_running_loop().time() < end:
            got = await q.take("c", 1, timeout=0.5)
        assert [d.task.task for d in got] == ["0:a"]
        # Redelivered (once more for each delivery the server sent where nobody reads:
        # the cut connection; on a loaded machine a slow server may take a while to see
        # it gone), and handed out before the dead-letter limit, not buried.
        assert got[0].deliveries <= q.max_deliveries
        assert (await q.stats()).dead_letters == 0
        await q.ack(got[0])
        for _ in range(50):
            if (await q.stats()).in_flight == 0:
                break
            await asyncio.sleep(0.1)
        assert (await q.stats()).in_flight == 0  # the ack counted
    finally:
        await q.purge()
        await q.aclose()
