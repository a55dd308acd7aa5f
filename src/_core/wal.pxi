# Append-only log with grouped fsyncs (C side: wal.c). Uses codec.pxi's
# buffer, path and I/O-error helpers.
import os as _os
from posix.unistd cimport read as _c_read
from cwal cimport *

LOG_VERSION = OH_LOG_VERSION
LOG_MAX_RECORD = OH_LOG_MAX_RECORD


cdef str _log_tail_message(oh_log_tail tail, uint64_t at, uint64_t length,
                           uint64_t size, int version):
    if tail == OH_LOG_TORN_FILE_HEADER:
        return (f"the file is {size} bytes, shorter than the {OH_LOG_FILE_HEADER}-byte log "
                "header (its creation was cut short)")
    if tail == OH_LOG_TORN_HEADER:
        return (f"the record at offset {at} is cut short: {size - at} of its "
                f"{OH_LOG_RECORD_HEADER} header bytes are present")
    if tail == OH_LOG_TORN_RECORD:
        return (f"the record at offset {at} is cut short: it says {length} bytes but only "
                f"{size - at - OH_LOG_RECORD_HEADER} follow its header")
    if tail == OH_LOG_BAD_LENGTH:
        return (f"the record at offset {at} claims {length} bytes, more than the "
                f"{OH_LOG_MAX_RECORD}-byte maximum (its length is damaged)")
    if tail == OH_LOG_BAD_CRC:
        return f"the record at offset {at} ({length} bytes) fails its checksum"
    if tail == OH_LOG_BAD_MAGIC:
        return "it is not an openheim log (its first bytes are not b'OHWL')"
    if tail == OH_LOG_BAD_HEADER_CRC:
        return "its log header is damaged (checksum mismatch)"
    if tail == OH_LOG_BAD_VERSION:
        return (f"log format version {version} not supported (this build reads versions 1 to "
                f"{OH_LOG_VERSION}); it was written by a newer openheim: upgrade to read it")
    return "it ends cleanly"


cdef int _raise_log_header(int rc, oh_log_tail tail, uint64_t size, int version,
                           object path) except -1:
    msg = _log_tail_message(tail, 0, 0, size, version)
    return _raise_status(rc, f"cannot read the log {_os.fspath(path)!r}: {msg}")


# -- reader ------------------------------------------------------------------------

cdef class LogReader:
    """Iterate over the records of a log written by :class:`LogWriter`.

    Yields each record's bytes in order (record ``i`` is sequence number
    ``i``), reading the file as it was when opened. It stops at the first
    record that is cut short or fails its checksum: that point and everything
    after it are the dropped tail, described by :attr:`tail_error` and
    counted by :attr:`truncated_bytes` once iteration has ended. A crash
    mid-append leaves exactly such a tail, and nothing after it was ever
    acknowledged as durable; damage in the middle of a log is treated the same
    way (reading stops there). A damaged or foreign file header raises
    :class:`~openheim.errors.CorruptStateError`, a newer format
    :class:`~openheim.errors.IncompatibleStateError`, an OS failure
    :class:`~openheim.errors.StorageError`.
    """

    cdef oh_log_reader r
    cdef bint _live
    cdef readonly object path

    def __cinit__(self, path):
        cdef bytes bpath = _c_path(path)
        cdef const char *cpath = bpath
        cdef oh_io_error e
        cdef int rc
        self.path = path
        with nogil:
            rc = oh_logr_open(&self.r, cpath, &e)
        if rc == OH_IO:
            _raise_io(&e, "LogReader", path)
        if rc != OH_OK:
            _raise_log_header(rc, self.r.tail, self.r.size, self.r.version, path)
        self._live = True

    def __dealloc__(self):
        if self._live:
            oh_logr_release(&self.r)

    def __iter__(self):
        return self

    def __next__(self):
        cdef const uint8_t *p = NULL
        cdef size_t n = 0
        cdef oh_io_error e
        cdef int rc
        if not self._live:
            raise StopIteration
        while True:
            rc = oh_logr_next(&self.r, &p, &n)
            if rc == OH_OK:
                return PyBytes_FromStringAndSize(<const char *>p, <Py_ssize_t>n)
            if rc == OH_EMPTY:
                with nogil:
                    rc = oh_logr_fill(&self.r, &e)
                if rc == OH_IO:
                    _raise_io(&e, "LogReader", self.path)
                if rc != OH_OK:
                    _raise_status(rc, "cannot buffer the next log record")
                continue
            self.close()
            raise StopIteration

    def close(self):
        """Release the file; iteration then ends. Idempotent."""
        if self._live:
            self._live = False
            oh_logr_release(&self.r)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def records(self):
        """Records read so far."""
        return self.r.count

    @property
    def valid_length(self):
        """Bytes of the file verified so far: the header and every record read."""
        return self.r.valid

    @property
    def done(self):
        """True once the end of the valid log has been reached."""
        return self.r.done != 0

    @property
    def truncated_bytes(self):
        """Bytes after the last valid record (the dropped tail); 0 until the end."""
        if not self.r.done:
            return 0
        return self.r.size - self.r.valid if self.r.size > self.r.valid else 0

    @property
    def tail_error(self):
        """Why reading stopped before the end of the file, or None."""
        if not self.r.done or self.r.tail == OH_LOG_CLEAN:
            return None
        return _log_tail_message(self.r.tail, self.r.tail_at, self.r.tail_len,
                                 self.r.size, self.r.version)


