"""NATS plumbing shared by the ``nats://`` store and queue.

One lazily opened connection per URL (nats-py reconnects by itself, forever),
beside it a lean one for the batch hot path (:mod:`._nats_wire`, opened on
demand, never reconnecting by itself: its callers fall back to nats-py while
it is down), and :func:`retrying`, which repeats a JetStream call that failed only because
the server was restarting (no responders, timeouts, JetStream not ready yet)
until a deadline, then raises :class:`StorageError` saying what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from openheim.errors import ConfigError, StorageError
from openheim.stores._nats_wire import Wire, WireUnsupported

__all__ = [
    "NatsConnection",
    "decode_token",
    "encode_token",
    "is_transient",
    "retrying",
    "scan",
]

log = logging.getLogger("openheim.nats")

T = TypeVar("T")

# How long a call keeps retrying while the server is away (a restart takes seconds).
RETRY_DEADLINE = 60.0

_UNSAFE = re.compile(r"[^A-Za-z0-9/_-]+")
_SAFE = re.compile(r"[A-Za-z0-9/_-]*").fullmatch


def encode_token(text: str) -> str:
    """``text`` as one valid subject token and KV key part (reversible).

    Letters, digits, ``-``, ``_`` and ``/`` stay as they are; every other
    character becomes ``=XX`` per UTF-8 byte, so dots, spaces, ``*``, ``>``
    and non-ASCII text cannot split or widen a subject.
    """
    if _SAFE(text):
        return text  # (the hot path's keys: nothing to escape)
    if text.isascii():
        return text.translate(_ASCII_ESCAPES)
    return _UNSAFE.sub(_escape, text)


_ASCII_ESCAPES = {c: f"={c:02X}" for c in range(128) if not (chr(c).isalnum() or chr(c) in "/_-")}


def _escape(m: re.Match[str]) -> str:
    return "".join(f"={b:02X}" for b in m.group().encode())


def decode_token(token: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "=":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(ch.encode())
            i += 1
    return raw.decode()


def is_transient(exc: BaseException) -> bool:
    """True for errors a server restart causes (worth retrying once it is back)."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code == 503
    return isinstance(
        exc,
        (
            nats.errors.TimeoutError,
            asyncio.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            ConnectionError,
        ),
    )


async def _quiet_error(exc: Exception) -> None:
    log.debug("nats: %s", exc)


async def _quiet(*_: Any) -> None:
    return None


