"""Durable state: key/value stores with versions, logs, sessions and checkpoints.

``open_store(url)`` picks a backend by URL:

- ``memory://``: in process memory (lost on exit);
- ``sqlite:///path/state.db`` (:data:`DEFAULT_STORE_URL`,
  ``sqlite:///~/.openheim/state.db``, is the default; ``sqlite://`` alone
  means the same file): the embedded store, WAL mode, fsync on every commit;
- ``redis://host:6379/0``: Redis (needs the ``redis`` extra);
- ``postgresql://user@host/db``: PostgreSQL (needs the ``postgres`` extra);
  openheim creates and migrates its tables;
- ``nats://host:4222``: NATS JetStream's key-value store (needs the ``nats``
  extra); ``?bucket=name`` picks the bucket (default ``openheim``).

``open_history(url, namespace=...)`` gives the :class:`StoreHistory` an
``Agent(history=...)`` (or the CLI and server) keeps sessions in; every
history follows the :class:`HistoryStore` protocol (:class:`InMemoryHistory`
is the in-process one);
:class:`Checkpointer` makes agent runs crash-safe and resumable.
Backends are imported only when a URL asks for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openheim.errors import ConfigError
from openheim.stores._base import LogRecord, Store

if TYPE_CHECKING:
    from openheim.stores.checkpoint import Checkpointer
    from openheim.stores.history import HistoryStore, InMemoryHistory, SessionInfo, StoreHistory

__all__ = [
    "DEFAULT_STORE_URL",
    "Checkpointer",
    "HistoryStore",
    "InMemoryHistory",
    "LogRecord",
    "SessionInfo",
    "Store",
    "StoreHistory",
    "is_transient",
    "open_history",
    "open_store",
]

DEFAULT_STORE_URL = "sqlite:///~/.openheim/state.db"
"""The one default store of openheim (library, CLI, REPL, server): SQLite in the home directory."""

_LAZY = {
    "Checkpointer": "openheim.stores.checkpoint",
    "HistoryStore": "openheim.stores.history",
    "InMemoryHistory": "openheim.stores.history",
    "SessionInfo": "openheim.stores.history",
    "StoreHistory": "openheim.stores.history",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openheim.stores' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def is_transient(exc: BaseException) -> bool:
    """True for an error of a server going away or coming back, from any backend's
    client: worth trying again once the server is back. False for a refused command,
    and for a :class:`~openheim.errors.StorageError` (a store's own retries gave up,
    or the store or queue was closed): trying again would not help."""
    import sys

    from openheim.errors import StorageError

    if isinstance(exc, StorageError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # Only a client that is loaded can have raised; asking it imports nothing heavy.
    if "redis" in sys.modules:
        from openheim.stores.redis import is_transient as redis_transient

        if redis_transient(exc):
            return True
    if "nats" in sys.modules:
        from openheim.stores._nats import is_transient as nats_transient

        if nats_transient(exc):
            return True
    return False


def _missing(extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"this store URL needs the {extra!r} extra ({exc}); install it with "
        f"`pip install 'openheim[{extra}]'`"
    )


def open_store(url: str = DEFAULT_STORE_URL, *, namespace: str = "default") -> Store:
    """The store at ``url`` (see the module docstring), seen from ``namespace``.

    Connections open on first use; ``await store.aclose()`` releases them.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a store URL is a string, got {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from openheim.stores.memory import MemoryStore

        return MemoryStore(url, namespace)
    if scheme == "sqlite":
        from openheim.stores.sqlite import SQLiteStore

        return SQLiteStore(url, namespace)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from openheim.stores.redis import RedisStore
        except ImportError as exc:
            raise _missing("redis", exc) from None
        return RedisStore(url, namespace)
    if scheme in ("postgresql", "postgres"):
        try:
            from openheim.stores.postgres import PostgresStore
        except ImportError as exc:
            raise _missing("postgres", exc) from None
        return PostgresStore(url, namespace)
    if scheme in ("nats", "tls"):
        try:
            from openheim.stores.nats import NatsStore
        except ImportError as exc:
            raise _missing("nats", exc) from None
        return NatsStore(url, namespace)
    raise ConfigError(
        f"unknown store URL {url!r}: use memory://, sqlite:///path/state.db, "
        "redis://host:port/db, postgresql://user@host/db or nats://host:4222"
    )


def open_history(url: str = DEFAULT_STORE_URL, *, namespace: str = "default") -> StoreHistory:
    """A :class:`StoreHistory` on the store at ``url``, for tenant ``namespace``."""
    from openheim.stores.history import StoreHistory

    return StoreHistory(open_store(url), namespace=namespace)
