# TokenBuffer: the text of one LLM output stream, from a decoder to many
# readers (C side: tokbuf.c).
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_GET_LENGTH
from libc.stdint cimport int32_t, uint64_t, INT32_MIN, INT32_MAX
from libc.stdlib cimport malloc, free
from ctokbuf cimport *

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

cdef size_t _TB_SCRATCH_KEEP = 1 << 20  # readers keep a copy buffer up to this size


cdef inline const char *_piece_ptr(object piece, Py_ssize_t *n, list keep) except NULL:
    """Borrow the bytes of a token piece (bytes, str as UTF-8, or any buffer)."""
    if type(piece) is bytes:
        n[0] = PyBytes_GET_SIZE(piece)
        return PyBytes_AS_STRING(piece)
    if type(piece) is str:
        return PyUnicode_AsUTF8AndSize(piece, n)
    try:
        copy = bytes(memoryview(piece))
    except TypeError:
        raise TypeError(
            "a token piece must be bytes (the token's raw UTF-8 bytes), a bytes-like "
            f"object or str, not {type(piece).__name__}") from None
    keep.append(copy)
    n[0] = PyBytes_GET_SIZE(copy)
    return PyBytes_AS_STRING(copy)


cdef inline int32_t _token_id(object token_id) except? -1:
    cdef long long v = token_id
    if v < INT32_MIN or v > INT32_MAX:
        raise _errors.ConfigError(
            f"token id {v} does not fit in 32 bits; token ids are llama_token (int32) values")
    return <int32_t>v


