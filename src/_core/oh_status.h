/* Status codes shared by every C file of the openheim core.
 *
 * C functions never raise: they return one of these codes and the Cython
 * wrapper maps it to an openheim.errors exception once it holds the GIL. */
#ifndef OH_STATUS_H
#define OH_STATUS_H

typedef enum {
    OH_OK = 0,
    OH_EMPTY = 1,        /* nothing to read right now */
    OH_FULL = 2,         /* no room to write right now */
    OH_CLOSED = 3,       /* closed (and, for readers, drained) */
    OH_TIMEOUT = 4,      /* a blocking wait ran out of time */
    OH_NOMEM = 5,        /* allocation failed */
    OH_INVALID = 6,      /* bad argument */
    OH_IO = 7,           /* an OS call failed; errno is kept by the caller */
    OH_CORRUPT = 8,      /* bytes fail a checksum or a structural check */
    OH_INCOMPATIBLE = 9, /* well-formed bytes of a format version we do not read */
    OH_TRUNCATED = 10    /* bytes end before the frame does */
} oh_status;

#endif