def read_log(path):
    """Every valid record of the log at ``path``, as a list of bytes.

    Stops at a torn or damaged tail like :class:`LogReader` (use the reader
    to learn how many bytes were dropped).
    """
    with LogReader(path) as reader:
        return list(reader)


# -- asyncio glue ----------------------------------------------------------------------

cdef class _LogLoopHook:
    """One event loop's view of a LogWriter: waiters parked on that loop.

    The flusher pokes `cfd` (owned by the C writer) after every batch; the
    loop watches `rfd` (the same eventfd, or the read end of a pipe) and
    resolves the futures whose records are now durable. Touched only on the
    loop's thread, with the GIL.
    """
    cdef LogWriter writer
    cdef object loop
    cdef int rfd
    cdef int cfd
    cdef bint attached
    cdef object waiters   # deque of (seq, future), seq ascending
    cdef list room        # futures waiting for buffer room

    def __dealloc__(self):
        if self.attached:
            # Only reached once the loop has dropped its reader (it holds us).
            _os.close(self.rfd)

    cdef object park(self, object seq):
        fut = self.loop.create_future()
        self.waiters.append((seq, fut))
        return fut

    cdef object park_room(self):
        fut = self.loop.create_future()
        self.room.append(fut)
        return fut

    def _on_ready(self):
        cdef char buf[64]
        while _c_read(self.rfd, buf, sizeof(buf)) > 0:
            pass
        self.dispatch()

    cdef int dispatch(self) except -1:
        cdef LogWriter w = self.writer
        cdef oh_io_error e
        cdef object durable
        if w is None or w._w == NULL:
            return 0
        durable = oh_logw_durable(w._w)
        waiters = self.waiters
        while waiters:
            seq, fut = waiters[0]
            if seq >= durable:
                break
            waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        if self.room:
            room, self.room = self.room, []
            for fut in room:
                if not fut.done():
                    fut.set_result(None)
        if waiters and oh_logw_error(w._w, &e) == OH_IO:
            while waiters:
                seq, fut = waiters.popleft()
                if not fut.done():
                    fut.set_exception(w._failure(&e))
        return 0

    def _finish(self):
        """On the loop's thread after the writer closed: settle, then detach."""
        self.dispatch()
        self.detach()

    cdef int detach(self) except -1:
        if not self.attached:
            return 0
        self.attached = False
        if self.writer is not None and self.writer._w != NULL:
            oh_logw_remove_notify(self.writer._w, self.cfd)
        if not self.loop.is_closed():
            try:
                self.loop.remove_reader(self.rfd)
            except Exception:
                pass
        _os.close(self.rfd)
        return 0


# -- writer -----------------------------------------------------------------------------

