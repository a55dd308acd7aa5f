# Scheduler: the actor dispatch loop (C side: oh_sched.c, the ready queue and timer heap).
#
# How it runs
# -----------
# An actor is a handler plus a mailbox, not an asyncio Task. Sending to an idle
# actor puts the message in its mailbox and pushes the actor once onto the C
# ready queue (its SCHEDULED flag keeps it from being queued twice). The first
# actor to become ready asks the loop for one drain pass (`call_soon`, or
# `call_soon_threadsafe` from another thread); every send until that pass ends
# rides on the same callback. A pass pops actors in FIFO order and runs up to
# `max_per_turn` messages of each, then sends it to the back of the queue if it
# has more; after `batch` handler calls the pass ends and schedules the next one
# behind whatever else the loop has ready, so tasks and I/O keep running.
#
# Async handlers (the choice): the first time a handler returns a coroutine,
# the actor becomes an async actor. Its messages are then handled by one
# asyncio Task per *busy period*: the task awaits each handler coroutine in
# turn, one message at a time, until the mailbox is empty, and then ends. A
# handler therefore always runs inside a real Task (asyncio.timeout,
# wait_for, current_task and cancellation behave as usual), the Task costs one
# allocation per burst of messages rather than per message, and an idle async
# actor owns no Task. The task yields to the loop every `max_per_turn`
# messages so a handler that never suspends cannot hold the loop.
#
# Idle actors give their mailbox back: when a turn leaves the mailbox empty
# (and nobody is waiting to put into it) the mailbox goes to a small pool and
# the actor keeps only a None, so 100k idle actors cost the Actor object each,
# whatever their maxsize. A lone message sent to an idle actor waits in the
# actor itself (its first-message slot) and needs no mailbox at all; only a
# second message arriving before the first is handled takes one from the pool
# (the first moves into it, ahead of the second).
#
# Cells: Scheduler.spawn makes an Actor around a handler; Scheduler.spawn_cell
# makes an instance of an ActorCell subclass that is its own handler (the
# runtime's ActorContext), so a live actor of the runtime is one object; a
# cell handles a plain message in C (ActorCell._dispatch).
#
# Threads: everything here runs with the GIL held, and no Python code runs
# between a put into a mailbox and the SCHEDULED check that follows it (nor
# between "the mailbox is empty" and clearing that flag), so a send from any
# thread is never lost between a pass and the next one.
from libc.stdint cimport uint64_t
from csched cimport *
cimport cython

cdef extern from "Python.h":
    # PYGEN_ERROR -1 (exception set), PYGEN_RETURN 0, PYGEN_NEXT 1; *out is a new reference.
    int _PyIter_Send "PyIter_Send"(object iter, object arg, PyObject **out) except -1

# Imported on first use, so `import openheim` pays for none of them.
cdef object _aio_mod = None
cdef object _sched_log = None
cdef object _is_coro = None
cdef object _CoroType = None
cdef object _Cancelled = None

cdef enum:
    _A_SCHEDULED = 1  # queued, being run by a pass, or owned by its busy-period Task
    _A_ASYNC = 2      # its handler returns coroutines: busy periods run in a Task
    _A_STOPPED = 4
    _A_FIRST = 8      # one message waits in _first (and the actor has no mailbox)

cdef enum:
    _T_PENDING = 0
    _T_FIRED = 1
    _T_CANCELLED = 2

# Empty mailboxes kept for reuse; beyond this they are freed.
cdef Py_ssize_t _POOL_MAX = 256


cdef int _sched_imports() except -1:
    global _aio_mod, _sched_log, _is_coro, _CoroType, _Cancelled
    if _aio_mod is not None:
        return 0
    import asyncio
    import logging
    import types
    _sched_log = logging.getLogger("openheim.scheduler")
    _is_coro = asyncio.iscoroutine
    _CoroType = types.CoroutineType
    _Cancelled = asyncio.CancelledError
    _aio_mod = asyncio
    try:
        _running_loop()  # also sets up the hook _current_loop_or_none() reads
    except RuntimeError:
        pass
    return 0


cdef inline bint _is_coroutine(object res):
    # Handlers mostly return None: test that before any type check.
    if res is None:
        return False
    return type(res) is _CoroType or _is_coro(res)


cdef object _stopped_error(_Cell a):
    return _errors.ActorStopped(
        f"{a!r} is stopped and accepts no more messages; spawn a new actor")


# What _next_message returns when nothing is waiting.
cdef object _NO_MSG = object()