cdef class TokenBuffer:
    """The text of one LLM output stream: a decoder appends tokens, readers read text.

    A decoder (a llama.cpp decode loop, in any thread) calls
    ``append(token_id, piece)`` with each token's raw bytes and stops when it
    returns False. Readers (``reader(offset)``) read *text*, from threads
    (``read``, GIL released while waiting) or asyncio (``await read_async()``,
    ``async for``), each at its own position.

    Text rules, exactly:

    - UTF-8: emitted text equals ``b"".join(pieces).decode("utf-8", "replace")``.
      Only a tail that can still become a valid character is held back;
      bytes that cannot become one turn into U+FFFD as soon as that is
      known (one per maximal invalid subpart, as Python does; codecs'
      incremental decoder waits longer in a few cases such as b"\\xed\\xa0",
      with the same final text). At the end a still incomplete tail becomes
      one U+FFFD. A read never splits a character.
    - Stop strings are matched on that decoded text, across pieces. The
      stream stops at the match that starts leftmost (ties: the shortest,
      then the first given); text before it is emitted, the match and all
      later input are dropped. Text that could still begin a stop string is
      held back until it cannot, so readers never see part of a stop string.
      When a match completes while a longer stop that began earlier could
      still complete, the stream waits (at most that stop's length) to decide.
    - Offsets count characters (code points, ``len()`` of the str) of the
      emitted text since the start of the stream, so ``reader(n)`` after a
      client has received ``n`` characters resumes exactly there
      (e.g. an SSE ``Last-Event-ID``).

    Memory: token ids are kept (4 bytes each; ``keep_tokens=False`` keeps only
    the count). Emitted text that every open reader has read (with no reader
    open: all of it) is discarded once more than ``retain_bytes`` of it is
    kept (default: ``max_bytes``, so all text up to that stays replayable); at most
    ``max_bytes`` UTF-8 bytes of text are kept even if a reader lags, and that
    reader then gets :class:`~openheim.errors.StreamDiscarded`. A reader that
    is closed or garbage collected stops pinning text. (The byte buffer
    behind the text may be up to about twice the retained size, since it
    compacts lazily.)

    Thread safety: every method may be called from any thread. An append is
    one short C critical section that creates no Python objects; blocking
    reads wait with the GIL released.
    """

    cdef oh_tokbuf tb
    cdef bint _ready
    cdef _WaiterQueue _waiters
    cdef readonly tuple stop
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t retain_bytes
    cdef object _reason
    cdef object _error

    def __cinit__(self, *, stop=(), Py_ssize_t max_bytes=16 << 20, retain_bytes=None,
                  bint keep_tokens=True):
        cdef Py_ssize_t retain, i, k
        cdef const char **ptrs = NULL
        cdef size_t *lens = NULL
        cdef int rc
        if isinstance(stop, str):
            stop = (stop,)
        stops = tuple(stop)
        encoded = []
        for s in stops:
            if not isinstance(s, str) or not s:
                raise _errors.ConfigError(
                    f"stop strings must be non-empty str, got {s!r}")
            try:
                encoded.append(s.encode("utf-8"))
            except UnicodeEncodeError:
                raise _errors.ConfigError(
                    f"stop string {s!r} is not valid Unicode (lone surrogate)") from None
        if max_bytes <= 0:
            raise _errors.ConfigError(
                f"TokenBuffer max_bytes must be a positive integer, got {max_bytes}")
        retain = max_bytes if retain_bytes is None else retain_bytes
        if retain < 0 or retain > max_bytes:
            raise _errors.ConfigError(
                f"TokenBuffer retain_bytes must be between 0 and max_bytes={max_bytes}, "
                f"got {retain_bytes}")
        k = len(encoded)
        if k:
            ptrs = <const char **>malloc(k * sizeof(char *))
            lens = <size_t *>malloc(k * sizeof(size_t))
            if ptrs == NULL or lens == NULL:
                free(ptrs)
                free(lens)
                raise MemoryError()
            for i in range(k):
                ptrs[i] = PyBytes_AS_STRING(encoded[i])
                lens[i] = <size_t>PyBytes_GET_SIZE(encoded[i])
        rc = oh_tb_init(&self.tb, ptrs, lens, <size_t>k, <size_t>max_bytes, <size_t>retain,
                        keep_tokens)
        free(ptrs)
        free(lens)
        if rc != OH_OK:
            _raise_status(rc, "cannot set up the token buffer")
        self._ready = True
        self.stop = stops
        self.max_bytes = max_bytes
        self.retain_bytes = retain
        self._waiters = _WaiterQueue()

    def __dealloc__(self):
        if self._ready:
            oh_tb_destroy(&self.tb)

    def __repr__(self):
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        state = "open" if info.end == OH_TB_OPEN else f"finished ({self.finish_reason})"
        return (f"<TokenBuffer {state} tokens={info.n_tokens} chars={info.emitted_chars} "
                f"readers={info.n_readers}>")

    # -- writing -----------------------------------------------------------------

    cdef inline void _notify(self, unsigned ev):
        # Wakes asyncio readers (threads blocked in read() were already
        # signalled by C). A native decode loop may call oh_tb_append on
        # `self.tb` without the GIL and call this later with the GIL, OR-ing
        # the events: a reader checks and parks under the GIL, so a notify
        # that follows the append cannot miss it.
        if ev and self._waiters.has_waiters():
            self._waiters.wake_all()

    def append(self, token_id, piece):
        """Append one token: its id and its raw bytes. Returns False once the stream ended.

        ``piece`` is bytes (str is taken as its UTF-8). False means a stop
        string matched (now or before) or the stream was finished: the decoder
        should stop. Appends after the end are ignored and not counted.
        """
        cdef Py_ssize_t n
        cdef const char *p
        cdef unsigned ev = 0
        cdef int rc
        cdef int32_t tid = _token_id(token_id)
        cdef list keep = None  # owns a copied piece until the C call is done
        if type(piece) is bytes:
            n = PyBytes_GET_SIZE(piece)
            p = PyBytes_AS_STRING(piece)
        else:
            keep = []
            p = _piece_ptr(piece, &n, keep)
        rc = oh_tb_append(&self.tb, tid, p, <size_t>n, &ev)
        self._notify(ev)
        if rc == OH_OK:
            return True
        if rc == OH_CLOSED:
            return False
        _raise_status(rc, "cannot grow the token buffer")

    def append_many(self, token_ids, pieces):
        """Append several tokens under one lock; same result as appending each in turn.

        Returns False once the stream ended (tokens after the end are ignored).
        """
        cdef list ids = token_ids if type(token_ids) is list else list(token_ids)
        cdef list ps = pieces if type(pieces) is list else list(pieces)
        cdef Py_ssize_t n = len(ids), i, ln
        cdef int32_t *cids
        cdef const char **ptrs
        cdef size_t *lens
        cdef size_t taken = 0
        cdef unsigned ev = 0
        cdef int rc
        cdef list keep = []
        if len(ps) != n:
            raise _errors.ConfigError(
                f"append_many got {n} token ids but {len(ps)} pieces; pass one piece per id")
        if n == 0:
            return not self.finished
        cids = <int32_t *>malloc(n * sizeof(int32_t))
        ptrs = <const char **>malloc(n * sizeof(char *))
        lens = <size_t *>malloc(n * sizeof(size_t))
        try:
            if cids == NULL or ptrs == NULL or lens == NULL:
                raise MemoryError()
            for i in range(n):
                cids[i] = _token_id(ids[i])
                ptrs[i] = _piece_ptr(ps[i], &ln, keep)
                lens[i] = <size_t>ln
            rc = oh_tb_append_many(&self.tb, cids, ptrs, lens, <size_t>n, &taken, &ev)
        finally:
            free(cids)
            free(ptrs)
            free(lens)
        self._notify(ev)
        if rc == OH_OK:
            return True
        if rc == OH_CLOSED:
            return False
        _raise_status(rc, "cannot grow the token buffer")

    def finish(self, str reason="stop"):
        """End the stream normally; readers get the rest, then StreamClosed.

        ``reason`` becomes ``finish_reason`` (e.g. "stop", "length",
        "cancelled"), unless a stop string turns out to match now, which
        makes it "stop". A consumer may call this from any thread to make
        the decoder's next ``append`` return False. Returns False (and does
        nothing) if the stream had already ended.
        """
        cdef unsigned ev = 0
        cdef int rc = oh_tb_finish(&self.tb, 0, &ev)
        if rc != OH_OK:
            return False
        self._reason = reason
        self._notify(ev)
        return True

    def fail(self, error):
        """End the stream with an error: readers get the text so far, then it is raised.

        ``error`` is an exception instance (raised as is by every reader, like
        an asyncio Future's exception) or a message (raised as StreamFailed).
        Returns False (and does nothing) if the stream had already ended.
        """
        cdef unsigned ev = 0
        cdef int rc
        if isinstance(error, str):
            error = _errors.StreamFailed(error)
        elif not isinstance(error, BaseException):
            raise TypeError(
                f"fail() takes an exception instance or a message str, not {type(error).__name__}")
        rc = oh_tb_finish(&self.tb, 1, &ev)
        if rc != OH_OK:
            return False
        self._error = error  # no GIL release since the C call: readers see it set
        self._notify(ev)
        return True

    # -- state --------------------------------------------------------------------

    @property
    def finished(self):
        """True once the stream ended (finish, fail or a stop string)."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return info.end != OH_TB_OPEN

    @property
    def finish_reason(self):
        """None while open; "stop" after a stop string, "error" after fail(), else finish()'s reason."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        if info.end == OH_TB_OPEN:
            return None
        if info.end == OH_TB_FAILED:
            return "error"
        if info.end == OH_TB_STOPPED:
            return "stop"
        return self._reason

    @property
    def stop_matched(self):
        """The stop string that ended the stream, or None."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return None if info.stop_index < 0 else self.stop[info.stop_index]

    @property
    def error(self):
        """The exception given to fail(), or None."""
        return self._error

    @property
    def n_tokens(self):
        """Tokens accepted so far (appends after the end are not counted)."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return info.n_tokens

    @property
    def n_chars(self):
        """Characters emitted so far: the offset just past the end of the text."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return info.emitted_chars

    @property
    def retained_offset(self):
        """The oldest offset still kept: ``reader(offset)`` needs offset >= this."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return info.base_chars

    @property
    def n_readers(self):
        """Readers that are open (and so may pin unread text)."""
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        return info.n_readers

    def getvalue(self):
        """The retained emitted text (from ``retained_offset`` on), as one str."""
        cdef char *p = NULL
        cdef size_t n = 0
        cdef int rc = oh_tb_copy_text(&self.tb, &p, &n)
        if rc != OH_OK:
            _raise_status(rc, "cannot copy the token buffer's text")
        try:
            return PyUnicode_DecodeUTF8(p, <Py_ssize_t>n, NULL) if n else ""
        finally:
            free(p)

    def tokens(self):
        """The token ids accepted so far, as a list (empty when keep_tokens=False)."""
        cdef int32_t *p = NULL
        cdef size_t n = 0, i
        cdef int rc = oh_tb_copy_ids(&self.tb, &p, &n)
        if rc != OH_OK:
            _raise_status(rc, "cannot copy the token ids")
        try:
            return [p[i] for i in range(n)]
        finally:
            free(p)

    # -- readers ------------------------------------------------------------------

    def reader(self, offset=0):
        """A new reader starting at ``offset`` characters into the emitted text.

        Raises StreamDiscarded if that text was already discarded and
        ConfigError if it is past what was emitted so far.
        """
        cdef size_t slot = 0
        cdef oh_tb_info info
        cdef int rc
        cdef TokenReader r
        if offset < 0:
            raise _errors.ConfigError(f"a reader offset is a character count >= 0, got {offset}")
        rc = oh_tb_reader_open(&self.tb, <uint64_t>offset, &slot)
        if rc != OH_OK:
            oh_tb_get_info(&self.tb, &info)
            if rc == OH_TRUNCATED:
                raise _errors.StreamDiscarded(
                    f"offset {offset} of this token stream was discarded; the oldest "
                    f"retained offset is {info.base_chars}. Replay from there, or keep more "
                    f"text with a larger retain_bytes (now {self.retain_bytes}) / max_bytes "
                    f"(now {self.max_bytes}).")
            if rc == OH_INVALID:
                raise _errors.ConfigError(
                    f"offset {offset} is past the end of this token stream, which has "
                    f"emitted {info.emitted_chars} characters so far")
            _raise_status(rc, "cannot open a token buffer reader")
        r = TokenReader.__new__(TokenReader)
        r._tb = self
        r._slot = slot
        r._open = True
        r._chars = <uint64_t>offset
        return r

    cdef int _raise_end(self, uint64_t chars) except -1:
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        if info.end == OH_TB_FAILED:
            raise self._error if self._error is not None else _errors.StreamFailed(
                "the token stream failed")
        raise _errors.StreamClosed(
            f"the token stream has finished ({self.finish_reason}) and this reader "
            f"has read all {chars} characters")

    cdef int _raise_lagged(self, uint64_t chars) except -1:
        cdef oh_tb_info info
        oh_tb_get_info(&self.tb, &info)
        raise _errors.StreamDiscarded(
            f"this reader fell behind: text at offset {chars} was discarded before it was "
            f"read, because the token buffer keeps at most max_bytes={self.max_bytes} bytes "
            f"of text; the oldest retained offset is {info.base_chars}. Read faster, raise "
            "max_bytes, or open a new reader at a retained offset.")


