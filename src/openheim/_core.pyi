"""Type stubs for the compiled core ``openheim._core`` (built from src/_core)."""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from types import GenericAlias, TracebackType
from typing import Any, Final, Generic, TypedDict, TypeVar, final, overload, type_check_only

from typing_extensions import Buffer, Self, disjoint_base

_T = TypeVar("_T")
_StrPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

@disjoint_base
class Mailbox(Generic[_T]):
    """A bounded multi-producer, multi-consumer queue of Python objects."""

    maxsize: int
    def __init__(self, maxsize: int = 1024) -> None: ...
    def __class_getitem__(cls, item: Any) -> GenericAlias: ...
    def qsize(self) -> int: ...
    def __len__(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def put_nowait(self, item: _T) -> None: ...
    def get_nowait(self) -> _T: ...
    def get_many(self, n: int) -> list[_T]: ...
    def put(self, item: _T) -> Awaitable[None]: ...
    async def get(self) -> _T: ...
    def __aiter__(self) -> AsyncIterator[_T]: ...
    async def __anext__(self) -> _T: ...
    def put_blocking(self, item: _T, timeout: float | None = None) -> None: ...
    def get_blocking(self, timeout: float | None = None) -> _T: ...
    def _blocked_threads(self) -> tuple[int, int]: ...

@disjoint_base
class TokenBuffer:
    """The text of one LLM output stream: a decoder appends tokens, readers read text.

    Emitted text equals ``b"".join(pieces).decode("utf-8", "replace")`` cut
    before the leftmost stop string (ties: the shortest, then the first
    given); nothing that could still be part of a character or of a stop
    string is ever emitted early. Offsets count characters of the emitted
    text. Text read by every open reader is discarded beyond
    ``retain_bytes``; at most ``max_bytes`` of text are kept.
    """

    stop: tuple[str, ...]
    max_bytes: int
    retain_bytes: int
    def __init__(
        self,
        *,
        stop: str | Sequence[str] = (),
        max_bytes: int = 16 << 20,
        retain_bytes: int | None = None,
        keep_tokens: bool = True,
    ) -> None: ...
    def append(self, token_id: int, piece: bytes | bytearray | memoryview | str) -> bool:
        """Append one token; False once the stream has ended (stop string or finish)."""
    def append_many(
        self, token_ids: Iterable[int], pieces: Iterable[bytes | bytearray | memoryview | str]
    ) -> bool:
        """Append several tokens under one lock; False once the stream has ended."""
    def finish(self, reason: str = "stop") -> bool:
        """End the stream; False if it had already ended."""
    def fail(self, error: BaseException | str) -> bool:
        """End the stream with an error readers raise after the text; False if already ended."""
    @property
    def finished(self) -> bool: ...
    @property
    def finish_reason(self) -> str | None:
        """None while open; "stop" after a stop string, "error" after fail(), else finish()'s reason."""
    @property
    def stop_matched(self) -> str | None: ...
    @property
    def error(self) -> BaseException | None: ...
    @property
    def n_tokens(self) -> int: ...
    @property
    def n_chars(self) -> int:
        """Characters emitted so far (the offset just past the end)."""
    @property
    def retained_offset(self) -> int:
        """The oldest offset still kept."""
    @property
    def n_readers(self) -> int: ...
    def getvalue(self) -> str:
        """The retained emitted text, from ``retained_offset`` on."""
    def tokens(self) -> list[int]: ...
    def reader(self, offset: int = 0) -> TokenReader:
        """A reader at ``offset`` characters; StreamDiscarded if that text is gone."""

@final
class TokenReader:
    """One reader of a TokenBuffer at its own character offset."""

    @property
    def offset(self) -> int: ...
    @property
    def buffer(self) -> TokenBuffer: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> TokenReader: ...
    def __exit__(self, *exc: object) -> None: ...
    def read_nowait(self) -> str:
        """New text, "" if none yet; raises StreamClosed (or the failure) at the end."""
    def read(self, timeout: float | None = None) -> str:
        """Wait (GIL released) for new text; StreamTimeout, StreamClosed at the end."""
    async def read_async(self) -> str:
        """Wait on the running loop for new text; StreamClosed at the end."""
    def __iter__(self) -> Iterator[str]: ...
    def __next__(self) -> str: ...
    def __aiter__(self) -> AsyncIterator[str]: ...
    async def __anext__(self) -> str: ...

# -- state codec (codec.pxi) -------------------------------------------------------------

FRAME_MAGIC: Final[bytes]
"""The first 4 bytes of every state frame: ``b"OHSF"``."""
FRAME_VERSION: Final[int]
"""The frame format version this build writes (and the newest it reads)."""
FRAME_HEADER_SIZE: Final[int]
"""Bytes of the frame header before the msgpack body (24)."""

def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``value``.

    ``crc32c(b"123456789") == 0xE3069283``; ``crc32c(b, crc32c(a)) == crc32c(a + b)``.
    Uses SSE4.2 / ARMv8 CRC instructions when the CPU has them.
    """

def _crc32c_sw(data: Buffer, value: int = 0) -> int:
    """crc32c() on the portable table path (for tests)."""

def _crc32c_impl() -> str:
    """The implementation crc32c() uses: "sse4.2", "armv8-crc" or "slice-by-8"."""

def encode_frame(obj: object, *, kind: int = 0, flags: int = 0) -> bytes:
    """msgspec-msgpack ``obj`` inside a checksummed, versioned frame.

    ``kind`` (0..2**32-1) says what the frame holds; ``flags`` (0..255) are
    the caller's bits. Raises ConfigError for out-of-range values and
    TypeError for objects msgspec cannot encode.
    """

@overload
def decode_frame(data: Buffer, *, type: None = None) -> Any: ...
@overload
def decode_frame(data: Buffer, *, type: type[_T]) -> _T: ...
@overload
def decode_frame(data: Buffer, *, type: Any) -> Any:
    """Check a frame and decode its body (into ``type`` if given).

    CorruptStateError: bad magic, cut short, trailing bytes, checksum
    mismatch, or a body that is not valid msgpack. IncompatibleStateError:
    an intact frame of a newer format version, or a body that does not match
    ``type`` (written with another schema).
    """

@disjoint_base
class FrameHeader:
    """What a frame's header says (from :func:`frame_header`)."""

    @property
    def version(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def kind(self) -> int: ...
    @property
    def body_length(self) -> int: ...
    @property
    def frame_length(self) -> int: ...

def frame_header(data: Buffer) -> FrameHeader:
    """Check a frame (magic, length, checksum, version) without decoding its body."""

def atomic_write(path: _StrPath, data: Buffer) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, directory fsync.

    Runs with the GIL released; raises StorageError (errno, filename) and
    removes the temporary file on failure.
    """

# -- append-only log (wal.pxi) -------------------------------------------------------------

LOG_VERSION: Final[int]
"""The log file format version this build writes (and the newest it reads)."""
LOG_MAX_RECORD: Final[int]
"""The largest record a log takes, in bytes."""

@disjoint_base
class LogReader:
    """Iterate over a log's records; stops at a torn or damaged tail."""

    @property
    def path(self) -> _StrPath: ...
    def __init__(self, path: _StrPath) -> None: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    @property
    def records(self) -> int:
        """Records read so far."""
    @property
    def valid_length(self) -> int:
        """Bytes verified so far (header and records read)."""
    @property
    def done(self) -> bool:
        """True once the end of the valid log was reached."""
    @property
    def truncated_bytes(self) -> int:
        """Bytes of the dropped tail (0 until iteration has ended)."""
    @property
    def tail_error(self) -> str | None:
        """Why reading stopped before the end of the file, or None."""

def read_log(path: _StrPath) -> list[bytes]:
    """Every valid record of the log at ``path``."""

@disjoint_base
class LogWriter:
    """Append records to a log file; many appends share one fsync."""

    @property
    def path(self) -> _StrPath: ...
    @property
    def sync(self) -> bool: ...
    @property
    def repaired_bytes(self) -> int:
        """Bytes of torn or damaged tail cut off when the log was opened."""
    @property
    def recovered_records(self) -> int:
        """Records found in the log when it was opened."""
    @property
    def tail_error(self) -> str | None:
        """What was wrong with the tail that opening cut off, or None."""
    def __init__(
        self,
        path: _StrPath,
        *,
        sync: bool = True,
        group_window: float = 0.0,
        max_buffer: int = 16 * 1024 * 1024,
        repair: bool = True,
    ) -> None: ...
    @property
    def next_seq(self) -> int:
        """The sequence number the next record gets."""
    @property
    def durable_seq(self) -> int:
        """The highest sequence number known durable, or -1."""
    @property
    def flush_count(self) -> int:
        """Write (+ fsync) batches so far."""
    @property
    def closed(self) -> bool: ...
    def _hold(self, on: bool) -> None: ...
    def append(self, record: Buffer, timeout: float | None = None) -> int:
        """Append and wait (GIL released) until durable; returns the sequence number."""
    def append_nowait(self, record: Buffer) -> int:
        """Buffer a record and return its sequence number at once."""
    def wait_durable(self, seq: int, timeout: float | None = None) -> None: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def append_async(self, record: Buffer) -> int:
        """Append and wait on the running loop until durable."""
    async def wait_durable_async(self, seq: int) -> None: ...
    async def flush_async(self) -> None: ...
    async def aclose(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

# -- the native llama.cpp step loop (lengine.pxi) ------------------------------------------

LLAMA_CPP_PYTHON_VERSION: str
"""The llama-cpp-python version whose llama.cpp C API the loop was checked against."""
LLAMA_CPP_COMMIT: str
"""The llama.cpp commit vendored by that version."""

def llama_api_names() -> tuple[str, ...]:
    """The llama.cpp functions the native loop looks up in libllama."""

def llama_layout(type_name: str, field: str | None = None) -> int:
    """Size of a llama.cpp struct as compiled into the core (or a field's offset); -1 if unknown."""

def argmax(logits: Buffer) -> int:
    """Index of the first largest value (float32): llama.cpp's greedy choice."""

def argmax_split(logits: Buffer, parts: int) -> int:
    """argmax as the in-graph op computes it, the row cut into ``parts`` chunks."""

def top_k(logits: Buffer, k: int) -> list[tuple[int, float]]:
    """The k largest logits (float32) as (token, logit) pairs, best first (ties: lower token)."""

@type_check_only
class LlamaEngineStats(TypedDict):
    """Counters returned by :meth:`LlamaEngine.stats` (times in ns, summed over steps)."""

    steps: int
    max_batch_seqs: int
    prompt_cached: int
    prompt_evaluated: int
    generated: int
    host_ns: int  # step time outside llama_decode (wall clock)
    host_cpu_ns: int  # CPU time outside llama_decode: the loop thread and its sampling threads
    decode_ns: int
    sample_ns: int
    parallel_samples: int  # steps sampled on the thread pool
    graph_sampled: int  # tokens chosen inside llama_decode by the in-graph argmax
    backend_sampling: bool  # the in-graph selection op is attached (CPU backend)
    kv_saved: int  # sequences saved to the session cache
    kv_restored: int  # ... restored from it
    kv_restored_tokens: int  # prompt tokens those restores covered
    kv_bytes: int  # state bytes held
    kv_entries: int
    kv_spilled: int
    kv_disk_restored: int
    kv_disk_bytes: int
    kv_disk_entries: int
    kv_disk_errors: int
    n_active: int
    n_waiting: int

@disjoint_base
class LlamaRequest:
    """One generation submitted to a LlamaEngine (created by LlamaEngine.submit)."""

    @property
    def buffer(self) -> TokenBuffer: ...
    @property
    def owner(self) -> Any: ...
    def cancel(self) -> None:
        """Ask the loop to retire this request before its next step (any thread)."""
    @property
    def done(self) -> bool: ...
    @property
    def finish(self) -> str:
        """ "" while running; then "stop", "length", "cancelled", "error", "context", "closed" or "nomem"."""
    @property
    def status(self) -> int:
        """llama_decode's status when finish is "error"."""
    @property
    def n_cached(self) -> int: ...
    @property
    def n_generated(self) -> int: ...
    @property
    def full_masks(self) -> int:
        """Refusals resolved by masking the whole vocabulary."""
    @property
    def partial_masks(self) -> int:
        """Refusals resolved among the best 64 candidates."""
    @property
    def grammar_checks(self) -> int: ...

@disjoint_base
class LlamaEngine:
    """The decode loop of one llama context, on its own native thread."""

    @property
    def n_vocab(self) -> int: ...
    @property
    def n_seq(self) -> int: ...
    def __init__(
        self,
        lib: int,
        ctx: int,
        vocab: int,
        memory: int,
        n_vocab: int,
        n_ctx: int,
        n_batch: int,
        n_seq: int,
        prefill_chunk: int = 256,
        sample_threads: int = 1,
        kv_cache_bytes: int = 0,
        kv_dir: str | os.PathLike[str] | None = None,
        kv_disk_bytes: int = 0,
        pool_min_work: int = 131072,
        backend_sampling: bool = True,
    ) -> None: ...
    def submit(
        self,
        owner: Any,
        tokens: Sequence[int],
        buffer: TokenBuffer,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_k: int = 0,
        min_p: float = 0.0,
        has_top_p: bool = False,
        ignore_eos: bool = False,
        json_stop: bool = False,
        chain: int = 0,
        grammar: int = 0,
    ) -> LlamaRequest:
        """Queue a generation; the loop appends its tokens to ``buffer``."""
    def pump(self, timeout: float | None = None) -> list[LlamaRequest] | None:
        """Wait for progress; wake readers; the requests that finished (None once stopped)."""
    def stop(self) -> None:
        """Stop the loop thread (running and queued requests finish as "closed")."""
    def stats(self) -> LlamaEngineStats: ...
    def reset_peak(self) -> None:
        """Start max_batch_seqs over from 0."""
    def piece(self, token: int) -> bytes:
        """The bytes the loop appends for ``token``."""
    def whole_utf8(self, token: int) -> bool:
        """True if the token's bytes are whole UTF-8 characters."""

_M = TypeVar("_M")

@type_check_only
class SchedulerStats(TypedDict):
    """Counters returned by :meth:`Scheduler.stats`."""

    actors: int  # live (not stopped) actors
    ready: int  # actors queued to run
    busy: int  # async actors with a running busy-period Task
    timers: int  # pending timers
    mailboxes: int  # mailboxes attached to actors (idle actors have none)
    handled: int  # messages handed to handlers
    errors: int  # handler (and timer callback) failures
    dropped: int  # messages discarded by stop/close, or timed to a stopped actor
    passes: int  # drain passes run
    wakeups: int  # drain callbacks requested from the loop
    threadsafe_wakeups: int  # ... of which from other threads (call_soon_threadsafe)
    tasks: int  # busy-period Tasks started

@disjoint_base
class _Cell:
    """What the scheduler keeps per actor (mailbox, flags, handler); not made directly."""

@disjoint_base
class Actor(_Cell, Generic[_M]):
    """An actor: a handler run on one message at a time, in arrival order.

    Created by :meth:`Scheduler.spawn`; an idle actor owns no asyncio Task and
    no mailbox.
    """

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def scheduler(self) -> Scheduler: ...
    @property
    def maxsize(self) -> int: ...
    @property
    def stopped(self) -> bool: ...
    def qsize(self) -> int: ...
    def send(self, msg: _M) -> None:
        """Queue ``msg`` without waiting (any thread); MailboxFull / ActorStopped."""
    async def put(self, msg: _M) -> None:
        """Queue ``msg``, waiting on the running loop while the mailbox is full."""
    def put_blocking(self, msg: _M, timeout: float | None = None) -> None:
        """Queue ``msg`` from a plain thread, waiting (GIL released) for room."""
    def stop(self) -> None:
        """Close the mailbox, drop queued messages, leave the ready queue."""

class Envelope:
    """Base of a runtime's message wrappers: an :class:`ActorCell` hands them to its
    ``_deliver``, never straight to its handler."""

@disjoint_base
class ActorCell(_Cell):
    """An actor that is its own handler, with the fields a runtime keeps per actor; made
    and registered by :meth:`Scheduler.spawn_cell`. A plain message goes to
    ``_handler(msg, cell)`` in C; a subclass defines ``_deliver(m)`` (other messages),
    ``_deliver_rest(coro, yielded, msg)`` and ``_deliver_failed(msg, exc)``."""

    id: Any
    runtime: Any
    state: Any
    obj: Any
    parent: Any
    _kind: Any
    _handler: Any
    _fut: Any
    _held: Any
    _eager: bool
    _active: bool
    _loading: bool
    _traced: bool
    _skip: int
    @property
    def _stopped(self) -> bool: ...
    @property
    def _maxsize(self) -> int: ...
    def _qsize(self) -> int: ...
    def _send(self, msg: Any) -> None:
        """Queue ``msg`` without waiting (MailboxFull, ActorStopped)."""
    def _put(self, msg: Any) -> Awaitable[None]:
        """Queue ``msg``, waiting on the running loop while the mailbox is full."""
    def _stop(self) -> None:
        """Stop now: queued messages are dropped, nothing else is handled."""
    def _deliver(self, m: Any) -> Any: ...

@disjoint_base
class CellRef:
    """Base of a runtime's reference to an actor; ``send`` is native in the common case,
    else it calls the subclass's ``_send_slow(msg)``."""

    runtime: Any
    id: Any
    _cell: Any
    def __init__(self, runtime: Any, actor_id: Any, cell: Any = None) -> None: ...
    def send(self, msg: Any) -> None:
        """Queue ``msg`` for the actor without waiting (a full mailbox: its overflow policy)."""
    def _send_slow(self, msg: Any) -> None: ...

@final
class Suspended:
    """What :func:`step` returns when the coroutine waits: the value it yielded."""

    @property
    def value(self) -> Any: ...

def step(coro: Any) -> Any:
    """Run ``coro`` up to its first wait without StopIteration: its return value if it
    finished, else a :class:`Suspended` holding what it yielded."""

_C = TypeVar("_C", bound=ActorCell)

@disjoint_base
class Timer:
    """A pending :meth:`Scheduler.send_after` / :meth:`Scheduler.call_later`."""

    @property
    def when(self) -> float: ...
    @property
    def pending(self) -> bool: ...
    def cancel(self) -> bool:
        """Cancel if not yet fired; True if it was pending."""
    def cancelled(self) -> bool: ...

@disjoint_base
class Scheduler:
    """The actor dispatch loop of one asyncio event loop.

    Actors are not Tasks: a send puts the message in the actor's mailbox and
    queues the actor once on a native ready queue; one loop callback (a drain
    pass) runs ready actors, ``max_per_turn`` messages each, and yields to the
    loop after ``batch`` handler calls. Sync handlers run inline in the pass.
    An actor whose handler returns a coroutine gets one Task per busy period,
    which awaits its messages one at a time, in order, and ends when the
    mailbox is empty. Idle actors hold neither a Task nor a mailbox.
    Timers live in a native heap behind a single loop timer; ``clock`` may be
    a virtual clock (then call :meth:`fire_timers` after advancing it).
    Handler errors go to ``on_error(actor, msg, exc)`` (default: logged).
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def closed(self) -> bool: ...
    def __init__(
        self,
        *,
        batch: int = 64,
        max_per_turn: int = 16,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] | None = None,
        on_error: Callable[[Actor[Any] | None, Any, BaseException], object] | None = None,
    ) -> None: ...
    def spawn(
        self,
        handler: Callable[[_M], Awaitable[object] | object],
        *,
        maxsize: int = 1024,
        name: str | None = None,
    ) -> Actor[_M]:
        """Register an actor running ``handler(msg)`` (a function or an ``async def``)."""
    def spawn_cell(
        self,
        cls: type[_C],
        maxsize: int,
        actor_id: Any,
        runtime: Any,
        handler: Any,
        obj: Any = None,
        kind: Any = None,
        state: Any = None,
        parent: Any = None,
        eager: bool = True,
        loading: bool = False,
    ) -> _C:
        """Create and register an actor of ``cls`` (an :class:`ActorCell` subclass)."""
    def send(self, actor: Actor[_M], msg: _M) -> None: ...
    def stop(self, actor: Actor[Any]) -> None: ...
    def time(self) -> float:
        """The scheduler's clock (timer deadlines use it)."""
    def send_after(self, actor: _Cell, delay: float, msg: Any) -> Timer:
        """Send ``msg`` to ``actor`` after ``delay`` seconds."""
    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Call ``callback(*args)`` on the loop after ``delay`` seconds."""
    def fire_timers(self) -> int:
        """Fire the timers that are due on the clock (call after advancing a virtual clock)."""
    async def wait_idle(self) -> None:
        """Wait until no actor has queued messages or a running handler."""
    def close(self) -> None:
        """Stop all actors (dropping queued messages), cancel timers and running handlers."""
    async def aclose(self, timeout: float | None = None) -> None:
        """Let queued messages be handled (up to ``timeout`` s), then close."""
    def stats(self) -> SchedulerStats: ...

def _set_wait_slice(seconds: float) -> float:
    """Set how often blocking waits wake to check for signals; returns the old value."""