cdef class _Cell:
    """What the scheduler keeps per actor: its mailbox, flags and handler.

    The first message sent to an idle actor waits in ``_first`` (no mailbox);
    a mailbox is taken from the pool only when a second one arrives before the
    first is handled, and the first moves into it, so order holds. Invariant:
    ``_A_FIRST`` set implies ``_mb is None``.
    """

    cdef Scheduler _sched
    cdef object _call         # handler(msg); None: an ActorCell, see ActorCell._dispatch
    cdef Mailbox _mb          # None while idle: see Scheduler._end_turn
    cdef object _first        # the one waiting message while _mb is None (_A_FIRST)
    cdef Py_ssize_t _max
    cdef int _flags
    cdef int _pins            # threads in put_blocking that hold a reference to _mb

    cdef Py_ssize_t _count(self):
        if self._flags & _A_FIRST:
            return 1
        return 0 if self._mb is None else <Py_ssize_t>oh_mb_count(&self._mb.mb)

    cdef int _send_failed(self, int rc) except -1:
        if rc == OH_FULL:
            raise _errors.MailboxFull(
                f"{self!r} already has {self._max} messages waiting (its maxsize); "
                "use `await actor.put(msg)` or, from a thread, `actor.put_blocking(msg)` "
                "to wait for room, or spawn it with a larger maxsize")
        raise _stopped_error(self)

    async def _put_waiting(self, msg):
        cdef int rc
        cdef Mailbox mb
        while True:
            rc = self._sched._offer(self, msg)
            if rc == OH_OK:
                return
            if rc != OH_FULL:
                self._send_failed(rc)
            # Park on this mailbox's putters; after the wake we retry through
            # the actor, since the mailbox may have been drained and pooled.
            mb = self._mb
            if mb is None:  # full with one message in _first (maxsize 1)
                mb = self._sched._attach(self)
            fut = mb._putters.park()
            try:
                await fut
            except BaseException:
                mb._putters.abandon(fut)
                raise

    cdef int _put_blocking(self, object msg, object timeout) except -1:
        cdef Scheduler s = self._sched
        cdef Mailbox mb
        if _current_loop_or_none() is s.loop:
            raise _errors.SchedulerError(
                "put_blocking() on the event loop thread would block the loop that "
                "handles the message; use `await actor.put(msg)` there")
        cdef int rc = s._offer(self, msg)
        if rc == OH_OK:
            return 0
        if rc != OH_FULL:
            self._send_failed(rc)
        mb = self._mb
        if mb is None:  # full with one message in _first (maxsize 1)
            mb = s._attach(self)
        self._pins += 1  # keeps _mb attached while this thread waits on it
        try:
            mb.put_blocking(msg, timeout)
        except _errors.MailboxClosed:
            raise _stopped_error(self) from None
        finally:
            self._pins -= 1
        if not (self._flags & (_A_SCHEDULED | _A_STOPPED)):
            s._make_ready(self)
        return 0


cdef class Actor(_Cell):
    """An actor: a handler run on one message at a time, in arrival order.

    Created by :meth:`Scheduler.spawn`. An idle actor owns no asyncio Task and,
    once its messages are handled, no mailbox either.
    """

    cdef readonly long long id    # unique per scheduler, in spawn order
    cdef object _name

    def __init__(self, *args, **kwargs):
        raise TypeError("actors are created with Scheduler.spawn(handler)")

    def __repr__(self):
        state = "stopped" if self._flags & _A_STOPPED else (
            "busy" if self in self._sched._running else "open")
        return f"<Actor {self.name} {state}>"

    @property
    def scheduler(self):
        return self._sched

    @property
    def maxsize(self):
        return self._max

    @property
    def name(self):
        return self._name if self._name is not None else f"actor-{self.id}"

    @property
    def stopped(self):
        return (self._flags & _A_STOPPED) != 0

    def qsize(self):
        """Messages waiting to be handled (not counting one being handled)."""
        return self._count()

    def send(self, msg):
        """Queue ``msg`` without waiting; callable from any thread.

        Raises MailboxFull when ``maxsize`` messages are already waiting and
        ActorStopped once the actor is stopped.
        """
        cdef int rc = self._sched._offer(self, msg)
        if rc != OH_OK:
            self._send_failed(rc)

    def put(self, msg):
        """Queue ``msg``, waiting on the running loop while the mailbox is full."""
        return self._put_waiting(msg)

    def put_blocking(self, msg, timeout=None):
        """Queue ``msg`` from a plain thread, waiting (GIL released) for room.

        ``timeout`` in seconds (None: forever); raises MailboxTimeout when it
        runs out and ActorStopped if the actor is or gets stopped.
        """
        self._put_blocking(msg, timeout)

    def stop(self):
        """Stop now: close the mailbox, drop queued messages, leave the ready queue.

        A handler already running finishes; nothing else is handled. Idempotent.
        """
        self._sched._stop_actor(self)


cdef class Envelope:
    """Base of a runtime's message wrappers (an ask with its reply slot, ...): an
    :class:`ActorCell` hands them to its ``_deliver``, never straight to its handler."""


