# C declarations of mailbox.h (see mailbox.c).
from oh_status cimport *

cdef extern from "mailbox.h" nogil:
    ctypedef struct oh_mailbox:
        pass
    int oh_mb_init(oh_mailbox *mb, size_t cap)
    void oh_mb_destroy(oh_mailbox *mb, void (*drop)(void *item))
    int oh_mb_try_put(oh_mailbox *mb, void *item)
    int oh_mb_try_get(oh_mailbox *mb, void **out)
    int oh_mb_try_get_many(oh_mailbox *mb, void **out, size_t n, size_t *got)
    int oh_mb_put_wait(oh_mailbox *mb, void *item, double timeout)
    int oh_mb_get_wait(oh_mailbox *mb, void **out, double timeout)
    void oh_mb_close(oh_mailbox *mb)
    size_t oh_mb_count(oh_mailbox *mb)
    int oh_mb_is_closed(oh_mailbox *mb)
    void oh_mb_waiters(oh_mailbox *mb, int *getters, int *putters)
