# C declarations of oh_status.h: the codes every C function returns.
cdef extern from "oh_status.h" nogil:
    enum:
        OH_OK
        OH_EMPTY
        OH_FULL
        OH_CLOSED
        OH_TIMEOUT
        OH_NOMEM
        OH_INVALID
        OH_IO
        OH_CORRUPT
        OH_INCOMPATIBLE
        OH_TRUNCATED