cdef class ActorCell(_Cell):
    """An actor that is its own handler, with the fields a runtime keeps per actor.

    Made *and* registered by :meth:`Scheduler.spawn_cell` from a Python subclass,
    so a live actor is one object (no separate :class:`Actor`) whose fields are
    set without running any Python ``__init__``.

    Its messages: the common case is handled here in C, a plain message (not an
    :class:`Envelope`) to a cell with nothing special going on (``_skip``,
    ``_loading``, ``_kind`` and ``_traced`` unset): ``_handler(msg, cell)`` is
    called with ``_active`` set, and if it returns a coroutine, that runs up to
    its first wait; if it finished, that's all. The subclass defines the rest,
    each returning None or an awaitable for the scheduler to await in the
    actor's Task: ``_deliver(m)`` (any other message), ``_deliver_rest(coro,
    yielded, msg)`` (the coroutine waits on ``yielded``; with ``_eager`` unset it
    has not started and ``yielded`` is None) and ``_deliver_failed(msg, exc)``
    (the handler raised).

    The queue operations are underscored (``_send``, ``_put``, ``_qsize``,
    ``_stop``, ``_stopped``, ``_maxsize``) so that the subclass's public names
    are its own.
    """

    cdef public object id
    cdef public object runtime
    cdef public object state
    cdef public object obj
    cdef public object parent
    cdef public object _kind
    cdef public object _handler
    cdef public object _fut
    cdef public object _held
    cdef public bint _eager
    cdef public bint _active
    cdef public bint _loading
    cdef public bint _traced
    cdef public int _skip

    cdef object _dispatch(self, object m):
        """Handle one message (see the class docstring); None or an awaitable."""
        cdef PyObject *out = NULL
        cdef int rc
        if (self._skip or self._loading or self._traced or self._kind is not None
                or isinstance(m, Envelope)):
            return self._deliver(m)
        self._fut = None
        self._active = True
        try:
            res = self._handler(m, self)
            if type(res) is not _CoroType:
                self._active = False
                return None
            if not self._eager:
                return self._deliver_rest(res, None, m)
            rc = _PyIter_Send(res, None, &out)
        except Exception as exc:
            return self._deliver_failed(m, exc)
        if rc == 0:  # it finished without waiting
            _oh_decref(out)
            self._active = False
            return None
        return self._deliver_rest(res, _steal(out), m)

    def _deliver(self, m):
        raise NotImplementedError(f"{type(self).__name__} must define _deliver(msg)")

    def __init__(self, *args, **kwargs):
        raise TypeError("actor cells are created with Scheduler.spawn_cell(cls, ...)")

    @property
    def _stopped(self):
        return (self._flags & _A_STOPPED) != 0

    @property
    def _maxsize(self):
        return self._max

    def _qsize(self):
        """Messages waiting to be handled (not counting one being handled)."""
        return self._count()

    def _send(self, msg):
        """Queue ``msg`` without waiting (MailboxFull, ActorStopped)."""
        cdef int rc = self._sched._offer(self, msg)
        if rc != OH_OK:
            self._send_failed(rc)

    def _put(self, msg):
        """Queue ``msg``, waiting on the running loop while the mailbox is full."""
        return self._put_waiting(msg)

    def _stop(self):
        """Stop now: queued messages are dropped, nothing else is handled."""
        self._sched._stop_actor(self)


cdef class CellRef:
    """Base of a runtime's reference to an actor: ``runtime``, ``id`` and the live
    :class:`ActorCell` (``_cell``, None until resolved).

    ``send`` of a message to a live cell that is not stopped, traced (``_traced``)
    or holding sends (``_held``) is done here in C; in every other case, and when
    the mailbox is full, it calls the subclass's ``_send_slow(msg)``.
    """

    cdef public object runtime
    cdef public object id
    cdef public object _cell

    def __cinit__(self, runtime, actor_id, cell=None):
        self.runtime = runtime
        self.id = actor_id
        self._cell = cell

    def send(self, msg):
        """Queue ``msg`` for the actor without waiting (what a full mailbox does is
        the actor's overflow policy: raise MailboxFull, or drop the oldest message)."""
        cdef ActorCell c
        cell = self._cell
        if isinstance(cell, ActorCell):
            c = <ActorCell>cell
            if (not (c._flags & _A_STOPPED) and not c._traced and c._held is None
                    and c._sched._offer(c, msg) == OH_OK):
                return None
        return self._send_slow(msg)

    def _send_slow(self, msg):
        raise NotImplementedError(f"{type(self).__name__} must define _send_slow(msg)")


@cython.final
cdef class Suspended:
    """What :func:`step` returns when the coroutine waits: the value it yielded."""

    cdef readonly object value

    def __init__(self, *args, **kwargs):
        raise TypeError("Suspended is made by step()")


def step(coro):
    """Run ``coro`` up to its first wait (``coro.send(None)``) without StopIteration.

    Returns the coroutine's return value if it finished, or a :class:`Suspended`
    holding what it yielded (drive it on with ``coro.send`` / ``coro.throw``). What
    the coroutine raises propagates.
    """
    cdef PyObject *out = NULL
    cdef Suspended s
    if _PyIter_Send(coro, None, &out) == 0:  # PYGEN_RETURN
        return _steal(out)
    s = Suspended.__new__(Suspended)
    s.value = _steal(out)
    return s