cdef class LogWriter:
    """Append records to a log file, many appends per fsync (group commit).

    ``append`` blocks (GIL released) until the record is durable and returns
    its sequence number; ``append_nowait`` returns the number at once and
    ``wait_durable(seq)`` / ``flush()`` wait later; ``await append_async``
    does the same on an event loop, so thousands of coroutines share a few
    fsyncs. One C flusher thread per log writes everything buffered with one
    ``pwrite`` and one ``fdatasync``; records arriving meanwhile go in the
    next batch. ``group_window`` (seconds) makes it wait that long for more
    records before each batch; the default 0 relies on that natural grouping.
    ``sync=False`` skips the per-batch fsync ("durable" then means "handed to
    the OS"), but :meth:`close` still fsyncs.

    Opening an existing log scans it, and a torn or damaged tail (see
    :class:`LogReader`) is cut off before appending (``repaired_bytes`` says
    how much) unless ``repair=False``, which raises CorruptStateError instead.
    The file is locked: a second writer on the same log raises StorageError.
    If a write or fsync fails the log stops for good: waiting and later calls
    raise StorageError. ``max_buffer`` bytes may wait to be written before
    appends wait for room.
    """

    cdef oh_log_writer *_w
    cdef readonly object path
    cdef readonly bint sync
    cdef readonly object repaired_bytes
    cdef readonly object recovered_records
    cdef readonly object tail_error
    cdef dict _hooks
    cdef bint _shut  # close() has finished: no more event-loop hooks

    def __cinit__(self, path, *, bint sync=True, double group_window=0.0,
                  Py_ssize_t max_buffer=16 * 1024 * 1024, bint repair=True):
        cdef bytes bpath = _c_path(path)
        cdef const char *cpath = bpath
        cdef oh_log_options opt
        cdef oh_log_open_info info
        cdef oh_io_error e
        cdef int rc
        if not (group_window >= 0.0 and group_window <= 10.0):
            raise _errors.ConfigError(
                f"group_window must be between 0 and 10 seconds, got {group_window}")
        if max_buffer <= 0:
            raise _errors.ConfigError(f"max_buffer must be positive, got {max_buffer}")
        self.path = path
        self.sync = sync
        self._hooks = {}
        opt.sync = sync
        opt.repair = repair
        opt.group_window = group_window
        opt.max_buffer = <size_t>max_buffer
        with nogil:
            rc = oh_logw_open(&self._w, cpath, &opt, &info, &e)
        if rc == OH_IO:
            _raise_io(&e, "LogWriter", path)
        if rc == OH_CORRUPT and info.tail != OH_LOG_BAD_MAGIC and info.tail != OH_LOG_BAD_HEADER_CRC:
            msg = _log_tail_message(info.tail, info.tail_at, info.tail_len,
                                    info.kept + info.dropped, info.version)
            raise _errors.CorruptStateError(
                f"the log {_os.fspath(path)!r} has a torn or damaged tail: {msg}. Opening it "
                f"with repair=True drops those {info.dropped} bytes (what a crash mid-append "
                "leaves behind); repair=False keeps the file untouched")
        if rc != OH_OK:
            _raise_log_header(rc, info.tail, info.kept + info.dropped, info.version, path)
        self.repaired_bytes = info.dropped
        self.recovered_records = info.records
        self.tail_error = None
        if info.dropped:
            self.tail_error = _log_tail_message(info.tail, info.tail_at, info.tail_len,
                                                info.kept + info.dropped, info.version)

    def __dealloc__(self):
        if self._w != NULL:
            with nogil:
                oh_logw_free(self._w)
            self._w = NULL

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<LogWriter {state} {_os.fspath(self.path)!r} next_seq={self.next_seq}>"

    # -- state ---------------------------------------------------------------

    @property
    def next_seq(self):
        """Sequence number the next record will get (= records in the log)."""
        return oh_logw_next_seq(self._w)

    @property
    def durable_seq(self):
        """Highest sequence number known durable, or -1 if none."""
        return <long long>oh_logw_durable(self._w) - 1

    @property
    def flush_count(self):
        """Write (+ fsync) batches so far: how many fsyncs the appends shared."""
        return oh_logw_flushes(self._w)

    @property
    def closed(self):
        return oh_logw_is_closed(self._w) != 0

    def _hold(self, bint on):
        """Tests: keep records buffered (True) until released (False)."""
        oh_logw_hold(self._w, on)

    # -- internals --------------------------------------------------------------

    cdef object _failure(self, oh_io_error *e):
        reason = strerror(e.err).decode("utf-8", "replace")
        op = e.op.decode("ascii") if e.op != NULL else "write"
        return _errors.StorageError(
            e.err, f"the log stopped: it could not {op} ({reason}); records not yet "
            "durable then were not written and it takes no more", self.path)

    cdef int _raise_failure(self) except -1:
        cdef oh_io_error e
        if oh_logw_error(self._w, &e) == OH_IO:
            raise self._failure(&e)
        raise _errors.LogClosed("the LogWriter is closed")

    cdef object _append_or_full(self, object record):
        """Buffer `record`; its sequence number, or None while the buffer is full."""
        cdef Py_buffer view
        cdef uint64_t seq = 0
        cdef int rc
        cdef Py_ssize_t n
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        n = view.len
        try:
            if n >= _NOGIL_BYTES:
                with nogil:
                    rc = oh_logw_append(self._w, view.buf, <size_t>n, &seq)
            else:
                rc = oh_logw_append(self._w, view.buf, <size_t>n, &seq)
        finally:
            PyBuffer_Release(&view)
        if rc == OH_OK:
            return seq
        if rc == OH_FULL:
            return None
        if rc == OH_CLOSED:
            raise _errors.LogClosed("cannot append: the LogWriter is closed")
        if rc == OH_INVALID:
            raise _errors.ConfigError(
                f"a log record is at most {OH_LOG_MAX_RECORD} bytes, got {n}")
        if rc == OH_IO:
            self._raise_failure()
        _raise_status(rc, f"cannot buffer a {n}-byte log record")

    cdef int _check_seq(self, object seq) except -1:
        if not (0 <= seq < oh_logw_next_seq(self._w)):
            raise _errors.ConfigError(
                f"no record {seq!r} has been appended (next_seq is {self.next_seq})")
        return 0

    cdef int _wait(self, uint64_t seq, object timeout) except -1:
        cdef double deadline, left, step
        cdef int rc
        if oh_logw_durable(self._w) > seq:
            return 0
        deadline = -1.0 if timeout is None else _monotonic() + float(timeout)
        while True:
            step = _SLICE
            if deadline >= 0:
                left = deadline - _monotonic()
                if left < step:
                    step = left if left > 0 else 0.0
            with nogil:
                rc = oh_logw_wait_durable(self._w, seq, step)
            if rc != OH_TIMEOUT or (deadline >= 0 and _monotonic() >= deadline):
                break
            PyErr_CheckSignals()
        if rc == OH_OK:
            return 0
        if rc == OH_TIMEOUT:
            raise _errors.LogTimeout(
                f"record {seq} was not durable within {timeout} s; it stays buffered "
                "and may still be written")
        return self._raise_failure()

    cdef _LogLoopHook _hook(self, object loop):
        """This loop's hook, registered on first use; None once close() is done."""
        cdef _LogLoopHook hook = self._hooks.get(loop)
        cdef _LogLoopHook old
        cdef int rc
        if hook is not None or self._shut:
            return hook
        stale = []
        for old in self._hooks.values():
            if old.loop.is_closed():  # loops that ended (asyncio.run) need no pokes
                stale.append(old)
        for old in stale:
            del self._hooks[old.loop]
            old.detach()
        from collections import deque
        hook = _LogLoopHook.__new__(_LogLoopHook)
        hook.writer = self
        hook.loop = loop
        hook.waiters = deque()
        hook.room = []
        if hasattr(_os, "eventfd"):
            hook.rfd = _os.eventfd(0, _os.EFD_NONBLOCK | _os.EFD_CLOEXEC)
            hook.cfd = _os.dup(hook.rfd)
        else:
            hook.rfd, hook.cfd = _os.pipe()
            _os.set_blocking(hook.rfd, False)
            _os.set_blocking(hook.cfd, False)
        # The calls above may let another thread run close(); from this check
        # until the hook is in self._hooks nothing can, so close() either
        # finished before (no hook) or will see and detach this one.
        if self._shut:
            _os.close(hook.rfd)
            _os.close(hook.cfd)
            return None
        rc = oh_logw_add_notify(self._w, hook.cfd)  # the writer owns cfd from here
        if rc != OH_OK:
            _os.close(hook.rfd)
            _os.close(hook.cfd)
            raise MemoryError()
        hook.attached = True
        self._hooks[loop] = hook
        try:
            loop.add_reader(hook.rfd, hook._on_ready)
        except BaseException:
            self._hooks.pop(loop, None)
            hook.detach()
            raise
        return hook

    cdef int _detach_hooks(self) except -1:
        cdef _LogLoopHook hook
        current = _current_loop_or_none()
        hooks, self._hooks = self._hooks, {}
        for hook in hooks.values():
            if hook.loop is current or hook.loop.is_closed():
                hook._finish()
                continue
            try:
                hook.loop.call_soon_threadsafe(hook._finish)
            except RuntimeError:  # closed meanwhile
                hook._finish()
        return 0

    # -- threads ------------------------------------------------------------------

    def append_nowait(self, record):
        """Buffer ``record`` (bytes-like) and return its sequence number at once.

        The record is durable once ``wait_durable(seq)`` or ``flush()``
        returns. Blocks (GIL released) only while ``max_buffer`` bytes are
        already waiting to be written.
        """
        cdef int rc
        while True:
            seq = self._append_or_full(record)
            if seq is not None:
                return seq
            with nogil:
                rc = oh_logw_wait_room(self._w, _SLICE)
            if rc == OH_CLOSED:
                raise _errors.LogClosed("cannot append: the LogWriter is closed")
            if rc == OH_IO:
                self._raise_failure()
            PyErr_CheckSignals()

    def append(self, record, timeout=None):
        """Append ``record`` and wait (GIL released) until it is durable.

        Returns its sequence number. ``timeout`` in seconds (None: no limit)
        raises LogTimeout; the record then stays queued.
        """
        seq = self.append_nowait(record)
        self._wait(seq, timeout)
        return seq

    def wait_durable(self, seq, timeout=None):
        """Wait (GIL released) until record ``seq`` and all before it are durable."""
        self._check_seq(seq)
        self._wait(seq, timeout)

    def flush(self, timeout=None):
        """Wait until every record appended so far is durable."""
        cdef uint64_t n = oh_logw_next_seq(self._w)
        if n > 0:
            self._wait(n - 1, timeout)

    def close(self):
        """Write and fsync what is buffered, stop the flusher, close the file.

        Blocks until done. Idempotent. Raises StorageError if the log failed.
        """
        cdef oh_io_error e
        cdef int rc
        with nogil:
            rc = oh_logw_close(self._w, &e)
        self._shut = True  # every record is now durable, or the log failed
        self._detach_hooks()
        if rc == OH_IO:
            raise self._failure(&e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- asyncio --------------------------------------------------------------------

    async def append_async(self, record):
        """Append ``record`` and wait on the running loop until it is durable.

        Returns its sequence number. Many concurrent calls share one fsync.
        Cancelling the wait does not withdraw the record.
        """
        cdef _LogLoopHook hook
        loop = _running_loop()
        while True:
            seq = self._append_or_full(record)
            if seq is not None:
                break
            hook = self._hook(loop)
            if hook is not None:  # None: closed, and the retry raises LogClosed
                await hook.park_room()
        await self._durable_on(loop, seq)
        return seq

    async def _durable_on(self, loop, seq):
        cdef _LogLoopHook hook
        if oh_logw_durable(self._w) > <uint64_t>seq:
            return
        # Registered before durability is checked again, so the poke for the
        # batch holding `seq` cannot be missed.
        hook = self._hook(loop)
        if oh_logw_durable(self._w) > <uint64_t>seq:
            return
        if hook is None:  # closed and still not durable: the log failed
            self._raise_failure()
        await hook.park(seq)

    async def wait_durable_async(self, seq):
        """Wait on the running loop until record ``seq`` is durable."""
        cdef oh_io_error e
        self._check_seq(seq)
        if oh_logw_durable(self._w) <= <uint64_t>seq and oh_logw_error(self._w, &e) == OH_IO:
            raise self._failure(&e)  # no batch will come to wake a waiter
        await self._durable_on(_running_loop(), seq)

    async def flush_async(self):
        """Wait on the running loop until every record appended so far is durable."""
        cdef uint64_t n = oh_logw_next_seq(self._w)
        if n > 0:
            await self.wait_durable_async(n - 1)

    async def aclose(self):
        """Wait for buffered records without blocking the loop, then :meth:`close`."""
        if not self.closed:
            await self.flush_async()
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
