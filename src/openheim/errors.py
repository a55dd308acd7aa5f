"""Every exception openheim raises.

All of them derive from :class:`OpenheimError`, and each says what was wrong and
what to do about it. Where a standard exception means the same thing, the class
also derives from it, so ``except TimeoutError`` or ``except ValueError`` keeps
working::

    OpenheimError
    ├── CoreMissingError (ImportError)        the compiled core is not installed
    ├── ConfigError (ValueError)              bad configuration or arguments
    ├── MailboxError
    │   ├── MailboxClosed                     put on a closed mailbox / get after drain
    │   │   └── ActorStopped                  send to a stopped actor
    │   ├── MailboxFull                       put_nowait with no room
    │   ├── MailboxEmpty                      get_nowait with nothing to read
    │   └── MailboxTimeout (TimeoutError)     a blocking wait ran out of time
    ├── SchedulerError                        a scheduler used the wrong way (wrong thread, ...)
    │   └── SchedulerClosed                   spawn / timer on a closed scheduler or loop
    ├── StateError
    │   ├── CorruptStateError (ValueError)    bytes fail checksum/structure checks
    │   └── IncompatibleStateError (ValueError)  a format version this build cannot read
    ├── StorageError (OSError)                an OS-level write/fsync/rename failed
    └── StreamError
        └── StreamClosed                      reading a closed/finished token stream past its end
"""

from __future__ import annotations

__all__ = [
    "ActorStopped",
    "ConfigError",
    "CoreMissingError",
    "CorruptStateError",
    "IncompatibleStateError",
    "MailboxClosed",
    "MailboxEmpty",
    "MailboxError",
    "MailboxFull",
    "MailboxTimeout",
    "OpenheimError",
    "SchedulerClosed",
    "SchedulerError",
    "StateError",
    "StorageError",
    "StreamClosed",
    "StreamError",
]


class OpenheimError(Exception):
    """Base class of every error openheim raises."""


class CoreMissingError(OpenheimError, ImportError):
    """The compiled core ``openheim._core`` could not be imported."""


class ConfigError(OpenheimError, ValueError):
    """A configuration value or argument is invalid."""


class MailboxError(OpenheimError):
    """Base class of mailbox errors."""


class MailboxClosed(MailboxError):
    """The mailbox is closed: no more puts, and every item has been read."""


class MailboxFull(MailboxError):
    """``put_nowait`` found the mailbox at its ``maxsize``."""


class MailboxEmpty(MailboxError):
    """``get_nowait`` found nothing to read."""


class MailboxTimeout(MailboxError, TimeoutError):
    """A blocking ``put``/``get`` waited for its whole timeout."""


class ActorStopped(MailboxClosed):
    """The actor was stopped (or its scheduler closed): it takes no more messages."""


class SchedulerError(OpenheimError):
    """A scheduler was used in a way it cannot honour, e.g. from the wrong thread."""


class SchedulerClosed(SchedulerError):
    """The scheduler (or its event loop) is closed: no new actors, timers or wake-ups."""


class StateError(OpenheimError):
    """Base class of errors about stored state."""


class CorruptStateError(StateError, ValueError):
    """Stored bytes are damaged: wrong magic, checksum mismatch, or truncated."""


class IncompatibleStateError(StateError, ValueError):
    """Stored bytes are intact but use a format version this build cannot read."""


class StorageError(OpenheimError, OSError):
    """An operating-system call (open, write, fsync, rename) failed."""


class StreamError(OpenheimError):
    """Base class of token-stream errors."""


class StreamClosed(StreamError):
    """The stream is finished and the reader has consumed everything in it."""
