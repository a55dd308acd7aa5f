"""A lean NATS connection for the hot path of batch workers: requests, pulls, acks.

nats-py spends most of a busy worker's CPU on its own machinery: a regex
parser over a bytearray it shifts after every frame, a ``Msg`` object and a
header dict (parsed with the ``email`` package) per message, a queue and a
task switch per message delivered to a subscription, a flusher task woken per
publish. :class:`Wire` speaks the same protocol with less: one
:class:`asyncio.Protocol` whose ``data_received`` splits control lines,
slices payloads out of the bytes it was given, resolves a request's future
on the spot and hands other messages to a plain callback; everything written
in one loop tick goes out in one ``write``.

It does what the hot path needs and nothing else: CONNECT (headers and
no-responders on; a user and password or a token from the URL), PING/PONG,
subscriptions with callbacks, requests answered on one wildcard inbox (one
watchdog fails those unanswered for ``timeout`` seconds), publishes. It
never reconnects: a lost connection fails its requests in flight with
:class:`ConnectionError` and the caller makes them again through nats-py
(which reconnects, and speaks TLS, nkeys and the rest);
:class:`~openheim.stores._nats.NatsConnection` opens a new Wire later, or
none for a server or URL it cannot speak to (:class:`WireUnsupported`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["Handler", "Reply", "Wire", "WireUnsupported", "encode_headers", "parse_headers"]

log = logging.getLogger("openheim.nats")

# (raw headers or None, payload) of a request's answer
Reply = tuple["bytes | None", bytes]
# called with (subject, reply subject, raw headers or None, payload) of each message
Handler = Callable[[bytes, bytes, "bytes | None", bytes], None]

_MAX_LINE = 64 * 1024  # a control line longer than this is a broken stream
_RSID = 1  # the subscription of the request inbox
_DEFER = 4  # loop turns a write may wait for more to write with it


class WireUnsupported(Exception):
    """The URL or the server needs what :class:`Wire` does not do (TLS, nkeys, several
    servers...): use nats-py alone."""


class ProtocolError(ConnectionError):
    """The server sent what is not the NATS protocol, or an -ERR."""


def encode_headers(headers: dict[str, str]) -> bytes:
    """The header block of an HPUB (values must not contain CR or LF)."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
    return ("NATS/1.0\r\n" + "".join(lines) + "\r\n").encode()


