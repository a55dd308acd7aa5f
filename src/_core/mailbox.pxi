# Mailbox: the bounded MPMC queue of Python objects (C side: mailbox.c).
from libc.stdlib cimport malloc, free
from cmailbox cimport *


cdef class _Done:
    """A finished awaitable with no result, shared by every fast-path put."""

    def __await__(self):
        return _EMPTY_ITER


cdef object _EMPTY_ITER = iter(())
cdef _Done _DONE = _Done()


cdef class Mailbox:
    """A bounded multi-producer, multi-consumer queue of Python objects.

    Works from asyncio (``await put`` / ``await get``; no Future is created
    when the operation can complete at once), from plain threads
    (``put_blocking`` / ``get_blocking``, which release the GIL while they
    wait) and across the two: threads may feed a coroutine and the other way
    round. After :meth:`close`, puts fail with :class:`MailboxClosed` and
    readers drain what is left, then get :class:`MailboxClosed`.
    """

    cdef oh_mailbox mb
    cdef readonly Py_ssize_t maxsize
    cdef _WaiterQueue _getters
    cdef _WaiterQueue _putters
    cdef bint _ready

    def __cinit__(self, Py_ssize_t maxsize=1024):
        if maxsize <= 0:
            raise _errors.ConfigError(
                f"Mailbox maxsize must be a positive integer, got {maxsize}")
        cdef int rc = oh_mb_init(&self.mb, <size_t>maxsize)
        if rc != OH_OK:
            _raise_status(rc, f"cannot allocate a mailbox of {maxsize} slots")
        self._ready = True
        self.maxsize = maxsize
        self._getters = _WaiterQueue()
        self._putters = _WaiterQueue()

    def __class_getitem__(cls, item):
        from types import GenericAlias
        return GenericAlias(cls, item)

    def __dealloc__(self):
        cdef void *p
        if not self._ready:
            return
        while oh_mb_try_get(&self.mb, &p) == OH_OK:
            _oh_decref(<PyObject *>p)
        oh_mb_destroy(&self.mb, NULL)

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<Mailbox {state} {self.qsize()}/{self.maxsize}>"

    # -- state ------------------------------------------------------------

    def qsize(self):
        """Number of items waiting to be read."""
        return oh_mb_count(&self.mb)

    def __len__(self):
        return oh_mb_count(&self.mb)

    def empty(self):
        return oh_mb_count(&self.mb) == 0

    def full(self):
        return oh_mb_count(&self.mb) == <size_t>self.maxsize

    @property
    def closed(self):
        """True once :meth:`close` has been called."""
        return oh_mb_is_closed(&self.mb) != 0

    def _blocked_threads(self):
        """(getters, putters): threads blocked in get_blocking / put_blocking right now.

        Counted by the C queue under its lock while a thread sleeps on its
        condition variable; for tests and diagnostics.
        """
        cdef int getters = 0, putters = 0
        oh_mb_waiters(&self.mb, &getters, &putters)
        return getters, putters

    def close(self):
        """Refuse new items; readers drain the rest, then get MailboxClosed.

        Wakes every waiter, in threads and on event loops. Idempotent.
        """
        oh_mb_close(&self.mb)
        self._getters.wake_all()
        self._putters.wake_all()

    # -- internals (GIL held) ----------------------------------------------

    cdef inline int _try_put(self, object item) except -1:
        cdef int rc
        _oh_incref(<PyObject *>item)
        rc = oh_mb_try_put(&self.mb, <void *>item)
        if rc != OH_OK:
            _oh_decref(<PyObject *>item)
            if rc == OH_NOMEM:
                raise MemoryError("cannot grow the mailbox's buffer")
        elif self._getters.has_waiters():
            self._getters.wake_one()
        return rc

    cdef inline int _try_get(self, void **p):
        """On OH_OK, *p holds an owned reference the caller must _steal."""
        cdef int rc = oh_mb_try_get(&self.mb, p)
        if rc == OH_OK:
            if self._putters.has_waiters():
                self._putters.wake_one()
        return rc

    cdef int _closed_error(self, bint reading) except -1:
        if reading:
            raise _errors.MailboxClosed(
                "the mailbox is closed and every item has been read")
        raise _errors.MailboxClosed("cannot put: the mailbox is closed")

    # -- non-blocking ----------------------------------------------------------

    def put_nowait(self, item):
        """Put ``item`` or raise MailboxFull / MailboxClosed at once."""
        cdef int rc = self._try_put(item)
        if rc == OH_OK:
            return
        if rc == OH_FULL:
            raise _errors.MailboxFull(
                f"the mailbox holds its maximum of {self.maxsize} items; "
                "use `await put()` or `put_blocking()` to wait for room")
        self._closed_error(False)

    def get_nowait(self):
        """Return the oldest item or raise MailboxEmpty / MailboxClosed at once."""
        cdef void *p = NULL
        cdef int rc = self._try_get(&p)
        if rc == OH_OK:
            return _steal(p)
        if rc == OH_EMPTY:
            raise _errors.MailboxEmpty(
                "the mailbox is empty; use `await get()` or `get_blocking()` to wait")
        self._closed_error(True)

    def get_many(self, Py_ssize_t n):
        """Take up to ``n`` items at once without waiting.

        Returns a list (empty if nothing is waiting). Raises MailboxClosed
        when the mailbox is closed and drained.
        """
        cdef size_t got = 0, i
        cdef void **tmp
        cdef int rc
        if n <= 0:
            return []
        if n > self.maxsize:
            n = self.maxsize
        tmp = <void **>malloc(<size_t>n * sizeof(void *))
        if tmp == NULL:
            raise MemoryError()
        try:
            rc = oh_mb_try_get_many(&self.mb, tmp, <size_t>n, &got)
            out = [_steal(tmp[i]) for i in range(got)]
        finally:
            free(tmp)
        if rc == OH_CLOSED:
            self._closed_error(True)
        if got and self._putters.has_waiters():
            for i in range(got):
                if not self._putters.has_waiters():
                    break
                self._putters.wake_one()
        return out

    # -- asyncio ----------------------------------------------------------------

    def put(self, item):
        """Put ``item``, waiting on the running loop while the mailbox is full.

        Returns an awaitable. When there is room the item is in the mailbox
        already and the awaitable is a shared, finished one (no coroutine, no
        Future); otherwise a coroutine that waits for room.
        """
        cdef int rc = self._try_put(item)
        if rc == OH_OK:
            return _DONE
        if rc == OH_CLOSED:
            self._closed_error(False)
        return self._put_slow(item)

    async def _put_slow(self, item):
        cdef int rc
        while True:
            rc = self._try_put(item)
            if rc == OH_OK:
                return
            if rc == OH_CLOSED:
                self._closed_error(False)
            fut = self._putters.park()
            try:
                await fut
            except BaseException:
                self._putters.abandon(fut)
                raise

    async def get(self):
        """Return the oldest item, waiting on the running loop while empty."""
        cdef void *p = NULL
        cdef int rc
        while True:
            rc = self._try_get(&p)
            if rc == OH_OK:
                return _steal(p)
            if rc == OH_CLOSED:
                self._closed_error(True)
            fut = self._getters.park()
            try:
                await fut
            except BaseException:
                self._getters.abandon(fut)
                raise

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.get()
        except _errors.MailboxClosed:
            raise StopAsyncIteration from None

    # -- threads ------------------------------------------------------------------

    def put_blocking(self, item, timeout=None):
        """Put ``item`` from a plain thread, waiting (GIL released) for room.

        ``timeout`` in seconds, ``None`` waits forever; raises MailboxTimeout
        when it runs out, MailboxClosed if the mailbox is or gets closed.
        """
        cdef int rc = self._try_put(item)
        cdef double deadline, left, step
        if rc == OH_FULL:
            deadline = -1.0 if timeout is None else _monotonic() + float(timeout)
            _oh_incref(<PyObject *>item)
            while True:
                step = _SLICE
                if deadline >= 0:
                    left = deadline - _monotonic()
                    if left < step:
                        step = left if left > 0 else 0.0
                with nogil:
                    rc = oh_mb_put_wait(&self.mb, <void *>item, step)
                if rc == OH_NOMEM:
                    _oh_decref(<PyObject *>item)
                    raise MemoryError("cannot grow the mailbox's buffer")
                if rc != OH_TIMEOUT or (deadline >= 0 and _monotonic() >= deadline):
                    break
                try:
                    PyErr_CheckSignals()
                except BaseException:
                    _oh_decref(<PyObject *>item)
                    raise
            if rc != OH_OK:
                _oh_decref(<PyObject *>item)
            elif self._getters.has_waiters():
                self._getters.wake_one()
        if rc == OH_OK:
            return
        if rc == OH_TIMEOUT:
            raise _errors.MailboxTimeout(
                f"no room in the mailbox after waiting {timeout} s")
        self._closed_error(False)

    def get_blocking(self, timeout=None):
        """Return the oldest item from a plain thread, waiting (GIL released).

        ``timeout`` in seconds, ``None`` waits forever; raises MailboxTimeout
        when it runs out, MailboxClosed once closed and drained.
        """
        cdef object item
        cdef void *p = NULL
        cdef int rc = self._try_get(&p)
        cdef double deadline, left, step
        if rc == OH_OK:
            return _steal(p)
        if rc == OH_EMPTY:
            deadline = -1.0 if timeout is None else _monotonic() + float(timeout)
            while True:
                step = _SLICE
                if deadline >= 0:
                    left = deadline - _monotonic()
                    if left < step:
                        step = left if left > 0 else 0.0
                with nogil:
                    rc = oh_mb_get_wait(&self.mb, &p, step)
                if rc != OH_TIMEOUT or (deadline >= 0 and _monotonic() >= deadline):
                    break
                PyErr_CheckSignals()
            if rc == OH_OK:
                item = _steal(p)
                if self._putters.has_waiters():
                    self._putters.wake_one()
                return item
        if rc == OH_TIMEOUT:
            raise _errors.MailboxTimeout(
                f"nothing arrived in the mailbox within {timeout} s")
        self._closed_error(True)