@cython.no_gc_clear  # __dealloc__ needs _tb to release the reader slot
@cython.final
cdef class TokenReader:
    """One reader of a TokenBuffer, at its own position (``offset``, in characters).

    Made by :meth:`TokenBuffer.reader`. Reads return the text emitted since
    the previous read (never a split character, never part of a stop
    string). At the end of the stream a read raises StreamClosed (or the
    error given to ``fail``), and iteration stops. Close it, use it as a
    context manager, or drop it: an open reader keeps its unread text in
    memory.
    """

    cdef TokenBuffer _tb
    cdef size_t _slot
    cdef bint _open
    cdef uint64_t _chars
    cdef char *_scratch
    cdef size_t _scap

    def __init__(self):
        raise TypeError("TokenReader objects are made by TokenBuffer.reader()")

    def __dealloc__(self):
        if self._open and self._tb is not None:
            oh_tb_reader_close(&self._tb.tb, self._slot)
        free(self._scratch)

    def __repr__(self):
        return f"<TokenReader offset={self._chars}{'' if self._open else ' closed'}>"

    @property
    def offset(self):
        """Characters of the stream before this reader's position."""
        return self._chars

    @property
    def buffer(self):
        return self._tb

    @property
    def closed(self):
        return not self._open

    def close(self):
        """Release this reader's position so its unread text can be discarded. Idempotent."""
        if self._open:
            self._open = False
            oh_tb_reader_close(&self._tb.tb, self._slot)
            self._tb._notify(OH_TB_EV_END)  # wake its own parked read, if any

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals (GIL held) ---------------------------------------------------

    cdef object _take(self):
        """New text, or None while the stream is open and has nothing new."""
        cdef size_t n = 0
        cdef int rc
        if not self._open:
            raise _errors.StreamClosed("this token stream reader is closed")
        rc = oh_tb_read(&self._tb.tb, self._slot, &self._scratch, &self._scap, &n)
        if rc == OH_OK:
            s = PyUnicode_DecodeUTF8(self._scratch, <Py_ssize_t>n, NULL)
            self._chars += <uint64_t>PyUnicode_GET_LENGTH(s)
            if self._scap > _TB_SCRATCH_KEEP:
                free(self._scratch)
                self._scratch = NULL
                self._scap = 0
            return s
        if rc == OH_EMPTY:
            return None
        if rc == OH_CLOSED:
            self._tb._raise_end(self._chars)
        if rc == OH_TRUNCATED:
            self._tb._raise_lagged(self._chars)
        _raise_status(rc, "cannot copy text out of the token buffer")

    # -- reading ------------------------------------------------------------------

    def read_nowait(self):
        """The text emitted since the last read, "" if none yet; raises at the end."""
        s = self._take()
        return "" if s is None else s

    def read(self, timeout=None):
        """Wait (GIL released) for new text and return it; raises at the end.

        ``timeout`` in seconds, None waits forever; StreamTimeout when it runs out.
        """
        cdef object s = self._take()
        cdef double deadline, left, step
        cdef int rc
        if s is not None:
            return s
        deadline = -1.0 if timeout is None else _monotonic() + float(timeout)
        while True:
            step = _SLICE
            if deadline >= 0:
                left = deadline - _monotonic()
                if left <= 0:
                    raise _errors.StreamTimeout(
                        f"no new text in the token stream within {timeout} s")
                if left < step:
                    step = left
            with nogil:
                rc = oh_tb_wait(&self._tb.tb, self._slot, step)
            s = self._take()
            if s is not None:
                return s
            PyErr_CheckSignals()

    async def read_async(self):
        """Wait on the running loop for new text and return it; raises at the end.

        Appends from other threads wake it through the loop.
        """
        cdef object s
        cdef _WaiterQueue waiters = self._tb._waiters
        while True:
            s = self._take()
            if s is not None:
                return s
            fut = waiters.park()
            try:
                await fut
            except BaseException:
                waiters.abandon(fut)
                raise

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.read()
        except _errors.StreamClosed:
            raise StopIteration from None

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.read_async()
        except _errors.StreamClosed:
            raise StopAsyncIteration from None
