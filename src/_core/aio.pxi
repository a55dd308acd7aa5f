# asyncio hooks shared by every part: the running loop, and waking parked waiters
# from any thread without losing a wake-up to a cancelled waiter.

# asyncio is imported on first use, so `import openheim` does not pay for it.
cdef object _get_running_loop = None
cdef object _get_running_loop_or_none = None


cdef object _running_loop():
    global _get_running_loop, _get_running_loop_or_none
    if _get_running_loop is None:
        import asyncio.events
        _get_running_loop = asyncio.events.get_running_loop
        _get_running_loop_or_none = asyncio.events._get_running_loop
    return _get_running_loop()


cdef object _current_loop_or_none():
    if _get_running_loop_or_none is None:
        return None
    return _get_running_loop_or_none()



from collections import deque as _deque


cdef class _WaiterQueue:
    """FIFO of asyncio futures parked on a condition (room, data, ...).

    Only touched with the GIL held. ``wake_one`` resolves the oldest live
    waiter: directly when called on that waiter's loop, else through
    ``call_soon_threadsafe``. A wake that reaches an already-cancelled future is
    passed on to the next waiter, so no wake-up is lost.
    """
    cdef object _q  # collections.deque, made on first park: idle queues cost nothing

    cdef inline bint has_waiters(self):
        return self._q is not None and len(self._q) > 0

    cdef object park(self):
        fut = _running_loop().create_future()
        if self._q is None:
            self._q = _deque()
        self._q.append(fut)
        return fut

    cdef void discard(self, object fut):
        if self._q is None:
            return
        try:
            self._q.remove(fut)
        except ValueError:
            pass

    cdef void wake_one(self):
        cdef object fut, loop
        if self._q is None:
            return
        while self._q:
            fut = self._q.popleft()
            if fut.done():
                continue
            loop = fut.get_loop()
            if _current_loop_or_none() is loop:
                fut.set_result(None)
                return
            try:
                loop.call_soon_threadsafe(self._resolve_or_pass, fut)
            except RuntimeError:  # that loop is closed: try the next waiter
                continue
            return

    cdef void wake_all(self):
        if self._q is None:
            return
        while self._q:
            self.wake_one()

    def _resolve_or_pass(self, fut):
        if fut.done():
            self.wake_one()
        else:
            fut.set_result(None)

    cdef void abandon(self, object fut):
        """Called when a parked waiter is cancelled or fails."""
        self.discard(fut)
        if fut.done() and not fut.cancelled():
            # It was woken but will not act on it: pass the wake-up on.
            self.wake_one()
