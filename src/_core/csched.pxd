# C declarations of oh_sched.h (see oh_sched.c; not "sched.h", which is a system header).
from libc.stdint cimport uint64_t
from oh_status cimport *

cdef extern from "oh_sched.h" nogil:
    ctypedef struct oh_readyq:
        pass
    int oh_rq_init(oh_readyq *q, size_t cap)
    void oh_rq_destroy(oh_readyq *q, void (*drop)(void *item))
    int oh_rq_push(oh_readyq *q, void *item)
    int oh_rq_pop(oh_readyq *q, void **out)
    int oh_rq_remove(oh_readyq *q, void *item)
    size_t oh_rq_count(const oh_readyq *q)

    ctypedef uint64_t oh_timer_id
    ctypedef struct oh_timerheap:
        pass
    int oh_th_init(oh_timerheap *h)
    void oh_th_destroy(oh_timerheap *h, void (*drop)(void *payload))
    int oh_th_push(oh_timerheap *h, double when, void *payload, oh_timer_id *id)
    int oh_th_peek(const oh_timerheap *h, double *when)
    int oh_th_pop_due(oh_timerheap *h, double now, uint64_t seq_limit, void **payload)
    int oh_th_cancel(oh_timerheap *h, oh_timer_id id, void **payload)
    int oh_th_pop_any(oh_timerheap *h, void **payload)
    size_t oh_th_count(const oh_timerheap *h)
    uint64_t oh_th_next_seq(const oh_timerheap *h)