class NatsConnection:
    """One connection to the server at ``url``, opened on first use and shared."""

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError(f"a NATS URL looks like nats://host:4222, got {url!r}")
        self.url = url
        self._pair: tuple[Client, JetStreamContext] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0
        # The lean connection (see wire()): None until opened; off for a server or URL
        # it cannot speak to, or when OPENHEIM_NATS_WIRE=0.
        self._wire: Wire | None = None
        self._wire_off = os.environ.get("OPENHEIM_NATS_WIRE", "1") == "0"
        self._wire_tried = 0.0
        self._wire_opening = False
        self.wire_opened = 0  # lean connections opened (tests and stats read it)

    @property
    def client(self) -> Client | None:
        return self._pair[0] if self._pair is not None else None

    async def jetstream(self) -> JetStreamContext:
        return (await self._open())[1]

    async def connect(self) -> Client:
        return (await self._open())[0]

    async def _open(self) -> tuple[Client, JetStreamContext]:
        pair = self._pair
        if pair is not None:
            return pair
        if self._closed:
            raise StorageError(f"the NATS connection to {self.url} was closed")
        async with self._lock:
            pair = self._pair
            if pair is None:
                deadline = time.monotonic() + RETRY_DEADLINE
                warned = False
                while True:
                    # nats-py's first connect tries a server for ever when reconnects are
                    # unlimited (and a cancel of it can be lost), so it gets 1 reconnect
                    # here (two tries, then NoServersError) and unlimited ones once it is
                    # up; the deadline is this loop's.
                    nc = Client()
                    seen: list[Exception] = []

                    async def on_error(exc: Exception, seen: list[Exception] = seen) -> None:
                        seen[:] = [exc]  # (the last one: what a failed connect reports)
                        await _quiet_error(exc)

                    try:
                        await nc.connect(
                            self.url,
                            allow_reconnect=True,
                            max_reconnect_attempts=1,
                            reconnect_time_wait=0.25,  # type: ignore[arg-type]  # (a float works)
                            connect_timeout=2,
                            error_cb=on_error,
                            disconnected_cb=_quiet,
                            reconnected_cb=self._on_reconnect,
                            name="openheim",
                        )
                        nc.options["max_reconnect_attempts"] = -1
                        break
                    except Exception as exc:  # NoServersError, OSError, timeout, ...
                        with contextlib.suppress(Exception):
                            await nc.close()
                        cause = seen[-1] if seen else exc  # (the last try's own error)
                        reason = str(cause) or type(cause).__name__
                        if time.monotonic() > deadline:
                            raise StorageError(
                                f"cannot connect to NATS at {self.url} ({reason}); is "
                                "nats-server running (with JetStream: `nats-server -js`)?"
                            ) from exc
                        if not warned:
                            warned = True
                            log.warning(
                                "cannot connect to NATS at %s (%s); trying again for %.0f s",
                                self.url,
                                reason,
                                RETRY_DEADLINE,
                            )
                        await asyncio.sleep(0.5)
                pair = self._pair = (nc, nc.jetstream(timeout=5.0))
        return pair

    async def _on_reconnect(self) -> None:
        self.reconnects += 1

    def wire_now(self) -> Wire | None:
        """The lean connection if it is open now (else None: use nats-py)."""
        w = self._wire
        if w is not None and not w.closed:
            return w
        return None

    async def wire(self) -> Wire | None:
        """The lean connection (:class:`~._nats_wire.Wire`) for the hot path, or None:
        use nats-py. A lost one is opened again at most once a second; while that
        fails, or while another caller opens it, this is None."""
        w = self._wire
        if w is not None:
            if not w.closed:
                return w
            if w.refused:
                log.warning("nats: %s refused the lean connection; using nats-py alone", self.url)
                self._wire_off = True
            self._wire = None
        if self._wire_off or self._closed or self._wire_opening:
            return None
        now = time.monotonic()
        if now - self._wire_tried < 1.0:
            return None
        self._wire_tried = now
        self._wire_opening = True
        try:
            self._wire = await Wire.open(self.url)
            self.wire_opened += 1
        except WireUnsupported as exc:
            log.debug("nats: %s: the lean connection is off (%s)", self.url, exc)
            self._wire_off = True
            self._wire = None
        except (OSError, asyncio.TimeoutError) as exc:  # (ConnectionError is an OSError)
            log.debug("nats: %s: no lean connection now (%r)", self.url, exc)
            self._wire = None
        finally:
            self._wire_opening = False
        if self._wire is not None and self.is_closed():  # closed while it opened
            self._wire.close()
            self._wire = None
        return self._wire

    def is_closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()
        pair, self._pair = self._pair, None
        if pair is not None and not pair[0].is_closed:
            await pair[0].close()


async def retrying(
    conn: NatsConnection, call: Callable[[], Awaitable[T]], what: str, *, deadline: float = 0.0
) -> T:
    """``await call()``, again while the server is restarting, for up to RETRY_DEADLINE s."""
    end = time.monotonic() + (deadline or RETRY_DEADLINE)
    delay = 0.05
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or conn._closed:
                raise
            if time.monotonic() > end:
                raise StorageError(
                    f"NATS at {conn.url} did not answer while trying to {what} ({exc!r}); "
                    "is nats-server running with JetStream (-js)?"
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def scan(
    conn: NatsConnection,
    stream: str,
    filter_subject: str,
    *,
    last_per_subject: bool = False,
    headers_only: bool = False,
) -> list[tuple[str, int, dict[str, str], bytes]]:
    """(subject, stream sequence, headers, payload) of every message on ``filter_subject``.

    Or of the last message per subject. One ephemeral pull consumer (no acks,
    in memory) read in batches until the server says nothing is pending.
    """
    nc = await conn.connect()
    js = await conn.jetstream()
    config = api.ConsumerConfig(
        deliver_policy=(
            api.DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else api.DeliverPolicy.ALL
        ),
        ack_policy=api.AckPolicy.NONE,
        filter_subject=filter_subject,
        headers_only=headers_only or None,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    info = await js.add_consumer(stream, config)
    name = info.name
    out: list[tuple[str, int, dict[str, str], bytes]] = []
    try:
        if info.num_pending == 0:
            return out
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            pending: int = info.num_pending or 0
            while pending > 0:
                batch = min(pending, 1024)
                req = json.dumps({"batch": batch, "no_wait": True}).encode()
                await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}", req, reply=inbox)
                for _ in range(batch):
                    msg = await sub.next_msg(timeout=5)
                    hdrs = msg.headers or {}
                    if "Status" in hdrs and not msg.reply:
                        pending = 0  # 404 no messages / 408: nothing more
                        break
                    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                    tokens = msg.reply.split(".")
                    out.append((msg.subject, int(tokens[-4]), hdrs, msg.data or b""))
                    pending = int(tokens[-1])
                    if pending == 0:
                        break
        finally:
            await sub.unsubscribe()
    finally:
        # If this fails the consumer expires by itself after inactive_threshold.
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)
    return out
