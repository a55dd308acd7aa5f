# Status code -> openheim.errors mapping and owned-reference helpers.
from cpython.ref cimport PyObject
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from openheim import errors as _errors

cdef extern from "Python.h":
    void _oh_decref "Py_DECREF"(PyObject *o)
    void _oh_incref "Py_INCREF"(PyObject *o)
    int PyErr_CheckSignals() except -1

cdef inline object _steal(void *p):
    """Return the object behind an owned reference taken out of a C container."""
    cdef object obj = <object>p
    _oh_decref(<PyObject *>p)
    return obj


cdef int _raise_status(int rc, str what) except -1:
    if rc == OH_NOMEM:
        raise MemoryError(what)
    if rc == OH_INVALID:
        raise _errors.ConfigError(what)
    if rc == OH_CORRUPT or rc == OH_TRUNCATED:
        raise _errors.CorruptStateError(what)
    if rc == OH_INCOMPATIBLE:
        raise _errors.IncompatibleStateError(what)
    if rc == OH_IO:
        raise _errors.StorageError(what)
    raise _errors.OpenheimError(f"openheim core returned status {rc}: {what}")


cdef double _SLICE = 0.1  # blocking waits wake this often to let Ctrl-C through


def _set_wait_slice(double seconds):
    """Set how often blocking waits wake to check for signals; returns the old value.

    For tests that must tell a real wake-up from a periodic one (a long slice
    means a blocked thread wakes only when signalled).
    """
    global _SLICE
    if not seconds > 0:
        raise ValueError(f"the wait slice must be a positive number of seconds, got {seconds!r}")
    old = _SLICE
    _SLICE = seconds
    return old


cdef double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9