def parse_headers(raw: bytes | None) -> dict[str, str]:
    """A header block as a dict; an inline status (``NATS/1.0 404 No Messages``) is
    ``Status`` (and ``Description``), as nats-py gives it."""
    if not raw:
        return {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    out: dict[str, str] = {}
    first = lines[0]
    if len(first) > 9:  # "NATS/1.0 503" / "NATS/1.0 404 No Messages"
        status, _, desc = first[9:].strip().partition(" ")
        if status.isdigit():
            out["Status"] = status
            if desc:
                out["Description"] = desc
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


class Wire(asyncio.Protocol):
    """One NATS connection with a lean parser (see the module docstring); open with
    :meth:`open`."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.info: dict[str, Any] = {}
        self.max_payload = 1024 * 1024
        self.closed = False
        self.refused = False  # the server refused this client something: not worth again
        # Done when the connection is gone (its result: why, or None after close()).
        self.lost: asyncio.Future[BaseException | None] = self.loop.create_future()
        self._info: asyncio.Future[None] = self.loop.create_future()
        self._pongs: list[asyncio.Future[None]] = []
        self._buf = b""  # an incomplete control line
        self._parts: list[bytes] = []  # an incomplete message, in the chunks received
        self._have = 0
        self._want = 0  # bytes of that message (0: none pending)
        self._out: list[bytes] = []
        self._flushing = False
        self._deferred = 0
        self.writes = 0  # system calls written with (counted for benchmarks)
        self._ready: Any = getattr(self.loop, "_ready", None)  # (asyncio's run queue)
        self._subs: dict[int, Handler] = {}
        self._sid = _RSID
        self._prefix = f"_INBOX.{os.urandom(11).hex()}.".encode()
        self._plen = len(self._prefix)
        self._waiting: dict[bytes, tuple[asyncio.Future[Reply], float]] = {}
        self._n = 0
        self._watch: asyncio.TimerHandle | None = None

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, timeout: float = 5.0, connect_timeout: float = 2.0) -> Wire:
        """A connection to the first server of ``url``; :class:`WireUnsupported` if it
        needs TLS, nkeys or JWTs, ``OSError``/``ConnectionError`` if it cannot be reached."""
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "") or "," in parts.netloc:
            raise WireUnsupported(f"{parts.scheme}:// or several servers")
        wire = cls(timeout)
        try:
            await asyncio.wait_for(wire._connect(parts), connect_timeout)
        except BaseException as exc:
            wire.close()
            if wire.refused:
                raise WireUnsupported(f"the server refused it: {exc}") from exc
            raise
        return wire

    async def _connect(self, parts: Any) -> None:
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 4222
        await self.loop.create_connection(lambda: self, host, port)
        await self._info
        info = self.info
        if info.get("tls_required") or info.get("nonce") or not info.get("headers"):
            raise WireUnsupported("the server wants TLS or nkeys, or has no headers")
        connect: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "lang": "python",
            "version": "openheim-wire",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
            "name": "openheim",
        }
        if parts.username and parts.password is not None:
            connect["user"] = unquote(parts.username)
            connect["pass"] = unquote(parts.password)
        elif parts.username:
            connect["auth_token"] = unquote(parts.username)
        elif info.get("auth_required"):
            raise WireUnsupported("the server wants credentials the URL does not carry")
        self.max_payload = int(info.get("max_payload") or self.max_payload)
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        self._send(b"SUB " + self._prefix + b"* %d\r\n" % _RSID)
        await self.ping()

    async def ping(self) -> None:
        """A round trip to the server (what was sent before it has been processed)."""
        if self.closed:
            raise ConnectionError("the NATS connection is closed")
        fut: asyncio.Future[None] = self.loop.create_future()
        self._pongs.append(fut)
        self._send(b"PING\r\n")
        await asyncio.shield(fut)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone(exc or ConnectionError("the server closed the NATS connection"))

    def data_received(self, data: bytes) -> None:
        if self._want:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._want:
                return
            data = b"".join(self._parts)
            self._parts = []
            self._want = self._have = 0
        elif self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            pos = self._parse(data)
        except Exception as exc:
            log.warning("nats wire: %s; closing the connection", exc)
            self._gone(exc if isinstance(exc, ConnectionError) else ProtocolError(str(exc)))
            return
        if pos < len(data):
            rest = data[pos:]
            if self._want:
                self._parts = [rest]
                self._have = len(rest)
            else:
                self._buf = rest

    # -- the protocol ------------------------------------------------------------------

    def _parse(self, data: bytes) -> int:
        """Handle every whole frame of ``data``; where the unhandled rest starts (and
        ``_want`` = its length once whole, if it is a message of known size)."""
        pos = 0
        n = len(data)
        find = data.find
        while pos < n:
            eol = find(b"\r\n", pos)
            if eol < 0:
                if n - pos > _MAX_LINE:
                    raise ProtocolError("a control line without an end")
                return pos
            c = data[pos]
            if c == 77 or c == 72:  # M(SG) / H(MSG)
                args = data[pos:eol].split()
                op = args[0]
                if op == b"MSG":
                    hsize = 0
                    if len(args) == 5:
                        reply = args[3]
                        size = int(args[4])
                    else:
                        reply = b""
                        size = int(args[3])
                elif op == b"HMSG":
                    if len(args) == 6:
                        reply = args[3]
                        hsize = int(args[4])
                        size = int(args[5])
                    else:
                        reply = b""
                        hsize = int(args[3])
                        size = int(args[4])
                else:
                    raise ProtocolError(f"unknown operation {op[:20]!r}")
                start = eol + 2
                end = start + size
                if end + 2 > n:
                    self._want = end + 2 - pos
                    return pos
                sid = int(args[2])
                subject = args[1]
                if hsize:
                    hdr: bytes | None = data[start : start + hsize]
                    payload = data[start + hsize : end]
                else:
                    hdr = None
                    payload = data[start:end]
                pos = end + 2
                if sid == _RSID:
                    got = self._waiting.pop(subject[self._plen :], None)
                    if got is not None and not got[0].done():
                        got[0].set_result((hdr, payload))
                    continue
                cb = self._subs.get(sid)
                if cb is not None:
                    try:
                        cb(subject, reply, hdr, payload)
                    except Exception:
                        log.exception("nats wire: a subscription callback failed")
                continue
            line = data[pos:eol]
            pos = eol + 2
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line == b"PONG":
                if self._pongs:
                    fut = self._pongs.pop(0)
                    if not fut.done():
                        fut.set_result(None)
            elif line.startswith(b"+OK"):
                pass
            elif line.startswith(b"INFO"):
                self.info = json.loads(line[4:])
                if not self._info.done():
                    self._info.set_result(None)
            elif line.startswith(b"-ERR"):
                why = line[4:].strip().strip(b"'").decode("utf-8", "replace")
                if "violation" in why.lower():  # authorization, permissions
                    self.refused = True
                raise ProtocolError(f"the NATS server said: {why}")
            else:
                raise ProtocolError(f"unknown operation {line[:20]!r}")
        return pos

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        # A write is a system call that costs as much as handling a few messages (on
        # loopback it runs the server's side of TCP too): while other callbacks are
        # ready to run (the tasks just woken by answers, about to write more), wait
        # for them, a few turns at most.
        ready = self._ready
        if ready and self._deferred < _DEFER and len(self._out) < 512:
            self._deferred += 1
            self.loop.call_soon(self._flush)
            return
        self._deferred = 0
        self._flushing = False
        out, self._out = self._out, []
        t = self.transport
        if out and t is not None and not self.closed:
            self.writes += 1
            t.write(b"".join(out))

    def _gone(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        out, self._out = self._out, []
        if exc is None and out and self.transport is not None:
            self.transport.write(b"".join(out))  # a close sends what was written before it
        why = exc if exc is not None else ConnectionError("the NATS connection was closed")
        if not self.lost.done():
            self.lost.set_result(exc)
        for fut in [self._info, *self._pongs]:
            if not fut.done():
                fut.set_exception(why)
                fut.exception()  # (retrieved: nobody may be waiting for it)
        self._pongs = []
        waiting, self._waiting = self._waiting, {}
        for rfut, _ in waiting.values():
            if not rfut.done():
                rfut.set_exception(ConnectionError(f"the NATS connection was lost: {why}"))
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Close the connection; requests in flight fail with ConnectionError."""
        self._gone(None)

    # -- what callers use --------------------------------------------------------------

    def subscribe(self, subject: str, cb: Handler) -> int:
        self._check()
        self._sid += 1
        self._subs[self._sid] = cb
        self._send(b"SUB %s %d\r\n" % (subject.encode(), self._sid))
        return self._sid

    def unsubscribe(self, sid: int) -> None:
        if self._subs.pop(sid, None) is not None and not self.closed:
            self._send(b"UNSUB %d\r\n" % sid)

    def publish(
        self, subject: str | bytes, payload: bytes, headers: bytes | None = None, reply: bytes = b""
    ) -> None:
        """Publish without waiting (written with whatever else this loop tick sends)."""
        self._check()
        subj = subject.encode() if isinstance(subject, str) else subject
        size = len(payload)
        if headers is None:
            if size > self.max_payload:
                raise ValueError(f"a message of {size} bytes is over the server's max_payload")
            line = (
                b"PUB %s %s %d\r\n" % (subj, reply, size)
                if reply
                else b"PUB %s %d\r\n"
                % (
                    subj,
                    size,
                )
            )
            self._send(line + payload + b"\r\n")
            return
        h = len(headers)
        if size + h > self.max_payload:
            raise ValueError(f"a message of {size} bytes is over the server's max_payload")
        if reply:
            line = b"HPUB %s %s %d %d\r\n" % (subj, reply, h, h + size)
        else:
            line = b"HPUB %s %d %d\r\n" % (subj, h, h + size)
        self._send(line + headers + payload + b"\r\n")

    def request(
        self, subject: str | bytes, payload: bytes, headers: bytes | None = None
    ) -> asyncio.Future[Reply]:
        """Publish with a reply subject on this connection's inbox; the future gets the
        answer's (raw headers, payload), or TimeoutError after ``timeout`` seconds, or
        ConnectionError if the connection is lost first."""
        self._check()
        self._n += 1
        token = b"%x" % self._n
        fut: asyncio.Future[Reply] = self.loop.create_future()
        self.publish(subject, payload, headers, self._prefix + token)
        self._waiting[token] = (fut, time.monotonic())
        if self._watch is None:
            self._watch = self.loop.call_later(1.0, self._watchdog)
        return fut

    def _check(self) -> None:
        if self.closed:
            raise ConnectionError("the NATS connection is closed")

    def _watchdog(self) -> None:
        self._watch = None
        if not self._waiting:
            return
        old = time.monotonic() - self.timeout
        late = [k for k, (fut, at) in self._waiting.items() if at < old or fut.done()]
        for k in late:
            fut, _ = self._waiting.pop(k)
            if not fut.done():
                fut.set_exception(TimeoutError("no answer from NATS"))
        if self._waiting and not self.closed:
            self._watch = self.loop.call_later(1.0, self._watchdog)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)
