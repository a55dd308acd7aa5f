# C declarations of fileio.h (see fileio.c).
from oh_status cimport *

cdef extern from "fileio.h" nogil:
    ctypedef struct oh_io_error:
        int err
        const char *op
    int oh_atomic_write(const char *path, const void *data, size_t n, oh_io_error *e)
