/* Bounded multi-producer multi-consumer queue of opaque pointers.
 *
 * The queue never looks at what the pointers point to: the Cython wrapper
 * stores owned PyObject references and transfers ownership in and out, so no
 * Python object is touched here and every function may run without the GIL. */
#ifndef OH_MAILBOX_H
#define OH_MAILBOX_H

#include <stddef.h>
#include <pthread.h>
#include "oh_status.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    void **buf;
    size_t cap;       /* the bound (maxsize) */
    size_t alloc;     /* slots allocated: grows by doubling up to cap, so idle mailboxes stay small */
    size_t head;      /* index of the oldest item */
    size_t count;
    int closed;
    int wait_get;     /* threads blocked in oh_mb_get_wait */
    int wait_put;     /* threads blocked in oh_mb_put_wait */
} oh_mailbox;

int oh_mb_init(oh_mailbox *mb, size_t cap);
/* Frees the buffer; items still inside are handed to `drop` first. */
void oh_mb_destroy(oh_mailbox *mb, void (*drop)(void *item));

int oh_mb_try_put(oh_mailbox *mb, void *item);               /* OK FULL CLOSED */
int oh_mb_try_get(oh_mailbox *mb, void **out);               /* OK EMPTY CLOSED */
/* Moves up to `n` items into `out`; *got says how many. OK EMPTY CLOSED */
int oh_mb_try_get_many(oh_mailbox *mb, void **out, size_t n, size_t *got);
/* Blocking variants; timeout in seconds, < 0 waits forever. +TIMEOUT */
int oh_mb_put_wait(oh_mailbox *mb, void *item, double timeout);
int oh_mb_get_wait(oh_mailbox *mb, void **out, double timeout);
void oh_mb_close(oh_mailbox *mb);
size_t oh_mb_count(oh_mailbox *mb);
int oh_mb_is_closed(oh_mailbox *mb);
/* Threads blocked in oh_mb_get_wait / oh_mb_put_wait right now (introspection, tests). */
void oh_mb_waiters(oh_mailbox *mb, int *getters, int *putters);

#endif