cdef class Timer:
    """A pending :meth:`Scheduler.send_after` / :meth:`Scheduler.call_later`."""

    cdef Scheduler _sched
    cdef oh_timer_id _tid
    cdef readonly double when
    cdef object _target       # an Actor (send) or a callable (call)
    cdef object _arg          # the message, or the callable's args tuple
    cdef int _state
    cdef bint _is_send

    def __init__(self, *args, **kwargs):
        raise TypeError("timers are created with Scheduler.send_after / call_later")

    def __repr__(self):
        state = ("pending", "fired", "cancelled")[self._state]
        return f"<Timer {state} when={self.when:.6f}>"

    def cancel(self):
        """Cancel the timer if it has not fired. Returns True if it was pending."""
        cdef void *p
        if self._state != _T_PENDING:
            return False
        if oh_th_cancel(&self._sched._th, self._tid, &p) != OH_OK:
            return False
        self._state = _T_CANCELLED
        self._target = self._arg = None
        _oh_decref(<PyObject *>p)  # the heap's reference; `self` keeps us alive
        return True

    def cancelled(self):
        return self._state == _T_CANCELLED

    @property
    def pending(self):
        return self._state == _T_PENDING


cdef class Scheduler:
    """The actor dispatch loop of one asyncio event loop.

    ``batch``: handler calls per drain pass before yielding to the loop.
    ``max_per_turn``: messages one actor handles before the others get a turn.
    ``clock``: a callable returning seconds (default ``loop.time``); pass a
    virtual clock in tests and call :meth:`fire_timers` after advancing it.
    ``on_error(actor, msg, exc)``: called when a handler raises (default: log
    it); for a failing ``call_later`` callback, ``actor`` is None and ``msg``
    the callback. The scheduler keeps going either way.
    """

    cdef oh_readyq _rq
    cdef oh_timerheap _th
    cdef bint _init_done
    cdef readonly object loop
    cdef object _clock
    cdef object _on_error
    cdef object _drain_cb, _fire_cb, _arm_cb
    cdef object _armed        # the one asyncio TimerHandle, for the earliest deadline
    cdef double _armed_when
    cdef object _actors       # set of live actors (close() stops them all)
    cdef object _pool         # maxsize -> list of empty, open mailboxes
    cdef object _idle_waiters
    cdef object _running      # async actor -> its busy-period Task
    cdef Py_ssize_t _batch, _max_per_turn, _busy, _pooled, _attached
    cdef long long _next_id
    cdef unsigned long long _handled, _errors_seen, _dropped, _passes, _wakeups
    cdef unsigned long long _xwakeups, _tasks
    cdef readonly bint closed
    cdef bint _drain_pending, _arm_pending, _clock_is_loop, _closing

    def __cinit__(self):
        cdef int rc = oh_rq_init(&self._rq, 64)
        if rc != OH_OK:
            _raise_status(rc, "cannot allocate the scheduler's ready queue")
        oh_th_init(&self._th)
        self._init_done = True

    def __init__(self, *, Py_ssize_t batch=64, Py_ssize_t max_per_turn=16, loop=None,
                 clock=None, on_error=None):
        _sched_imports()
        if batch <= 0 or max_per_turn <= 0:
            raise _errors.ConfigError(
                f"batch and max_per_turn must be positive integers, got batch={batch}, "
                f"max_per_turn={max_per_turn}")
        if on_error is not None and not callable(on_error):
            raise _errors.ConfigError("on_error must be a callable (actor, msg, exc) or None")
        if loop is None:
            try:
                loop = _running_loop()
            except RuntimeError:
                raise _errors.ConfigError(
                    "Scheduler() needs an event loop: create it inside a coroutine "
                    "or pass loop=") from None
        self.loop = loop
        self._clock_is_loop = clock is None
        self._clock = loop.time if clock is None else clock
        self._on_error = on_error
        self._batch = batch
        self._max_per_turn = max_per_turn
        self._drain_cb = self._run_ready
        self._fire_cb = self._on_timer
        self._arm_cb = self._arm_now
        self._actors = set()
        self._pool = {}
        self._idle_waiters = []
        self._running = {}

    def __dealloc__(self):
        cdef void *p
        if not self._init_done:
            return
        while oh_rq_pop(&self._rq, &p) == OH_OK:
            _oh_decref(<PyObject *>p)
        while oh_th_pop_any(&self._th, &p) == OH_OK:
            _oh_decref(<PyObject *>p)
        oh_rq_destroy(&self._rq, NULL)
        oh_th_destroy(&self._th, NULL)

    def __repr__(self):
        state = "closed" if self.closed else ("closing" if self._closing else "open")
        return (f"<Scheduler {state} actors={len(self._actors)} "
                f"ready={oh_rq_count(&self._rq)} timers={oh_th_count(&self._th)}>")

    # -- actors ---------------------------------------------------------------

    def spawn(self, handler, *, Py_ssize_t maxsize=1024, name=None):
        """Register an actor running ``handler(msg)`` (a function or an ``async def``).

        ``maxsize`` bounds its queued messages. Costs no Task and, while idle,
        no mailbox. Callable from any thread.
        """
        cdef Actor a
        if self._closing:
            raise _errors.SchedulerClosed("cannot spawn: the scheduler is closed or closing")
        if not callable(handler):
            raise _errors.ConfigError(
                f"an actor's handler must be callable as handler(msg), got {handler!r}")
        if maxsize <= 0:
            raise _errors.ConfigError(f"maxsize must be a positive integer, got {maxsize}")
        a = Actor.__new__(Actor)
        a._sched = self
        a._call = handler
        a._max = maxsize
        a._name = name
        a.id = self._next_id
        self._next_id += 1
        self._actors.add(a)
        return a

    def spawn_cell(self, type cls, Py_ssize_t maxsize, actor_id, runtime, handler,
                   obj=None, kind=None, state=None, parent=None, bint eager=True,
                   bint loading=False):
        """Create and register an actor of ``cls``, an :class:`ActorCell` subclass;
        returns the cell.

        The other arguments fill the cell's fields of the same names (``id``,
        ``runtime``, ``_handler``, ``obj``, ``_kind``, ``state``, ``parent``,
        ``_eager``, ``_loading``). Costs one object: no Task and, while idle, no
        mailbox.
        """
        cdef ActorCell c
        if self._closing:
            raise _errors.SchedulerClosed("cannot spawn: the scheduler is closed or closing")
        if maxsize <= 0:
            raise _errors.ConfigError(f"maxsize must be a positive integer, got {maxsize}")
        c = ActorCell.__new__(cls)
        c._sched = self
        c._max = maxsize
        c.id = actor_id
        c.runtime = runtime
        c._handler = handler
        c.obj = obj
        c._kind = kind
        c.state = state
        c.parent = parent
        c._eager = eager
        c._loading = loading
        self._actors.add(c)
        return c

    def send(self, Actor actor not None, msg):
        """Same as ``actor.send(msg)``."""
        actor.send(msg)

    def stop(self, Actor actor not None):
        """Same as ``actor.stop()``."""
        self._stop_actor(actor)

    cdef int _offer(self, _Cell a, object msg) except -1:
        """Put ``msg`` in ``a``'s mailbox (or its first-message slot) and make ``a``
        ready. OK FULL CLOSED."""
        cdef Mailbox mb
        cdef int rc
        cdef int flags = a._flags
        if flags & _A_STOPPED:
            return OH_CLOSED
        mb = a._mb
        if mb is None:
            if not (flags & _A_FIRST):
                # No mailbox for a lone message: it waits in the cell itself.
                a._first = msg
                a._flags = flags | _A_FIRST
                if not (flags & _A_SCHEDULED):
                    self._make_ready(a)
                return OH_OK
            if a._max == 1:
                return OH_FULL
            mb = self._attach(a)  # may let another thread run: see _attach
        rc = mb._try_put(msg)
        # From the put to here no Python code runs, so neither the loop thread
        # nor another sender can slip in between: see the header comment.
        if rc == OH_OK and not (a._flags & _A_SCHEDULED):
            self._make_ready(a)
        return rc

    cdef Mailbox _attach(self, _Cell a):
        """Give ``a`` a mailbox, moving the message waiting in ``_first`` into it."""
        cdef Mailbox mb = self._take_mailbox(a._max)
        cdef Mailbox other
        cdef object first
        # Making a mailbox allocates, and an allocation may run the garbage
        # collector, whose callbacks and finalizers are Python code: another
        # sender thread may have attached a mailbox in that window (or the loop
        # stopped the actor). Use the one it attached; ours was never seen.
        other = a._mb
        if other is not None:
            self._attached -= 1
            return other
        if a._flags & _A_STOPPED:
            self._attached -= 1
            mb.close()  # its put fails as CLOSED, as a send to a stopped actor does
            return mb
        a._mb = mb
        if a._flags & _A_FIRST:
            first = a._first
            a._first = None
            a._flags &= ~_A_FIRST
            mb._try_put(first)  # an empty mailbox of maxsize >= 1 has room
        return mb

    cdef Mailbox _take_mailbox(self, Py_ssize_t maxsize):
        cdef list free = self._pool.get(maxsize)
        self._attached += 1
        if free:
            self._pooled -= 1
            return free.pop()
        return Mailbox(maxsize)

    cdef inline object _next_message(self, _Cell a):
        """Take ``a``'s next message, or return _NO_MSG."""
        cdef void *p
        cdef object msg
        cdef Mailbox mb
        if a._flags & _A_FIRST:
            msg = a._first
            a._first = None
            a._flags &= ~_A_FIRST
            return msg
        mb = a._mb
        if mb is None or mb._try_get(&p) != OH_OK:
            return _NO_MSG
        return _steal(p)

    cdef int _make_ready(self, _Cell a) except -1:
        cdef int rc = oh_rq_push(&self._rq, <void *>a)
        if rc != OH_OK:
            _raise_status(rc, "cannot grow the scheduler's ready queue")
        _oh_incref(<PyObject *>a)
        a._flags |= _A_SCHEDULED
        return self._wake()

    cdef int _wake(self) except -1:
        """Ask the loop for a drain pass unless one is already pending or running."""
        if self._drain_pending:
            return 0
        self._drain_pending = True
        try:
            if _current_loop_or_none() is self.loop:
                self.loop.call_soon(self._drain_cb)
            else:
                self._xwakeups += 1
                self.loop.call_soon_threadsafe(self._drain_cb)
        except RuntimeError as exc:  # the loop is closed
            self._drain_pending = False
            raise _errors.SchedulerClosed(
                f"the scheduler's event loop is closed ({exc}); close the scheduler "
                "before its loop") from exc
        self._wakeups += 1
        return 0

    cdef int _end_turn(self, _Cell a) except -1:
        """``a``'s turn is over: queue it again if it has messages, else let it idle."""
        cdef Mailbox mb = a._mb
        cdef list free
        a._flags &= ~_A_SCHEDULED
        if a._flags & _A_STOPPED:
            return 0
        if a._flags & _A_FIRST:
            return self._make_ready(a)
        if mb is None:
            return 0
        if oh_mb_count(&mb.mb) > 0:
            return self._make_ready(a)
        # Idle: hand the mailbox back unless someone still holds on to it.
        if a._pins == 0 and not mb._putters.has_waiters():
            a._mb = None
            self._attached -= 1
            if self._pooled < _POOL_MAX:
                free = self._pool.get(a._max)
                if free is None:
                    free = []
                    self._pool[a._max] = free
                free.append(mb)
                self._pooled += 1
        return 0

    cdef int _stop_actor(self, _Cell a) except -1:
        cdef Mailbox mb
        cdef void *p
        if a._flags & _A_STOPPED:
            return 0
        a._flags |= _A_STOPPED
        self._actors.discard(a)
        if not self._actors:  # a set keeps its table when emptied: clear() gives it back
            self._actors.clear()
        if (a._flags & _A_SCHEDULED) and oh_rq_remove(&self._rq, <void *>a) == OH_OK:
            a._flags &= ~_A_SCHEDULED
            _oh_decref(<PyObject *>a)  # the queue's reference; the caller holds another
        if a._flags & _A_FIRST:
            a._flags &= ~_A_FIRST
            a._first = None
            self._dropped += 1
        mb = a._mb
        if mb is not None:
            a._mb = None
            self._attached -= 1
            mb.close()  # wakes putters (coroutines and threads): they see ActorStopped
            while mb._try_get(&p) == OH_OK:
                self._dropped += 1
                _oh_decref(<PyObject *>p)
        # No idle notification here: a queued actor implies a pending pass,
        # which notifies when it ends (and this may run on another thread).
        return 0

    # -- the drain pass -----------------------------------------------------------

    def _run_ready(self):
        """One drain pass (a loop callback): run ready actors for up to `batch` calls."""
        cdef Py_ssize_t budget = self._batch
        cdef void *p
        cdef _Cell a
        self._passes += 1
        try:
            while budget > 0 and oh_rq_pop(&self._rq, &p) == OH_OK:
                a = <_Cell>p
                _oh_decref(<PyObject *>p)  # `a` holds its own reference now
                if a._flags & _A_STOPPED:
                    a._flags &= ~_A_SCHEDULED
                    continue
                if a._flags & _A_ASYNC:
                    self._start_busy(a, None, None)
                    budget -= 1
                else:
                    budget -= self._turn(
                        a, budget if budget < self._max_per_turn else self._max_per_turn)
        finally:
            # Checking the queue and clearing the flag happen with no Python
            # code in between, so a thread's send either is seen here or finds
            # the flag clear and asks for a new pass itself.
            if oh_rq_count(&self._rq) > 0:
                self._wakeups += 1
                self.loop.call_soon(self._drain_cb)  # behind what the loop has ready
            else:
                self._drain_pending = False
                if self._busy == 0:
                    self._notify_idle()

    cdef Py_ssize_t _turn(self, _Cell a, Py_ssize_t limit) except -1:
        """Run a sync actor on up to `limit` messages; returns how many it took."""
        cdef Py_ssize_t done = 0
        cdef object handler = a._call
        cdef object msg, res
        cdef bint handed = False
        try:
            while done < limit:
                msg = self._next_message(a)
                if msg is _NO_MSG:
                    break
                done += 1
                self._handled += 1
                try:
                    res = handler(msg) if handler is not None else (<ActorCell>a)._dispatch(msg)
                except Exception as exc:
                    self._report(a, msg, exc)
                    continue
                if _is_coroutine(res):
                    # From now on this actor's busy periods run in a Task, and
                    # this one starts with the coroutine in hand.
                    a._flags |= _A_ASYNC
                    handed = True
                    self._start_busy(a, res, msg)
                    return done
                if a._flags & _A_STOPPED:
                    break
        except BaseException:
            if not handed:  # KeyboardInterrupt & co.: keep the actor's messages
                self._end_turn(a)
            raise
        self._end_turn(a)
        return done

    cdef int _start_busy(self, _Cell a, object first, object first_msg) except -1:
        self._busy += 1
        self._tasks += 1
        try:
            task = self.loop.create_task(self._busy_period(a, first, first_msg))
        except BaseException:
            self._busy -= 1
            if first is not None:
                first.close()  # never awaited: close it rather than warn
            self._end_turn(a)
            raise
        if not task.done():  # an eager task factory may already have run it all
            self._running[a] = task
        return 0

    async def _busy_period(self, _Cell a, object first, object first_msg):
        """One busy period of an async actor: its messages, one at a time, in order."""
        cdef Py_ssize_t since_yield = 0
        cdef object msg = first_msg
        cdef object handler = a._call
        try:
            while True:
                if first is None:  # else the pass already called the handler for us
                    if since_yield >= self._max_per_turn:
                        since_yield = 0
                        await _aio_mod.sleep(0)  # let other tasks and actors run
                    if a._flags & _A_STOPPED:
                        break
                    msg = self._next_message(a)
                    if msg is _NO_MSG:
                        break
                    self._handled += 1
                since_yield += 1
                try:
                    if first is not None:
                        res, first = first, None
                    else:
                        res = handler(msg) if handler is not None else (<ActorCell>a)._dispatch(msg)
                    if _is_coroutine(res):
                        await res
                except Exception as exc:
                    self._report(a, msg, exc)
                except BaseException as exc:
                    if not self._handler_cancelled(exc):
                        raise
                    self._report(a, msg, exc)
                res = msg = None
        finally:
            self._running.pop(a, None)
            self._busy -= 1
            self._end_turn(a)
            if self._busy == 0 and not self._drain_pending:
                self._notify_idle()

    cdef bint _handler_cancelled(self, object exc):
        """True if a CancelledError came from the handler, not from cancelling us."""
        if not isinstance(exc, _Cancelled):
            return False
        task = _aio_mod.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
        return cancelling is not None and cancelling() == 0

    cdef void _report(self, object actor, object msg, object exc):
        self._errors_seen += 1
        try:
            if self._on_error is not None:
                self._on_error(actor, msg, exc)
                return
            _sched_log.error("%r failed on message %.200r", actor, msg, exc_info=exc)
        except Exception:
            _sched_log.exception("the scheduler's on_error hook raised; carrying on")

    # -- timers ---------------------------------------------------------------------

    def time(self):
        """The scheduler's clock, in seconds (timer deadlines use it)."""
        return float(self._clock())

    def send_after(self, _Cell actor not None, double delay, msg):
        """Send ``msg`` to ``actor`` after ``delay`` seconds; returns a :class:`Timer`.

        If the actor is stopped by then the message is dropped; if its mailbox is
        full, on_error gets MailboxFull.
        """
        if actor._flags & _A_STOPPED:
            raise _stopped_error(actor)
        return self._add_timer(delay, actor, msg, True)

    def call_later(self, double delay, callback, *args):
        """Call ``callback(*args)`` on the loop after ``delay`` seconds; returns a Timer."""
        if not callable(callback):
            raise _errors.ConfigError(f"call_later needs a callable, got {callback!r}")
        return self._add_timer(delay, callback, args, False)

    cdef Timer _add_timer(self, double delay, object target, object arg, bint is_send):
        cdef Timer t
        cdef int rc
        if self._closing:
            raise _errors.SchedulerClosed("cannot set a timer: the scheduler is closed or closing")
        if delay != delay:
            raise _errors.ConfigError("a timer's delay must be a number of seconds, got NaN")
        t = Timer.__new__(Timer)
        t._sched = self
        t._target = target
        t._arg = arg
        t._is_send = is_send
        # A negative delay means "now": deadlines never precede the clock, which
        # keeps timers added while firing out of the current round.
        t.when = float(self._clock()) + (delay if delay > 0 else 0.0)
        rc = oh_th_push(&self._th, t.when, <void *>t, &t._tid)
        if rc != OH_OK:
            _raise_status(rc, f"cannot add a timer at {t.when!r}")
        _oh_incref(<PyObject *>t)
        self._arm()
        return t

    def fire_timers(self):
        """Fire every timer whose deadline has passed on the clock; returns how many.

        The scheduler calls this from its loop timer; with a virtual clock, call
        it after advancing the clock. Timers fire in deadline order, ties in the
        order they were set; timers set while firing wait for the next call.
        """
        cdef uint64_t limit = oh_th_next_seq(&self._th)
        cdef double now = float(self._clock())
        cdef void *p
        cdef Timer t
        cdef Py_ssize_t n = 0
        cdef int rc
        try:
            while oh_th_pop_due(&self._th, now, limit, &p) == OH_OK:
                t = <Timer>p
                _oh_decref(<PyObject *>p)
                t._state = _T_FIRED
                target, arg = t._target, t._arg
                t._target = t._arg = None
                n += 1
                if t._is_send:
                    rc = self._offer(<_Cell>target, arg)
                    if rc == OH_FULL:
                        self._report(target, arg, _errors.MailboxFull(
                            f"{target!r} was full when a send_after timer fired"))
                    elif rc == OH_CLOSED:
                        self._dropped += 1
                else:
                    try:
                        target(*arg)
                    except Exception as exc:
                        self._report(None, target, exc)
        finally:
            self._arm()
        return n

    def _on_timer(self):
        self._armed = None
        self.fire_timers()

    def _arm_now(self):
        self._arm_pending = False
        self._arm()

    cdef int _arm(self) except -1:
        """Keep one loop timer armed for the earliest deadline (none if no timers)."""
        cdef double when
        if self.closed:
            return 0
        if _current_loop_or_none() is not self.loop:
            # Loop timers are not thread-safe: arm from the loop's own thread.
            if not self._arm_pending:
                self._arm_pending = True
                try:
                    self.loop.call_soon_threadsafe(self._arm_cb)
                except RuntimeError as exc:  # the loop is closed
                    self._arm_pending = False
                    raise _errors.SchedulerClosed(str(exc)) from exc
            return 0
        if oh_th_peek(&self._th, &when) != OH_OK:
            if self._armed is not None:
                self._armed.cancel()
                self._armed = None
            return 0
        if self._armed is not None:
            if self._armed_when <= when:
                return 0  # fires early enough; a stale early wake just re-arms
            self._armed.cancel()
        if self._clock_is_loop:
            self._armed = self.loop.call_at(when, self._fire_cb)
        else:
            self._armed = self.loop.call_later(max(0.0, when - float(self._clock())),
                                               self._fire_cb)
        self._armed_when = when
        return 0

    # -- idle, close, stats -----------------------------------------------------------

    cdef void _notify_idle(self):
        cdef list waiters = self._idle_waiters
        if not waiters:
            return
        self._idle_waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_idle(self):
        """Wait until no actor has messages queued or a handler running.

        Pending timers do not count: they are future work.
        """
        while oh_rq_count(&self._rq) or self._busy or self._drain_pending:
            fut = self.loop.create_future()
            self._idle_waiters.append(fut)
            await fut

    def close(self):
        """Stop now: stop every actor (queued messages are dropped), cancel every
        timer and cancel running async handlers. Idempotent; see also :meth:`aclose`.
        """
        cdef void *p
        cdef Actor a
        if self.closed:
            return
        if self.loop.is_running() and _current_loop_or_none() is not self.loop:
            raise _errors.SchedulerError(
                "close() must run on the scheduler's event loop thread; from another "
                "thread use loop.call_soon_threadsafe(scheduler.close)")
        self._closing = True
        self.closed = True
        self._cancel_timers()
        for obj in list(self._actors):
            self._stop_actor(<_Cell>obj)
        for task in list(self._running.values()):
            task.cancel()
        while oh_rq_pop(&self._rq, &p) == OH_OK:  # only stopped actors can be left
            (<_Cell>p)._flags &= ~_A_SCHEDULED
            _oh_decref(<PyObject *>p)
        self._pool.clear()
        self._pooled = 0
        self._notify_idle()

    async def aclose(self, timeout=None):
        """Close gracefully: refuse new actors and timers, cancel pending timers,
        let queued messages be handled (``timeout`` seconds at most, None: no
        limit), then :meth:`close` and wait for cancelled handlers to finish.
        """
        if not self._closing:
            self._closing = True
            self._cancel_timers()
            try:
                await _aio_mod.wait_for(self.wait_idle(), timeout)
            except _aio_mod.TimeoutError:
                pass
        tasks = list(self._running.values())
        self.close()
        if tasks:
            await _aio_mod.gather(*tasks, return_exceptions=True)

    cdef void _cancel_timers(self):
        cdef void *p
        cdef Timer t
        while oh_th_pop_any(&self._th, &p) == OH_OK:
            t = <Timer>p
            _oh_decref(<PyObject *>p)
            t._state = _T_CANCELLED
            t._target = t._arg = None
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None

    def stats(self):
        """Counters for monitoring and tests, a dict of ints (see SchedulerStats)."""
        return {
            "actors": len(self._actors),
            "ready": oh_rq_count(&self._rq),
            "busy": self._busy,
            "timers": oh_th_count(&self._th),
            "mailboxes": self._attached,
            "handled": self._handled,
            "errors": self._errors_seen,
            "dropped": self._dropped,
            "passes": self._passes,
            "wakeups": self._wakeups,
            "threadsafe_wakeups": self._xwakeups,
            "tasks": self._tasks,
        }
