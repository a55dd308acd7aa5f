"""``Lease``: one holder at a time for a named resource, taken over when the holder dies.

A lease is the key ``lease/<name>`` of a :class:`~openheim.stores.Store`,
holding who holds it and until when (wall-clock time). Every change is a
compare-and-set on the key's version, so of several processes that try to
take a free (or expired) lease at once exactly one succeeds::

    lease = Lease(store, "run/" + run_id, ttl=30)
    if await lease.acquire():
        async with lease.kept():          # renewed every ttl/3 in the background
            ...                            # work only the holder may do
        # left the block: released

The holder renews before ``ttl`` runs out; a holder that stops renewing (it
crashed, hung, lost its connection) loses the lease when ``ttl`` has passed,
and the next ``acquire`` by anyone takes it over. A holder learns that it lost
the lease when ``renew`` returns False (``kept`` then calls ``on_lost``).

Expiry compares wall clocks, so the hosts sharing a store need clocks within
a small fraction of ``ttl`` of each other (NTP). The key itself is also given
a store TTL of ``3 * ttl``, so leases of holders that died and were never
taken over do not pile up in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import msgspec

from openheim.errors import ConfigError, CorruptStateError, VersionConflictError
from openheim.stores._base import Store, check_key

__all__ = ["Lease", "LeaseInfo", "default_holder"]

logger = logging.getLogger("openheim.stores.lease")

_PREFIX = "lease/"


class LeaseInfo(msgspec.Struct, frozen=True, array_like=True):
    """What a lease key holds: the ``holder`` and the wall-clock time it ``expires``."""

    holder: str
    expires: float


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(LeaseInfo).decode


def default_holder() -> str:
    """A holder id unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class Lease:
    """The lease ``name`` in ``store`` for ``holder`` (see the module docstring).

    ``ttl`` is how long (seconds) the lease lasts after each acquire or renew
    without being renewed. One ``Lease`` object is one holder's handle; it is
    not shared between tasks that could acquire and release independently.
    """

    def __init__(
        self, store: Store, name: str, *, holder: str | None = None, ttl: float = 30.0
    ) -> None:
        check_key(name, "lease name")
        if not ttl > 0:
            raise ConfigError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")
        self.store = store
        self.name = name
        self.key = _PREFIX + name
        self.holder = holder if holder is not None else default_holder()
        self.ttl = float(ttl)
        self._version = 0  # the key's version while we hold it, else 0
        self._expires = 0.0

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"Lease({self.name!r}, holder={self.holder!r}, {state})"

    @property
    def held(self) -> bool:
        """Whether this handle holds the lease (as of its last acquire or renew)."""
        return self._version > 0 and time.time() < self._expires

    async def info(self) -> LeaseInfo | None:
        """The current holder and expiry, or None if nobody holds the lease."""
        found = await self._read()
        if found is None or found[0].expires <= time.time():
            return None
        return found[0]

    async def _read(self) -> tuple[LeaseInfo, int] | None:
        raw = await self.store.get(self.key)
        if raw is None:
            return None
        try:
            return _decode(raw[0]), raw[1]
        except msgspec.DecodeError:
            raise CorruptStateError(
                f"the lease key {self.key!r} (namespace {self.store.ns!r}) does not hold a "
                "lease; delete it or choose another lease name"
            ) from None

    async def _write(self, expect_version: int) -> bool:
        expires = time.time() + self.ttl
        value = _encode(LeaseInfo(self.holder, expires))
        try:
            version = await self.store.put(
                self.key, value, expect_version=expect_version, ttl=3 * self.ttl
            )
        except VersionConflictError:
            self._version = 0
            return False
        self._version = version
        self._expires = expires
        return True

    async def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True if we now hold it."""
        found = await self._read()
        if found is None:
            return await self._write(0)
        current, version = found
        if current.holder != self.holder and current.expires > time.time():
            self._version = 0
            return False
        return await self._write(version)

    async def renew(self) -> bool:
        """Extend our lease by ``ttl``; False if we do not hold it (another holder took it)."""
        if self._version == 0:
            return False
        # Our version still being there means nobody took the lease since our last write.
        return await self._write(self._version)

    async def release(self) -> None:
        """Give the lease up (nothing happens if another holder has taken it meanwhile)."""
        version, self._version = self._version, 0
        if not version:
            return
        try:
            await self.store.delete(self.key, expect_version=version)
        except VersionConflictError:
            # A write of ours whose answer we never saw (a cancelled renewal) moved the
            # version on; the key is still ours if it names us.
            found = await self._read()
            if found is not None and found[0].holder == self.holder:
                with contextlib.suppress(VersionConflictError):
                    await self.store.delete(self.key, expect_version=found[1])

    @contextlib.asynccontextmanager
    async def kept(
        self, *, every: float | None = None, on_lost: Callable[[], object] | None = None
    ) -> AsyncIterator[Lease]:
        """Renew the (held) lease every ``every`` seconds (``ttl / 3``) while inside, release after.

        If a renewal fails, the lease is lost: ``on_lost()`` is called (for
        example to cancel the work the lease protected) and renewals stop.
        A store error during a renewal is logged and retried at the next tick.
        """
        if not self.held:
            raise ConfigError(f"{self!r}: acquire the lease before keeping it")
        interval = every if every is not None else self.ttl / 3

        stop = asyncio.Event()

        async def renewing() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                if stop.is_set():
                    return
                try:
                    kept = await self.renew()
                except Exception as exc:  # a store hiccup: the lease may still be ours
                    logger.warning("renewing %r failed: %r", self, exc)
                    if time.time() < self._expires:
                        continue
                    kept = False
                if not kept:
                    logger.warning("%r was lost (taken over or expired)", self)
                    if on_lost is not None:
                        on_lost()
                    return

        task = asyncio.get_running_loop().create_task(renewing(), name=f"lease {self.name}")
        try:
            yield self
        finally:
            # Let a renewal in flight finish rather than cancel it: a cancelled
            # compare-and-set may still have been applied, leaving us unsure of the version.
            stop.set()
            try:
                await asyncio.shield(task)
            finally:
                await self.release()
